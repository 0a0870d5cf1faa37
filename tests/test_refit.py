"""The method's recommended loop (imnn.lfi.fit_and_refit) and the IMNN's
JAX-traceable compressor."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import imnn
from imnn.lfi import fit_and_refit

from conftest import INPUT_SHAPE, mlp, simulator, θ_FID

pytestmark = pytest.mark.slow


def make_imnn(θ_fid):
    return imnn.SimulatorIMNN(500, 500, 2, 2, INPUT_SHAPE, θ_fid, mlp(64, 2, imnn.nn.Elu()),
                              optax.adam(1e-3), jax.random.PRNGKey(0), simulator)


def test_refitting_converges_to_the_maximum_likelihood_estimate():
    target = np.asarray(simulator(jax.random.PRNGKey(42), jnp.array([0.8, 2.0])), np.float64)
    # For this model Fisher scoring from any start converges to the MLE; so does the IMNN's
    # quasi-ML estimate refitted at its own estimate.
    mle = np.array([target.mean(), target.var()])
    rounds = fit_and_refit(make_imnn, target, θ_FID, 3, 10.0, 0.1, rng=jax.random.PRNGKey(1),
                           patience=200, max_iterations=1500)
    assert len(rounds) == 3
    for before, after in zip(rounds, rounds[1:]):
        np.testing.assert_array_equal(after.θ_fid, before.estimate)
    # Posterior standard deviations at the MLE: sqrt(σ²/n), sqrt(2σ⁴/n).
    width = np.array([np.sqrt(mle[1] / 10), np.sqrt(2 * mle[1] ** 2 / 10)])
    first, last = rounds[0].estimate, rounds[-1].estimate
    assert np.all(np.abs(last - mle) < 0.25 * width), (last, mle, width)
    assert np.linalg.norm((last - mle) / width) < np.linalg.norm((first - mle) / width)


def test_initialise_from_copies_the_weights_and_resets_the_rest():
    first = make_imnn(θ_FID)
    first.fit(10.0, 0.1, rng=jax.random.PRNGKey(1), max_iterations=20)
    second = make_imnn(np.array([0.5, 1.5])).initialise_from(first)
    for a, b in zip(jax.tree.leaves(first.w), jax.tree.leaves(second.w)):
        np.testing.assert_array_equal(a, b)
    assert len(second.history["detF"]) == 0 and second.fit_iteration == 0
    with pytest.raises(ValueError, match="do not match"):
        imnn.SimulatorIMNN(500, 500, 2, 2, INPUT_SHAPE, θ_FID, mlp(8), optax.adam(1e-3),
                           jax.random.PRNGKey(0), simulator).initialise_from(first)


def test_compressor_is_traceable_and_equals_get_estimate():
    model = make_imnn(θ_FID)
    model.fit(10.0, 0.1, rng=jax.random.PRNGKey(1), max_iterations=30)
    d = np.asarray(jax.vmap(lambda k: simulator(k, jnp.asarray(θ_FID)))(
        jax.random.split(jax.random.PRNGKey(3), 7)))
    compress = jax.jit(model.compressor())
    np.testing.assert_allclose(compress(d), model.get_estimate(d), rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="no Fisher statistics"):
        make_imnn(θ_FID).compressor()
