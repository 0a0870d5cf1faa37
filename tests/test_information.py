"""The measured defaults: default_optimiser's schedule, and the demo recipe
reaching the information of the mean/variance problem on fresh simulations."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import imnn
from imnn.optimisers import DEMO_RECIPE, default_optimiser
from imnn.simulators import GaussianMeanVariance
from imnn.utils import value_and_jacfwd


def cosine(t, T, first, last):
    """The rate a cosine decay from ``first`` to ``last`` over T steps applies at step t."""
    return last + (first - last) * 0.5 * (1 + math.cos(math.pi * min(t, T) / T))


def applied_rates(optimiser, n_steps):
    """The learning rate of each step, read from Adam's updates: with a constant
    gradient Adam's bias-corrected moments are g and g², so the update is
    −rate · g / (|g| + 10⁻⁸)."""
    w = jnp.zeros(3)
    g = jnp.full(3, 1e3)  # |g| ≫ Adam's ε: the update is −rate to 1e-11
    state, update = optimiser.init(w), jax.jit(optimiser.update)
    rates = []
    for _ in range(n_steps):
        updates, state = update(g, state, w)
        rates.append(-float(updates[0]))
    return np.array(rates)


def test_default_optimiser_follows_a_cosine_from_first_to_final_rate(x64):
    T = 8
    rates = applied_rates(default_optimiser(T, 1e-2, 1e-4), T + 3)
    expected = [cosine(t, T, 1e-2, 1e-4) for t in range(T + 3)]
    np.testing.assert_allclose(rates, expected, rtol=1e-9)
    assert rates[0] == pytest.approx(1e-2, rel=1e-9)
    assert rates[-1] == pytest.approx(1e-4, rel=1e-9)  # held after max_iterations


def test_demo_recipe_optimiser_and_its_toml_table_agree(x64):
    table = DEMO_RECIPE.optimiser_table()
    assert table["name"] == "adam" and table["learning_rate"]["schedule"] == "cosine_decay"
    arguments = {k: v for k, v in table["learning_rate"].items() if k != "schedule"}
    schedule = optax.cosine_decay_schedule(**arguments)
    T, first, last = (DEMO_RECIPE.max_iterations, DEMO_RECIPE.learning_rate,
                      DEMO_RECIPE.final_learning_rate)
    for t in (0, T // 3, T // 2, T, T + 10):
        assert float(schedule(t)) == pytest.approx(cosine(t, T, first, last), rel=1e-9)
    rates = applied_rates(DEMO_RECIPE.optimiser(), 2)
    np.testing.assert_allclose(rates, [cosine(t, T, first, last) for t in (0, 1)], rtol=1e-9)
    assert DEMO_RECIPE.patience >= DEMO_RECIPE.max_iterations  # the decay runs to its end


@pytest.mark.parametrize("arguments, message", [
    ((0,), "max_iterations must be a positive integer"),
    ((10.0,), "max_iterations must be a positive integer"),
    ((True,), "max_iterations must be a positive integer"),
    ((10, -1e-2), "learning_rate must be a positive number"),
    ((10, 1e-2, 0.0), "final_learning_rate must be a positive number"),
    ((10, 1e-3, 1e-2), r"final_learning_rate \(0.01\) must be at most learning_rate"),
])
def test_default_optimiser_rejects_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        default_optimiser(*arguments)


@pytest.mark.parametrize("change, message", [
    ({"n_s": 0}, "n_s must be an integer >= 1"),
    ({"n_d": 4000}, r"n_d \(4000\) must be at most n_s \(2000\)"),
    ({"max_iterations": 10.0}, "max_iterations must be an integer >= 1"),
    ({"min_iterations": -1}, "min_iterations must be an integer >= 0"),
    ({"λ": 0.0}, "λ must be a positive number"),
    ({"best": 1}, "best must be a bool"),
    ({"activation": "serial"}, "activation must name an imnn.nn activation"),
])
def test_fit_recipe_rejects_bad_settings(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(DEMO_RECIPE, **change)


def test_fit_recipe_builds_its_network():
    model = dataclasses.replace(DEMO_RECIPE, activation="Elu", width=8).model(3)
    assert model == imnn.nn.serial(imnn.nn.Dense(8), imnn.nn.Elu(), imnn.nn.Dense(8),
                                   imnn.nn.Elu(), imnn.nn.Dense(3))
    assert imnn.nn.output_shape(DEMO_RECIPE.model(2), (10,)) == (2,)


def fresh_fisher(fitter, simulate, n=20000, batch=5000):
    """F of the fitted summaries on n fresh simulations at θ_fid (float64 statistics)."""
    apply, w = fitter.network.apply, fitter.w
    θ = jnp.asarray(fitter.θ_fid, jnp.float32)

    @jax.jit
    def summaries(keys):
        return jax.vmap(lambda k: value_and_jacfwd(lambda t: apply(w, simulate(k, t)))(θ))(keys)

    keys = jax.random.split(jax.random.PRNGKey(2026), n)
    parts = [summaries(keys[i:i + batch]) for i in range(0, n, batch)]
    x = np.concatenate([np.asarray(p[0], np.float64) for p in parts])
    dμ_dθ = np.concatenate([np.asarray(p[1], np.float64) for p in parts]).mean(axis=0)
    return dμ_dθ.T @ np.linalg.solve(np.cov(x, rowvar=False), dμ_dθ)


@pytest.mark.slow
def test_demo_recipe_reaches_97_percent_of_the_information_on_fresh_simulations():
    sim, r = GaussianMeanVariance(n=10), DEMO_RECIPE
    fitter = imnn.SimulatorIMNN(
        n_s=r.n_s, n_d=r.n_d, n_params=2, n_summaries=2, input_shape=sim.input_shape,
        θ_fid=sim.θ_fid, model=r.model(2), optimiser=r.optimiser(),
        key_or_state=jax.random.PRNGKey(0), simulator=sim.simulate)
    fitter.fit(rng=jax.random.PRNGKey(1), **r.fit_arguments())
    assert fitter.fit_iteration == r.max_iterations
    F = fresh_fisher(fitter, sim.simulate)
    exact = np.linalg.det(sim.fisher())
    assert exact == pytest.approx(50.0)
    assert np.linalg.det(F) >= 0.97 * exact, f"det F = {np.linalg.det(F):.2f} of {exact:.0f}"
