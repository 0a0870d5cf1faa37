"""Likelihood-free inference (imnn.lfi) against exact answers.

The inference tests use the mean/variance problem (docs/design/behaviour.md#analytic-anchors):
d = μ + sqrt(σ²) z, 10 draws, where the posterior of the raw data is computable on a grid.
The compressor is a stand-in for a fitted IMNN; ``COMPRESSORS`` maps a name to a factory
``(θ_fid, n_draws) -> (compressor, F)`` so that an IMNN-based compressor can be added as one
more entry.
"""
import matplotlib

matplotlib.use("Agg")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.stats  # noqa: E402

from imnn.lfi import (  # noqa: E402
    ApproximateBayesianComputation,
    GaussianApproximation,
    PopulationMonteCarlo,
    Uniform,
    as_prior,
    histogram_marginals,
)

from conftest import SHARES_SIMULATOR_FIT  # noqa: E402

N_DRAWS = 10
θ_FID = np.array([0., 1.])
# A prior much wider than the posterior in μ: ABC-PMC only saves simulations when the
# prior volume is many times the posterior's. (With μ ∈ [-2, 2] the box is only ~4× the
# likelihood's area in Fisher units, and rejection is as cheap as PMC's broadened kernel.)
LOW, HIGH = np.array([-10., 0.2]), np.array([10., 3.])


def simulator(key, θ):
    return θ[0] + jnp.sqrt(θ[1]) * jax.random.normal(key, (N_DRAWS,))


def exact_score_compressor(θ_fid, n_draws):
    """Score compression θ̂ = θ_fid + F⁻¹ ∇ln L(θ_fid), exact for this Gaussian likelihood.

    θ̂ = (mean d, mean (d − μ_fid)²) is sufficient for (μ, σ²), so ABC with ϵ → 0 recovers
    the exact posterior.
    """
    μ_fid, v_fid = θ_fid
    F = np.diag([n_draws / v_fid, n_draws / (2 * v_fid ** 2)])
    invF = jnp.asarray(np.linalg.inv(F), jnp.float32)

    def compressor(d):
        δ = d - μ_fid
        score = jnp.stack([δ.sum(-1) / v_fid,
                           -n_draws / (2 * v_fid) + (δ ** 2).sum(-1) / (2 * v_fid ** 2)], -1)
        return θ_fid + score @ invF

    return compressor, F


def imnn_compressor(θ_fid, n_draws):
    """A fitted SimulatorIMNN (MLP 128-128, Adam 1e-3, λ = 10, ε = 0.1, 1000 fresh simulations
    per iteration; the fit test_anchors.py checks reaches det F ≥ 45 on fresh simulations,
    made once per process by conftest.fitted_simulator_imnn): its score-compressed estimate
    and its Fisher matrix, as a user would pass them to imnn.lfi."""
    from conftest import fitted_simulator_imnn
    assert n_draws == N_DRAWS and np.array_equal(θ_fid, θ_FID)  # the problem it was fitted to
    fitter = fitted_simulator_imnn()
    return fitter.compressor(), fitter.F


COMPRESSORS = {"exact score": exact_score_compressor, "imnn": imnn_compressor}


@pytest.fixture(scope="module", params=sorted(COMPRESSORS))
def compressor_and_F(request):
    return COMPRESSORS[request.param](θ_FID, N_DRAWS)


def exact_posterior_moments(d):
    """Mean and standard deviation of p(μ, σ² | d) ∝ Π N(d_i; μ, σ²) on the prior box
    (a 4001 × 1001 grid: spacings ≤ 1% of the posterior widths)."""
    μ, v = np.meshgrid(np.linspace(LOW[0], HIGH[0], 4001), np.linspace(LOW[1], HIGH[1], 1001),
                       indexing="ij")
    squares = np.sum((d - d.mean()) ** 2) + len(d) * (d.mean() - μ) ** 2  # Σ_i (d_i − μ)²
    log_likelihood = -len(d) / 2 * np.log(v) - squares / (2 * v)
    posterior = np.exp(log_likelihood - log_likelihood.max())
    posterior /= posterior.sum()
    mean = np.array([(posterior * μ).sum(), (posterior * v).sum()])
    std = np.sqrt([(posterior * (μ - mean[0]) ** 2).sum(), (posterior * (v - mean[1]) ** 2).sum()])
    return mean, std


