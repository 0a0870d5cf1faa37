"""Built-in simulators: exact Fisher matrices against simulations, and the two
implementations (JAX, NumPy) against each other.

Monte Carlo comparisons use fixed keys and a 5σ tolerance, with σ the standard
error estimated from the same simulations, so they are deterministic and fail only
for a real discrepancy of a few percent.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

from imnn.simulators import (
    AnalyticSimulator,
    GaussianMeanVariance,
    GaussianRandomField,
    GaussianVariance,
    power_law_fisher,
)

SIMULATORS = [GaussianMeanVariance(), GaussianVariance(), GaussianRandomField(N=8)]
IDS = [s.name for s in SIMULATORS]


def simulate_batch(sim, key, θ, n):
    keys = jax.random.split(key, n)
    return jax.jit(jax.vmap(sim.simulate, (0, None)))(keys, jnp.asarray(θ))


def mean_and_standard_error(samples):
    samples = np.asarray(samples)
    return samples.mean(0), samples.std(0, ddof=1) / np.sqrt(len(samples))


# --- interface -------------------------------------------------------------------

@pytest.mark.parametrize("sim", SIMULATORS, ids=IDS)
def test_interface(sim):
    assert isinstance(sim, AnalyticSimulator)
    assert sim.θ_fid.shape == (sim.n_params,) and sim.θ_fid.dtype == np.float64
    with pytest.raises(ValueError):
        sim.θ_fid[0] = 3.0  # read-only: the default cannot be changed behind a user's back
    d = simulate_batch(sim, jax.random.PRNGKey(0), sim.θ_fid, 3)
    assert d.shape == (3,) + sim.input_shape
    # vmapped + jitted simulations are the individual ones
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    np.testing.assert_allclose(d[1], sim.simulate(keys[1], sim.θ_fid), rtol=1e-5, atol=1e-6)
    F = sim.fisher()
    assert F.shape == (sim.n_params, sim.n_params) and F.dtype == np.float64
    np.testing.assert_allclose(F, F.T)


def test_gaussian_anchors():
    np.testing.assert_allclose(GaussianMeanVariance().fisher(), np.diag([10.0, 5.0]))
    assert np.linalg.det(GaussianMeanVariance().fisher()) == pytest.approx(50.0)
    np.testing.assert_allclose(GaussianVariance().fisher(), [[5.0]])
    np.testing.assert_allclose(GaussianMeanVariance(n=4).fisher([3.0, 2.0]), np.diag([2.0, 0.5]))
    np.testing.assert_allclose(GaussianVariance(n=4).fisher([2.0]), [[0.5]])


# --- JAX and NumPy give the same numbers -------------------------------------------

@pytest.mark.parametrize("sim", SIMULATORS, ids=IDS)
def test_simulate_matches_simulate_numpy(sim):
    θs = [sim.θ_fid, sim.θ_fid * 1.3 + 0.2]
    keys = jax.random.split(jax.random.PRNGKey(7), 3)
    with jax.enable_x64(True):
        jacobian = jax.jit(jax.jacfwd(sim.simulate, argnums=1))
        simulate = jax.jit(sim.simulate)
        for θ in θs:
            for key in keys:
                d_np, dd_np = sim.simulate_numpy(np.asarray(key), θ)
                assert d_np.dtype == dd_np.dtype == np.float64
                assert dd_np.shape == sim.input_shape + (sim.n_params,)
                d = simulate(key, jnp.asarray(θ))
                assert d.dtype == jnp.float64
                np.testing.assert_allclose(d, d_np, rtol=1e-12, atol=1e-12)
                np.testing.assert_allclose(jacobian(key, jnp.asarray(θ)), dd_np,
                                           rtol=1e-12, atol=1e-12)
    # without x64 the noise is the same draw, so only float32 rounding differs
    d32 = sim.simulate(keys[0], jnp.asarray(θs[1], jnp.float32))
    assert d32.dtype == jnp.float32
    np.testing.assert_allclose(d32, sim.simulate_numpy(keys[0], θs[1])[0], rtol=1e-5, atol=1e-5)


# --- Gaussian draws: the exact Fisher against simulations ------------------------------

def mean_variance_log_likelihood(θ, d):
    return jnp.sum(norm.logpdf(d, θ[0], jnp.sqrt(θ[1])))


def variance_log_likelihood(θ, d):
    return jnp.sum(norm.logpdf(d, 0.0, jnp.sqrt(θ[0])))


GAUSSIAN_CASES = [
    (GaussianMeanVariance(), mean_variance_log_likelihood, [0.0, 1.0]),
    (GaussianMeanVariance(n=6), mean_variance_log_likelihood, [0.5, 2.5]),
    (GaussianVariance(), variance_log_likelihood, [1.0]),
    (GaussianVariance(n=3), variance_log_likelihood, [0.4]),
]


@pytest.mark.parametrize("sim, log_likelihood, θ", GAUSSIAN_CASES)
def test_gaussian_fisher_is_score_covariance(sim, log_likelihood, θ):
    """F = E[s sᵀ] with s = ∇_θ ln L(d | θ) for d simulated at θ; E[s] = 0."""
    with jax.enable_x64(True):
        d = simulate_batch(sim, jax.random.PRNGKey(1), θ, 20_000)
        s = np.asarray(jax.vmap(jax.grad(log_likelihood), (None, 0))(jnp.asarray(θ), d))
    mean, error = mean_and_standard_error(s)
    assert np.all(np.abs(mean) < 5 * error)
    outer, error = mean_and_standard_error(s[:, :, None] * s[:, None, :])
    assert np.all(np.abs(outer - sim.fisher(θ)) < 5 * error), (outer, sim.fisher(θ))


@pytest.mark.parametrize("sim, θ", [(GaussianMeanVariance(), [0.0, 1.0]),
                                     (GaussianMeanVariance(n=6), [0.5, 2.5]),
                                     (GaussianVariance(), [1.0])])
def test_gaussian_fisher_from_sufficient_summaries(sim, θ):
    """The IMNN's own estimate F = dμ/dθᵀ C⁻¹ dμ/dθ is exact for sufficient statistics
    linear in the score: x = (Σd, Σd²), with ∂x/∂θ through the simulator (forward mode).
    Standard error from the spread of 20 independent sub-batch estimates."""
    def summaries(key, θ):
        d = sim.simulate(key, θ)
        x = jnp.stack([jnp.sum(d), jnp.sum(d ** 2)])
        return x if sim.n_params == 2 else x[1:]

    def gaussian_fisher(x, dx_dθ):
        dμ = dx_dθ.mean(0)
        return dμ.T @ np.linalg.solve(np.cov(x, rowvar=False, ddof=1).reshape(len(dμ), -1), dμ)

    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.PRNGKey(2), 20_000)
        θ = jnp.asarray(θ)
        x = np.asarray(jax.vmap(summaries, (0, None))(keys, θ))
        dx_dθ = np.asarray(jax.vmap(jax.jacfwd(summaries, 1), (0, None))(keys, θ))
    F = gaussian_fisher(x, dx_dθ)
    batches = [gaussian_fisher(xb, db) for xb, db in
               zip(np.split(x, 20), np.split(dx_dθ, 20))]
    error = np.std(batches, axis=0, ddof=1) / np.sqrt(20)
    assert np.all(np.abs(F - sim.fisher(θ)) <= 5 * error + 1e-12), (F, sim.fisher(θ))


# --- Gaussian random field ---------------------------------------------------------

def covariance_by_direct_sum(N, θ):
    """Σ_xy = N⁻² Σ_{k≠0} A k^−B cos(k·(x−y)), summed term by term (no FFT), k = 2πn/N."""
    A, B = θ
    n = np.fft.fftfreq(N) * N
    kx, ky = np.meshgrid(2 * np.pi * n / N, 2 * np.pi * n / N, indexing="ij")
    k = np.hypot(kx, ky)
    P = np.where(k > 0, A * np.where(k > 0, k, 1.0) ** -B, 0.0)
    x = np.stack(np.meshgrid(np.arange(N), np.arange(N), indexing="ij"), -1).reshape(-1, 2)
    r = x[:, None, :] - x[None, :, :]                                   # (N², N², 2)
    phase = r[..., 0, None, None] * kx + r[..., 1, None, None] * ky     # (N², N², N, N)
    return np.sum(P * np.cos(phase), axis=(-2, -1)) / N ** 2


def covariance_and_derivatives(N, θ, h=1e-5):
    """Σ(θ) and central finite differences ∂Σ/∂θ_i (error O(h²))."""
    θ = np.asarray(θ, float)
    dΣ = []
    for i in range(2):
        step = h * np.eye(2)[i]
        dΣ.append((covariance_by_direct_sum(N, θ + step)
                   - covariance_by_direct_sum(N, θ - step)) / (2 * h))
    return covariance_by_direct_sum(N, θ), dΣ


FIELD_θS = [(1.0, 0.5), (0.7, 1.8)]


@pytest.mark.parametrize("θ", FIELD_θS)
def test_field_fisher_matches_finite_difference_covariance(θ):
    """½ Tr(Σ⁺ ∂Σ Σ⁺ ∂Σ) from an independently built Σ, differentiated numerically,
    on the rank N² − 1 support (pseudo-inverse)."""
    N = 8
    Σ, dΣ = covariance_and_derivatives(N, θ)
    Σ_plus = np.linalg.pinv(Σ, rcond=1e-10, hermitian=True)
    assert np.linalg.matrix_rank(Σ, tol=1e-10 * np.abs(Σ).max()) == N * N - 1
    M = [Σ_plus @ dΣ_i for dΣ_i in dΣ]
    F_fd = 0.5 * np.array([[np.trace(Mi @ Mj) for Mj in M] for Mi in M])
    sim = GaussianRandomField(N=N)
    np.testing.assert_allclose(sim.fisher(θ, method="pixel"), F_fd, rtol=1e-7)
    np.testing.assert_allclose(sim.fisher(θ, method="modes"), F_fd, rtol=1e-7)
    # the simulator's samples have this covariance: E[d dᵀ] = Σ
    with jax.enable_x64(True):
        d = np.asarray(simulate_batch(sim, jax.random.PRNGKey(3), θ, 4000)).reshape(4000, -1)
    np.testing.assert_allclose(d.sum(1), 0.0, atol=1e-10)  # k = 0 amplitude is zero
    outer, error = mean_and_standard_error(d[:, :, None] * d[:, None, :])
    assert np.all(np.abs(outer - Σ) < 5 * error + 1e-12)
    # sharper, all elements at once: dᵀ Σ⁺ d ~ χ²(N² − 1), standard error sqrt(2·63/4000)
    mean, error = mean_and_standard_error(np.einsum("na,ab,nb->n", d, Σ_plus, d))
    assert abs(mean - (N * N - 1)) < 5 * error


@pytest.mark.parametrize("θ", FIELD_θS)
def test_field_fisher_is_score_covariance(θ):
    """F = E[s sᵀ], s_i = ½ dᵀ Σ⁺ ∂_iΣ Σ⁺ d − ½ Tr(Σ⁺ ∂_iΣ) the score of the exact
    Gaussian likelihood, for fields simulated at θ."""
    N, R = 8, 8000
    Σ, dΣ = covariance_and_derivatives(N, θ)
    Σ_plus = np.linalg.pinv(Σ, rcond=1e-10, hermitian=True)
    with jax.enable_x64(True):
        d = np.asarray(simulate_batch(GaussianRandomField(N=N), jax.random.PRNGKey(4), θ, R))
    d = d.reshape(R, -1)
    s = np.stack([0.5 * np.einsum("na,ab,nb->n", d, Σ_plus @ dΣ_i @ Σ_plus, d)
                  - 0.5 * np.trace(Σ_plus @ dΣ_i) for dΣ_i in dΣ], axis=1)
    mean, error = mean_and_standard_error(s)
    assert np.all(np.abs(mean) < 5 * error)
    outer, error = mean_and_standard_error(s[:, :, None] * s[:, None, :])
    F = GaussianRandomField(N=N).fisher(θ)
    assert np.all(np.abs(outer - F) < 5 * error), (outer, F)


@pytest.mark.parametrize("N, θ", [(2, (1.0, 0.5)), (3, (1.0, 0.5)), (8, (1.0, 0.5)),
                                   (8, (2.0, -1.0)), (16, (1.0, 0.5)), (16, (0.3, 2.5))])
def test_pixel_and_mode_counting_fisher_agree(N, θ):
    sim = GaussianRandomField(N=N)
    np.testing.assert_allclose(sim.fisher(θ, method="pixel"), sim.fisher(θ, method="modes"),
                               rtol=1e-10, atol=1e-10 * N * N)


def test_field_empirical_power_spectrum():
    """⟨|fft2(d)(k)|²⟩ / N² = P(k) in every |k| shell. Per grid point the ratio
    |fft2(d)|² / (N² P) has mean 1 and, counting ±k as one complex mode and the
    self-conjugate modes as real ones, the shell mean over R fields and m grid points
    has variance exactly 2 / (R m)."""
    N, R, θ = 16, 1000, (0.8, 1.2)
    sim = GaussianRandomField(N=N)
    d = simulate_batch(sim, jax.random.PRNGKey(5), θ, R)
    power = np.mean(np.abs(np.fft.fft2(np.asarray(d, np.float64))) ** 2, axis=0) / N ** 2

    def shell_z_scores(A, B):
        k = sim.k
        n2 = np.rint((k * N / (2 * np.pi)) ** 2).astype(int)  # integer |n|² labels shells
        z = []
        for shell in np.unique(n2[n2 > 0]):
            in_shell = n2 == shell
            ratio = np.mean(power[in_shell] / (A * k[in_shell] ** -B))
            z.append((ratio - 1) / np.sqrt(2 / (R * in_shell.sum())))
        return np.array(z)

    z = shell_z_scores(*θ)
    assert np.max(np.abs(z)) < 5 and np.mean(z ** 2) < 2, z
    assert np.mean(z ** 2) > 0.3  # the error model is not grossly too loose
    # the test can tell a wrong slope or amplitude
    assert np.max(np.abs(shell_z_scores(θ[0], θ[1] + 0.1))) > 10
    assert np.max(np.abs(shell_z_scores(θ[0] * 1.1, θ[1]))) > 5
    assert np.abs(np.fft.fft2(np.asarray(d))[:, 0, 0]).max() < 1e-3


def test_128_mode_counting_anchor():
    """The earlier library's det F ≈ 967 560.5 counts the (N/2 − 1)² wavevectors with
    1 ≤ n_x, n_y < N/2 once each; this simulator has all N² − 1 degrees of freedom."""
    sim = GaussianRandomField(N=128)
    quadrant = power_law_fisher(sim.k[1:64, 1:64], (1.0, 0.5))
    np.testing.assert_allclose(quadrant, [[1984.5, -1545.06379524], [-1545.06379524, 1690.49264978]])
    assert np.linalg.det(quadrant) == pytest.approx(967560.5321330631, rel=1e-10)
    F = sim.fisher()
    assert F[0, 0] == (128 ** 2 - 1) / 2
    assert np.linalg.det(F) == pytest.approx(17449217.885, rel=1e-9)
    # det F does not depend on the units of k
    assert np.linalg.det(power_law_fisher(7.0 * sim.k[sim.k > 0], (1.0, 0.5))) == pytest.approx(
        np.linalg.det(F), rel=1e-9)


# --- bad arguments -----------------------------------------------------------------

@pytest.mark.parametrize("make, argument", [
    (lambda: GaussianMeanVariance(n=0), "n"),
    (lambda: GaussianMeanVariance(n=2.5), "n"),
    (lambda: GaussianVariance(n=True), "n"),
    (lambda: GaussianRandomField(N=1), "N"),
    (lambda: GaussianMeanVariance(θ_fid=(0.0, -1.0)), "θ_fid"),
    (lambda: GaussianMeanVariance(θ_fid=(0.0,)), "θ_fid"),
    (lambda: GaussianVariance(θ_fid=(np.nan,)), "θ_fid"),
    (lambda: GaussianRandomField(θ_fid=(0.0, 0.5)), "θ_fid"),
    (lambda: GaussianMeanVariance().simulate(jax.random.PRNGKey(0), jnp.ones(3)), "θ"),
    (lambda: GaussianRandomField(N=4).simulate(jax.random.PRNGKey(0), jnp.ones((2, 1))), "θ"),
    (lambda: GaussianMeanVariance().simulate_numpy(jax.random.PRNGKey(0), (0.0, 0.0)), "θ"),
    (lambda: GaussianVariance().simulate_numpy(jax.random.PRNGKey(0), (1.0, 1.0)), "θ"),
    (lambda: GaussianRandomField(N=4).simulate_numpy(jax.random.PRNGKey(0), (-1.0, 0.5)), "θ"),
    (lambda: GaussianVariance().fisher((-2.0,)), "θ"),
    (lambda: GaussianRandomField(N=4).fisher((1.0, np.inf)), "θ"),
    (lambda: GaussianRandomField(N=4).fisher(method="fourier"), "method"),
    (lambda: GaussianRandomField(N=64).fisher(method="pixel"), "N"),
    (lambda: power_law_fisher(np.arange(4.0), (1.0, 0.5)), "k"),
    (lambda: power_law_fisher(np.ones(4), (0.0, 0.5)), "θ"),
])
def test_bad_arguments_raise_value_error_naming_them(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()
