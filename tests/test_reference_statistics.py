"""Reference Fisher statistics, loss and cotangents (docs/design/behaviour.md#statistics-and-loss),
checked by hand and by finite differences; NumPy and Numba backends share this code, so one
is tested."""
import numpy as np
import pytest

from imnn.reference.numba import NumbaBackend
from imnn.reference.numpy import NumpyBackend

B = NumpyBackend()


def random_summaries(seed, n_s=15, n_d=7, s=3, p=2):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_s, s)) @ (np.eye(s) + 0.3 * rng.normal(size=(s, s)))
    return x, rng.normal(size=(n_d, s, p)) + rng.normal(size=(1, s, p))


def test_fisher_statistics_match_direct_formulas():
    x, D = random_summaries(0, n_s=40, n_d=20)
    st = B.fisher_statistics(x, D)
    C = np.cov(x.T, ddof=1)
    M = D.mean(axis=0)
    np.testing.assert_allclose(st.μ, x.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(st.C, C, rtol=1e-12)
    np.testing.assert_allclose(st.invC, np.linalg.inv(C), rtol=1e-10)
    np.testing.assert_allclose(st.dμ_dθ, M, rtol=1e-13)
    F = M.T @ np.linalg.inv(C) @ M
    np.testing.assert_allclose(st.F, F, rtol=1e-10)
    np.testing.assert_allclose(st.invF, np.linalg.inv(F), rtol=1e-10)
    assert st.F.shape == (2, 2) and st.dμ_dθ.shape == (3, 2)


def test_fisher_of_sufficient_statistics_of_gaussian_mean_and_variance():
    # 10 draws of N(μ, σ²) at θ = (μ, σ²) = (0, 1); T = (Σd, Σd²) is sufficient, so the
    # Gaussian Fisher of T is the exact one, diag(10, 5)
    # (docs/design/behaviour.md#analytic-anchors).
    rng = np.random.default_rng(1)
    n, θ = 40_000, np.array([0.0, 1.0])
    z = rng.normal(size=(n, 10))
    d = θ[0] + np.sqrt(θ[1]) * z
    dd = np.stack([np.ones_like(z), z / (2 * np.sqrt(θ[1]))], axis=-1)   # ∂d/∂θ pathwise
    x = np.stack([d.sum(1), (d ** 2).sum(1)], axis=1)
    dx = np.stack([dd.sum(1), (2 * d[..., None] * dd).sum(1)], axis=1)   # (n, s, p)
    F = B.fisher_statistics(x, dx).F
    np.testing.assert_allclose(F, np.diag([10.0, 5.0]), rtol=0.03, atol=0.15)


@pytest.mark.parametrize("λ, α", [(10.0, 0.9531), (10.0, 240.68), (2.0, 0.3)])
def test_loss_parts(λ, α):
    x, D = random_summaries(2)
    parts = B.loss(x, D, λ, α)
    C = np.cov(x.T, ddof=1)
    invC = np.linalg.inv(C)
    M = D.mean(axis=0)
    I = np.eye(3)
    Λ2 = np.linalg.norm(C - I) + np.linalg.norm(invC - I)
    r = λ * Λ2 / (Λ2 + np.exp(-α * Λ2))                 # '+' in the denominator
    logdetF = np.linalg.slogdet(M.T @ invC @ M)[1]
    np.testing.assert_allclose(
        [parts.Λ2, parts.r, parts.logdetF, parts.logdetC, parts.logdetinvC, parts.Λ],
        [Λ2, r, logdetF, np.linalg.slogdet(C)[1], -np.linalg.slogdet(C)[1], -logdetF + r * Λ2],
        rtol=1e-10)
    assert np.ndim(parts.Λ) == 0 and parts.r > 0


@pytest.mark.parametrize("λ, α", [(10.0, 0.9531), (10.0, 240.68), (2.0, 0.3)])
def test_cotangents_match_finite_differences_of_the_loss(λ, α):
    x, D = random_summaries(3)
    parts, ct = B.loss_and_cotangents(x, D, λ, α)
    assert parts == B.loss(x, D, λ, α)
    assert ct.x.shape == x.shape and ct.dx_dθ.shape == D.shape
    h = 1e-6

    def fd(array, other, first):
        out = np.empty_like(array)
        for i in np.ndindex(array.shape):
            e = np.zeros_like(array)
            e[i] = h
            args = [(array + e, other), (array - e, other)]
            if not first:
                args = [(other, a) for a, _ in args]
            out[i] = (B.loss(*args[0], λ, α).Λ - B.loss(*args[1], λ, α).Λ) / (2 * h)
        return out

    for analytic, numeric in [(ct.x, fd(x, D, True)), (ct.dx_dθ, fd(D, x, False))]:
        assert np.linalg.norm(analytic - numeric) <= 1e-6 * np.linalg.norm(analytic)


def test_cotangents_of_x_are_centred():
    # Λ depends on x only through x − μ: the cotangents sum to zero over simulations.
    x, D = random_summaries(4)
    _, ct = B.loss_and_cotangents(x, D, 10.0, 0.95)
    np.testing.assert_allclose(ct.x.sum(axis=0), 0.0, atol=1e-12 * np.abs(ct.x).max())


def test_singular_fisher_gives_nan_not_a_finite_loss():
    x, D = random_summaries(5)
    D[:, :, 1] = 0.0                     # the second parameter leaves the summaries unchanged
    parts, ct = B.loss_and_cotangents(x, D, 10.0, 0.95)
    assert np.isnan(parts.logdetF) and np.isnan(parts.Λ)
    assert np.isfinite(parts.logdetC) and np.isfinite(parts.Λ2)
    assert np.all(np.isnan(ct.x)) and np.all(np.isnan(ct.dx_dθ))
    assert np.all(np.isnan(B.fisher_statistics(x, D).invF))


def test_singular_covariance_gives_nan():
    x, D = random_summaries(6)
    x[:, 2] = 1.5                        # a constant summary: C is singular
    parts = B.loss(x, D, 10.0, 0.95)
    assert np.isnan(parts.Λ) and np.isnan(parts.logdetF) and np.isnan(parts.logdetC)
    assert np.all(np.isnan(B.fisher_statistics(x, D).invC))


def test_numba_backend_shares_the_statistics():
    x, D = random_summaries(7)
    a, b = B.loss_and_cotangents(x, D, 10.0, 0.95), NumbaBackend().loss_and_cotangents(
        x, D, 10.0, 0.95)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1].x, b[1].x)
    np.testing.assert_array_equal(a[1].dx_dθ, b[1].dx_dθ)


def test_bad_shapes_raise():
    x, D = random_summaries(8)
    with pytest.raises(ValueError, match="dx_dθ"):
        B.loss(x, D[:, :2], 10.0, 0.95)