def weighted_moments(θ, weights):
    weights = weights / weights.sum()
    mean = weights @ θ
    return mean, np.sqrt(weights @ (θ - mean) ** 2)


# --- inference on the mean/variance problem --------------------------------------

N_POINTS = 4000


class CountingSimulator:
    """The simulator, counting how often JAX traces it (a Python call happens per trace)."""

    def __init__(self):
        self.traces = 0

    def __call__(self, key, θ):
        self.traces += 1
        return simulator(key, θ)


# Tests of one inference run share a worker under `pytest -n 2 --dist loadgroup`, and with
# them test_anchors.py's test of the fitted SimulatorIMNN they use (conftest.py).
SHARES_INFERENCE = SHARES_SIMULATOR_FIT


@pytest.fixture(scope="module")
def inference(compressor_and_F):
    """One PMC run and one rejection-ABC run at PMC's final ϵ, for one target."""
    compressor, F = compressor_and_F
    target = np.asarray(simulator(jax.random.PRNGKey(3), jnp.asarray(θ_FID)))
    prior = Uniform(LOW, HIGH)
    pmc = PopulationMonteCarlo(target, prior, simulator, compressor, F=F)
    pmc(jax.random.PRNGKey(1), N_POINTS, 5 * N_POINTS, percentile=50, criterion=0.02,
        max_iterations=30)
    counting = CountingSimulator()
    abc = ApproximateBayesianComputation(target, prior, counting, compressor, F=F)
    traces_before_call = counting.traces
    abc(pmc.ϵ[0], jax.random.PRNGKey(2), 200_000, min_accepted=N_POINTS, max_iterations=20)
    abc.traces_in_call = counting.traces - traces_before_call
    pmc.compressor_F = np.asarray(F)  # for the tolerance of a non-sufficient compressor
    return pmc, abc, exact_posterior_moments(target)


@SHARES_INFERENCE
def test_abc_and_pmc_match_the_exact_posterior(inference):
    """Posterior means within 0.1σ and standard deviations within 10% of the exact ones.

    The tolerance is the sum of two error budgets, each with margin:
    (i) Monte Carlo: with effective sample sizes > 3000 (asserted) the standard error of a
        mean is < 0.02σ and of a standard deviation ≈ 0.02 relative (PMC's importance
        weights make the latter about twice the unweighted value; measured over 16 seeds,
        PMC and rejection ABC at the same ϵ then agree in both to within their errors);
    (ii) the ABC threshold: accepting a Fisher ball of radius ϵ widens the posterior by
        about ϵ²/(p+2) in Fisher units, where the posterior variance here is ≈ 1.5–1.8, so
        ϵ < 0.65 (asserted; this run reaches ≈ 0.56) inflates σ by < 3% and shifts the
        means by a few hundredths of σ (F is the Fisher matrix at θ_fid, not at the target).
    Measured here: mean errors ≤ 0.034σ and σ errors ≤ 4.4% (PMC), ≤ 0.018σ and ≤ 2.1%
    (ABC); 0.1σ and 10% are about three standard errors above the ϵ bias.
    """
    pmc, abc, (mean, std) = inference
    assert pmc.ϵ[0] < 0.65
    ess = 1 / np.sum(pmc.weights[0] ** 2)
    assert ess > 3000
    # (iii) A compressor that is not sufficient (a fitted IMNN keeps ~90 % of det F)
    # conditions on an estimate that differs from the optimal one by a random shift of
    # variance F_c⁻¹ − F⁻¹ (per parameter); allow three of its standard deviations.
    exact_invF = np.diag(np.linalg.inv(np.diag([N_DRAWS / θ_FID[1], N_DRAWS / (2 * θ_FID[1] ** 2)])))
    lost = np.sqrt(np.clip(np.diag(np.linalg.inv(pmc.compressor_F)) / exact_invF - 1, 0, None))
    for θ, weights in [(pmc.parameters[0], pmc.weights[0]),
                       (abc.accepted[0].parameters, np.ones(abc.n_accepted[0]))]:
        sample_mean, sample_std = weighted_moments(θ, weights)
        np.testing.assert_array_less(np.abs(sample_mean - mean), (0.1 + 3 * lost) * std)
        np.testing.assert_array_less(np.abs(sample_std / std - 1), 0.1)
    # the marginals are histograms of the same samples: their means agree to a bin width
    for method in (pmc, abc):
        for i, grid in enumerate(method.grid):
            marginal = method.marginals.one_d[i][0]
            marginal_mean = np.sum(grid * marginal) / np.sum(marginal)
            assert abs(marginal_mean - mean[i]) < 0.1 * std[i] + (grid[1] - grid[0])


