"""numpyro distributions as imnn.lfi priors, next to the library's own Uniform."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imnn.lfi import ApproximateBayesianComputation, Uniform, as_prior

from conftest import simulator, θ_FID

dist = pytest.importorskip("numpyro.distributions")

LOW, HIGH = [-1.0, 0.2], [1.0, 2.0]


def compressor(d):
    """(n, 10) -> (n, 2): sample mean and variance, the sufficient statistics."""
    return jnp.stack([d.mean(-1), d.var(-1)], axis=-1)


def test_abc_with_a_numpyro_uniform_accepts_what_the_library_uniform_accepts():
    # numpyro's Uniform(low, high).sample(key, (n,)) and imnn.lfi.Uniform(low, high)
    # .sample(key, n) are both jax.random.uniform(key, (n, 2), minval=low, maxval=high): the
    # same key gives the same draws, bit for bit, hence the same accepted set.
    target = simulator(jax.random.PRNGKey(3), jnp.asarray(θ_FID))
    runs = []
    for prior in (Uniform(LOW, HIGH), dist.Uniform(jnp.array(LOW), jnp.array(HIGH))):
        abc = ApproximateBayesianComputation(target, prior, simulator, compressor)
        abc(0.3, jax.random.PRNGKey(7), 4000, progress=False)
        runs.append(abc)
    ours, theirs = (run.accepted[0] for run in runs)
    assert 10 < len(ours.parameters) < 4000
    np.testing.assert_array_equal(theirs.parameters, ours.parameters)
    np.testing.assert_array_equal(theirs.distances, ours.distances)
    np.testing.assert_array_equal(runs[1].parameters, runs[0].parameters)


def test_numpyro_priors_follow_the_prior_contract():
    θ = jnp.array([[0.0, 1.0], [1.5, 1.0], [0.0, 0.1], [-1.0, 0.2]])
    expected = [-np.log(2 * 1.8), -np.inf, -np.inf, -np.log(2 * 1.8)]
    batch = as_prior(dist.Uniform(jnp.array(LOW), jnp.array(HIGH)))   # 2 scalar distributions
    event = dist.Uniform(jnp.array(LOW), jnp.array(HIGH)).to_event(1)  # one event of shape (2,)
    event.low, event.high = jnp.array(LOW), jnp.array(HIGH)
    event = as_prior(event)
    for prior in (batch, event):
        np.testing.assert_allclose(prior.log_prob(θ), expected, rtol=1e-6)
        draws = prior.sample(jax.random.PRNGKey(0), 5)
        assert draws.shape == (5, 2)
        np.testing.assert_array_equal(draws, Uniform(LOW, HIGH).sample(jax.random.PRNGKey(0), 5))
    # A normal prior cut to a box: −inf only where the user's box says so.
    normal = dist.Normal(jnp.zeros(2), 1.0)
    normal.low, normal.high = jnp.array([-3.0, -3.0]), jnp.array([3.0, 3.0])
    np.testing.assert_allclose(as_prior(normal).log_prob(jnp.array([[0.5, -1.0]])),
                               [-np.log(2 * np.pi) - (0.25 + 1.0) / 2], rtol=1e-6)


def test_a_numpyro_prior_without_bounds_is_a_clear_error():
    with pytest.raises(ValueError, match=r"Normal.*needs finite bounds `low` < `high`"):
        as_prior(dist.Normal(jnp.zeros(2), 1.0))