@SHARES_INFERENCE
def test_pmc_needs_fewer_simulations_than_rejection_for_the_same_ϵ(inference):
    pmc, abc, _ = inference
    assert np.all(pmc.distances[0] <= pmc.ϵ[0])
    assert abc.n_accepted[0] >= N_POINTS
    # rejection's cost: the simulations up to its N-th acceptance (its batches' overshoot
    # excluded); PMC's: every simulation it ran, initial draws and abandoned round included
    rejection = np.flatnonzero(abc.distances[0] <= pmc.ϵ[0])[N_POINTS - 1] + 1
    assert pmc.n_simulations[0] == sum(r.n_simulations for r in pmc.history[0])
    assert pmc.n_simulations[0] < 0.5 * rejection
    ϵ = [r.ϵ for r in pmc.history[0] if r.completed]
    assert np.all(np.diff(ϵ) < 0)
    assert pmc.ϵ[0] == ϵ[-1]


@SHARES_INFERENCE
def test_abc_batches_are_traced_once(inference):
    pmc, abc, _ = inference
    assert abc.n_simulations > 200_000 and abc.traces_in_call == 1


class TruncatedNormal:
    """A non-flat prior in the Prior contract: independent normals N(0, scale²) cut to a box."""

    def __init__(self, scale, low, high):
        self.scale, self.low, self.high = jnp.asarray(scale), jnp.asarray(low), jnp.asarray(high)

    def sample(self, key, n):
        return self.scale * jax.random.truncated_normal(
            key, self.low / self.scale, self.high / self.scale, (n, self.low.shape[0]))

    def log_prob(self, θ):  # unnormalised: PMC only needs it up to a constant
        inside = jnp.all((θ >= self.low) & (θ <= self.high), axis=-1)
        return jnp.where(inside, -jnp.sum((θ / self.scale) ** 2, axis=-1) / 2, -jnp.inf)


def test_pmc_weights_keep_the_prior_when_everything_is_accepted():
    """With every proposal accepted, each weighted population must still be the prior.

    The kernel 2Σ broadens the particles (unweighted variance ~50% too large); the weights
    prior(θ) / Σ_j w_j K(θ | θ_j) must undo exactly that. The prior is not flat, so the
    weights differ and an error in them (e.g. an unweighted mixture in the denominator,
    which shifts the mean of θ_1 by ~16 standard errors) shows. Tolerances: 4 standard
    errors of the weighted mean and variance at the population's effective sample size.
    """
    n = 8000
    scale, low, high = np.array([0.4, 1.]), np.array([-1., 0.]), np.array([1., 3.])
    pmc = PopulationMonteCarlo(np.zeros(2), TruncatedNormal(scale, low, high),
                               lambda key, θ: θ, lambda d: d,
                               distance_measure=lambda x, target: jnp.zeros(x.shape[0]))
    pmc(jax.random.PRNGKey(0), n, n, max_iterations=3)
    assert len(pmc.history[0]) == 4 and all(r.acceptance_rate == 1 for r in pmc.history[0])
    θ, weights = pmc.parameters[0], pmc.weights[0]
    assert np.all((θ >= low) & (θ <= high))
    np.testing.assert_allclose(weights.sum(), 1, rtol=1e-5)
    exact = [scipy.stats.truncnorm(lo / σ, hi / σ, scale=σ) for σ, lo, hi in zip(scale, low, high)]
    variance = np.array([e.var() for e in exact])
    fourth = np.array([e.expect(lambda x, m=e.mean(): (x - m) ** 4) for e in exact])  # noqa: B008
    mean, std = weighted_moments(θ, weights)
    ess = 1 / np.sum(weights ** 2)
    np.testing.assert_array_less(np.abs(mean - [e.mean() for e in exact]),
                                 4 * np.sqrt(variance / ess))
    np.testing.assert_array_less(np.abs(std ** 2 - variance),
                                 4 * np.sqrt((fourth - variance ** 2) / ess))
    assert np.all(θ.var(0) > 1.3 * variance)  # the weights had something to correct


def test_several_targets_share_prior_draws_in_abc_and_get_their_own_pmc():
    compressor, F = exact_score_compressor(θ_FID, N_DRAWS)
    targets = np.stack([np.asarray(simulator(jax.random.PRNGKey(k), jnp.asarray(θ)))
                        for k, θ in enumerate([[-1., 1.], [1., 2.]])])
    abc = ApproximateBayesianComputation(targets, Uniform(LOW, HIGH), simulator, compressor,
                                         F=np.stack([F, 2 * F]), gridsize=(40, 30))
    accepted = abc([1., 1.5], jax.random.PRNGKey(0), 20000).accepted
    assert abc.distances.shape == (2, 20000) and len(accepted) == 2
    assert [a.parameters.shape[0] for a in accepted] == abc.n_accepted.tolist()
    assert all(np.all(a.distances <= ϵ) for a, ϵ in zip(accepted, [1., 1.5]))
    assert all(np.all(r.distances > ϵ) for r, ϵ in zip(abc.rejected, [1., 1.5]))
    assert abc.marginals.one_d[0].shape == (2, 40) and abc.marginals.two_d[0, 1].shape == (2, 40, 30)
    # each target's accepted μ sits around its own data mean
    for a, target in zip(accepted, targets):
        assert abs(a.parameters[:, 0].mean() - target.mean()) < 0.3
    # replace=True starts again; otherwise samples accumulate and are judged by the new ϵ
    abc([0.5, 0.5], jax.random.PRNGKey(1), 20000)
    assert abc.n_simulations == 40000
    abc(0.5, jax.random.PRNGKey(1), 20000, replace=True)
    assert abc.n_simulations == 20000

    counting = CountingSimulator()
    pmc = PopulationMonteCarlo(targets, Uniform(LOW, HIGH), counting, compressor, F=F)
    traces_before_call = counting.traces
    pmc(jax.random.PRNGKey(0), 500, 2000, criterion=0.2)
    # one trace for the prior draws and one for the round, shared by all rounds and targets
    assert counting.traces - traces_before_call == 2 and min(map(len, pmc.history)) > 2
    assert pmc.parameters.shape == (2, 500, 2) and pmc.weights.shape == (2, 500)
    np.testing.assert_allclose(pmc.weights.sum(1), 1, rtol=1e-5)
    for θ, weights, target in zip(pmc.parameters, pmc.weights, targets):
        assert abs(weights @ θ[:, 0] - target.mean()) < 0.3


# --- Gaussian approximation ---------------------------------------------------------

def test_gaussian_approximation_marginals_are_the_analytic_normal_densities():
    prior = Uniform([-2., 0.2, -1.], [2., 3., 1.])
    θ̂ = np.array([[0.1, 1.2, 0.], [-0.5, 2.0, 0.3]])
    invF = np.stack([np.array([[0.10, 0.02, 0.], [0.02, 0.2, 0.01], [0., 0.01, 0.05]]),
                     np.diag([0.3, 0.1, 0.02])])
    ga = GaussianApproximation(θ̂, invF, prior, gridsize=[50, 40, 30])
    assert [len(g) for g in ga.grid] == [50, 40, 30]
    for g, low, high in zip(ga.grid, prior.low, prior.high):
        np.testing.assert_allclose(g[[0, -1]], [low, high], rtol=1e-6)
    for t in range(2):
        for i in range(3):
            np.testing.assert_allclose(
                ga.marginals.one_d[i][t],
                scipy.stats.norm.pdf(ga.grid[i], θ̂[t, i], np.sqrt(invF[t, i, i])), rtol=1e-10)
        for i, j in [(0, 1), (0, 2), (1, 2)]:
            points = np.stack(np.meshgrid(ga.grid[i], ga.grid[j], indexing="ij"), -1)
            expected = scipy.stats.multivariate_normal(
                θ̂[t, [i, j]], invF[t][np.ix_([i, j], [i, j])]).pdf(points)
            np.testing.assert_allclose(ga.marginals.two_d[i, j][t], expected, rtol=1e-10)
    # one target: (p,) estimates and a shared (p, p) invF
    single = GaussianApproximation(θ̂[1], invF[1], prior, gridsize=[50, 40, 30])
    np.testing.assert_allclose(single.marginals.one_d[1], ga.marginals.one_d[1][1:])


def test_gaussian_approximation_rejects_bad_shapes():
    prior = Uniform([-2., 0.2], [2., 3.])
    with pytest.raises(ValueError, match="parameter_estimates"):
        GaussianApproximation(np.zeros(3), np.eye(2), prior)
    with pytest.raises(ValueError, match="parameter_estimates"):
        GaussianApproximation(np.zeros((2, 2, 2)), np.eye(2), prior)
    with pytest.raises(ValueError, match="invF"):
        GaussianApproximation(np.zeros(2), np.eye(3), prior)
    with pytest.raises(ValueError, match="invF"):
        GaussianApproximation(np.zeros((2, 2)), np.stack([np.eye(2)] * 3), prior)
    with pytest.raises(ValueError, match="invF"):
        GaussianApproximation(np.zeros(2), -np.eye(2), prior)
    with pytest.raises(ValueError, match="gridsize"):
        GaussianApproximation(np.zeros(2), np.eye(2), prior, gridsize=1)
    with pytest.raises(ValueError, match="gridsize"):
        GaussianApproximation(np.zeros(2), np.eye(2), prior, gridsize=[10, 10, 10])


# --- histograms ---------------------------------------------------------------------

class PointPrior:
    """A prior (in the Prior contract) that always draws the same point of its box."""

    def __init__(self, point, low, high):
        self.point, self.low, self.high = jnp.asarray(point), jnp.asarray(low), jnp.asarray(high)

    def sample(self, key, n):
        return jnp.broadcast_to(self.point, (n, self.point.shape[0]))

    def log_prob(self, θ):
        return jnp.zeros(θ.shape[0])


@pytest.mark.parametrize("where, bin", [("high", -1), ("low", 0), ("middle", 5)])
def test_histograms_keep_the_edge_bins(where, bin):
    """Every sample in the box is counted, including one exactly on the upper prior edge."""
    low, high = np.array([-2., 0.2]), np.array([2., 3.])
    gridsize = 11
    point = {"high": high, "low": low, "middle": (low + high) / 2}[where]
    abc = ApproximateBayesianComputation(np.zeros(2), PointPrior(point, low, high),
                                         lambda key, θ: θ, lambda d: d, gridsize=gridsize)
    abc(np.inf, jax.random.PRNGKey(0), 7)
    assert abc.n_accepted[0] == 7
    widths = np.repeat((high - low)[:, None] / (gridsize - 1), gridsize, axis=1)
    widths[:, [0, -1]] /= 2  # the end cells of the grid are clipped to the box
    for i in range(2):
        mass = abc.marginals.one_d[i][0] * widths[i]
        np.testing.assert_allclose(mass[bin], 1, rtol=1e-6)
        np.testing.assert_allclose(mass.sum(), 1, rtol=1e-6)
    joint = abc.marginals.two_d[0, 1][0] * np.outer(widths[0], widths[1])
    np.testing.assert_allclose(joint[bin, bin], 1, rtol=1e-6)


def test_weighted_histogram_counts_the_upper_edge_and_drops_samples_outside():
    grid = (np.linspace(0., 1., 5), np.linspace(0., 2., 3))
    # the last sample is outside the box in θ_0 only: it counts for the θ_1 marginal alone
    samples = np.array([[1., 2.], [1., 2.], [0.5, 1.], [1.5, 1.]])
    marginals = histogram_marginals([samples], grid, weights=[np.array([1., 1., 2., 5.])])
    mass_0 = marginals.one_d[0][0] * np.array([0.125, 0.25, 0.25, 0.25, 0.125])
    np.testing.assert_allclose(mass_0, [0, 0, 0.5, 0, 0.5])
    np.testing.assert_allclose(marginals.one_d[1][0] * [0.5, 1., 0.5], [0, 7 / 9, 2 / 9])
    joint = marginals.two_d[0, 1][0] * np.outer([0.125, 0.25, 0.25, 0.25, 0.125], [0.5, 1., 0.5])
    np.testing.assert_allclose(joint[[2, 4], [1, 2]], [0.5, 0.5])
    np.testing.assert_allclose(joint.sum(), 1)
    # smoothing (σ in cells, reflected at the edges) spreads the mass and keeps it all
    smoothed = histogram_marginals([samples], grid, weights=[np.array([1., 1., 2., 5.])],
                                   smoothing=1.)
    mass_smoothed = smoothed.one_d[0][0] * np.array([0.125, 0.25, 0.25, 0.25, 0.125])
    np.testing.assert_allclose(mass_smoothed.sum(), 1)
    assert np.all(mass_smoothed > 0) and mass_smoothed[-1] < 0.5


# --- priors and argument checks -----------------------------------------------------

class FakeTFPUniform:
    """Duck-types a TFP-on-JAX Uniform with batch shape (p,) (tfp itself is not needed)."""
    event_shape = ()

    def __init__(self, low, high, bounded=True):
        self.batch_shape = (len(low),)
        self._low, self._high = jnp.asarray(low), jnp.asarray(high)
        if bounded:
            self.low, self.high = self._low, self._high

    def sample(self, sample_shape=(), seed=None):
        return jax.random.uniform(seed, tuple(sample_shape) + self.batch_shape,
                                  minval=self._low, maxval=self._high)

    def log_prob(self, θ):
        inside = (θ >= self._low) & (θ < self._high)
        return jnp.where(inside, -jnp.log(self._high - self._low), -jnp.inf)


def test_priors_follow_the_contract():
    prior = Uniform([-2., 0.2], [2., 3.])
    θ = prior.sample(jax.random.PRNGKey(0), 1000)
    assert θ.shape == (1000, 2) and np.all((θ >= prior.low) & (θ <= prior.high))
    log_prob = prior.log_prob(jnp.array([[0., 1.], [2., 3.], [2.1, 1.]]))
    np.testing.assert_allclose(log_prob[:2], -np.log(4 * 2.8), rtol=1e-6)
    assert log_prob[2] == -np.inf

    tfp_like = as_prior(FakeTFPUniform([-2., 0.2], [2., 3.]))
    assert tfp_like.sample(jax.random.PRNGKey(0), 5).shape == (5, 2)
    np.testing.assert_allclose(tfp_like.log_prob(jnp.array([[0., 1.]])), [-np.log(4 * 2.8)],
                               rtol=1e-6)
    ga = GaussianApproximation(np.zeros(2), np.eye(2), FakeTFPUniform([-2., 0.2], [2., 3.]))
    np.testing.assert_allclose(ga.grid[1][[0, -1]], [0.2, 3.], rtol=1e-6)


def test_bad_priors_raise_clear_errors():
    with pytest.raises(ValueError, match="grid"):
        as_prior(FakeTFPUniform([-2., 0.2], [2., 3.], bounded=False))
    unbounded = FakeTFPUniform([-2., 0.2], [2., 3.])
    unbounded.high = jnp.array([np.inf, 3.])
    with pytest.raises(ValueError, match="low.*high"):
        GaussianApproximation(np.zeros(2), np.eye(2), unbounded)
    with pytest.raises(TypeError, match="prior"):
        as_prior(object())
    with pytest.raises(ValueError, match="low.*high"):
        Uniform([0., 1.], [1.])
    with pytest.raises(ValueError, match="low.*high"):
        Uniform([0., 1.], [1., 1.])


@SHARES_INFERENCE  # the fitted compressor: made once, on the worker that runs the inference
def test_abc_and_pmc_reject_bad_arguments(compressor_and_F):
    compressor, F = compressor_and_F
    prior = Uniform(LOW, HIGH)
    target = np.zeros(N_DRAWS)
    for Method in (ApproximateBayesianComputation, PopulationMonteCarlo):
        with pytest.raises(ValueError, match="`F`"):
            Method(target, prior, simulator, compressor, F=np.eye(3))
        with pytest.raises(ValueError, match="`F`"):
            Method(np.zeros((2, N_DRAWS)), prior, simulator, compressor, F=np.stack([F] * 3))
        with pytest.raises(ValueError, match="`F`"):
            Method(target, prior, simulator, compressor, F=-F)
        with pytest.raises(ValueError, match="target_data"):
            Method(np.zeros(N_DRAWS + 1), prior, simulator, compressor, F=F)
        with pytest.raises(ValueError, match="distance_measure"):
            Method(target, prior, simulator, compressor, F=F,
                   distance_measure=lambda x, t: jnp.zeros(x.shape[0]))
        with pytest.raises(TypeError, match="prior"):
            Method(target, None, simulator, compressor)
    abc = ApproximateBayesianComputation(target, prior, simulator, compressor, F=F)
    with pytest.raises(ValueError, match="ϵ"):
        abc(-1., jax.random.PRNGKey(0), 10)
    with pytest.raises(ValueError, match="ϵ"):
        abc([1., 1.], jax.random.PRNGKey(0), 10)
    with pytest.raises(ValueError, match="n_samples"):
        abc(1., jax.random.PRNGKey(0), 0)
    with pytest.warns(UserWarning, match="min_accepted"):
        abc(1e-6, jax.random.PRNGKey(0), 10, min_accepted=5, max_iterations=2)
    with pytest.raises(TypeError, match="progress"):
        abc(1., jax.random.PRNGKey(0), 10, progress="no")
    pmc = PopulationMonteCarlo(target, prior, simulator, compressor, F=F)
    with pytest.raises(TypeError, match="progress"):
        pmc(jax.random.PRNGKey(0), 100, 200, progress=None)
    with pytest.raises(ValueError, match="n_initial_points"):
        pmc(jax.random.PRNGKey(0), 100, 50)
    with pytest.raises(ValueError, match="percentile"):
        pmc(jax.random.PRNGKey(0), 100, 200, percentile=100)
    with pytest.raises(ValueError, match="criterion"):
        pmc(jax.random.PRNGKey(0), 100, 200, criterion=0)


@SHARES_INFERENCE
def test_progress_bars_switch_off(compressor_and_F, capsys):
    compressor, F = compressor_and_F
    target = np.zeros(N_DRAWS)
    abc = ApproximateBayesianComputation(target, Uniform(LOW, HIGH), simulator, compressor, F=F)
    pmc = PopulationMonteCarlo(target, Uniform(LOW, HIGH), simulator, compressor, F=F)
    abc(1., jax.random.PRNGKey(0), 10, progress=False)
    pmc(jax.random.PRNGKey(0), 10, 20, max_iterations=1, progress=False)
    assert capsys.readouterr().err == ""
    abc(1., jax.random.PRNGKey(0), 10)
    pmc(jax.random.PRNGKey(0), 10, 20, max_iterations=1)
    err = capsys.readouterr().err
    assert "ABC batches" in err and "PMC target 0" in err


# --- plots ----------------------------------------------------------------------------

def test_corner_plots_have_the_expected_panels():
    prior = Uniform([-2., 0.2, -1.], [2., 3., 1.])
    ga = GaussianApproximation(np.array([[0., 1., 0.], [0.5, 1.5, 0.2]]), np.diag([0.1, 0.2, 0.05]),
                               prior, gridsize=30)
    figure, axes = ga.marginal_plot(known=[0., 1., 0.], target_labels=["a", "b"])
    assert len(figure.axes) == 6 and axes.shape == (3, 3)
    assert all(axes[i, j] is None for i in range(3) for j in range(3) if j > i)
    assert len(axes[0, 0].get_legend().get_texts()) == 2
    for i in range(3):
        assert len(axes[i, i].lines) == 2 + 1  # two targets and the known value
        for j in range(i):
            assert len(axes[i, j].collections) == 2  # a 68%/95% contour set per target
            assert len(axes[i, j].lines) == 2  # known value: one vertical, one horizontal

    # overplot a second approximation on the same axes
    other = GaussianApproximation(np.array([0., 1., 0.]), np.diag([0.2, 0.2, 0.1]), prior,
                                  gridsize=30)
    figure_again, _ = other.marginal_plot(axes=axes, colours=["C3"])
    assert figure_again is figure and len(figure.axes) == 6
    assert len(axes[1, 1].lines) == 4 and len(axes[2, 0].collections) == 3
    plt.close("all")


@SHARES_INFERENCE
def test_scatter_and_marginal_plots_of_abc_and_pmc(inference):
    pmc, abc, _ = inference
    for method in (abc, pmc):
        figure, axes = method.marginal_plot(known=θ_FID, labels=["μ", "σ²"])
        assert len(figure.axes) == 3 and axes[1, 0].get_xlabel() == "μ"
        assert len(axes[1, 0].collections) == 1  # the contour set
        figure, axes = method.scatter_plot()
        assert len(figure.axes) == 3 and len(axes[1, 0].collections) == 1
        assert len(axes[0, 0].patches) == 1  # the step histogram of θ_0
        figure, axes = method.scatter_summaries()
        assert len(figure.axes) == 3 and len(axes[1, 0].lines) == 2  # target summary marked
        plt.close("all")
