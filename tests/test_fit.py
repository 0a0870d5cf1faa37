"""Fitting (docs/design/behaviour.md#fitting) on the JAX backend: the compiled loop, early
stopping, history, continuation, interruption, estimates and plots."""
import jax
import numpy as np
import optax
import pytest

import imnn
from imnn._fitting import Stopping, keep_going, update_stopping

from conftest import INPUT_SHAPE, exact_data, mlp, simulator, θ_FID


def gradient_imnn(n=100, validation=True, optimiser=None, backend="jax", width=16):
    fid, der = exact_data(jax.random.PRNGKey(1), n, n)
    val = exact_data(jax.random.PRNGKey(2), n, n) if validation else (None, None)
    return imnn.GradientIMNN(n, n, 2, 2, INPUT_SHAPE, θ_FID, mlp(width),
                             optimiser or optax.adam(1e-3), jax.random.PRNGKey(0), fid, der,
                             *val, backend=backend)


def test_stopping_rule_on_a_sequence():
    # Criterion sequence with improvements at i = 0, 2, 5; min_iterations = 3.
    crit = [1.0, 0.5, 2.0, 1.0, 1.5, 3.0, 0.0, 0.0, 0.0]
    state = Stopping(-np.inf, "w-init", 0)
    counters, bests = [], []
    for i, c in enumerate(crit):
        state = update_stopping(state, c, f"w{i}", i, 3, np.where)
        counters.append(int(state.patience_counter))
        bests.append(str(state.best_w))
    # Counting starts only once i exceeds min_iterations (i = 4); reset on improvement.
    assert counters == [0, 0, 0, 0, 1, 0, 1, 2, 3]
    assert bests[-1] == "w5" and float(state.max_logdetF) == 3.0
    assert bool(keep_going(state, 9, 4, 100)) and not bool(keep_going(state, 9, 3, 100))
    assert not bool(keep_going(Stopping(0, None, 0), 100, 10, 100))


def test_patience_counts_after_min_iterations():
    # Zero learning rate: det F never changes, so only iteration 0 improves.
    model = gradient_imnn(validation=False, optimiser=optax.sgd(0.0))
    model.fit(10.0, 0.1, patience=7, min_iterations=5, max_iterations=1000)
    assert len(model.history["detF"]) == 5 + 7 + 1
    assert len(model.history["val_detF"]) == 0


def test_best_weights_are_those_that_achieved_max_detF_without_validation():
    model = gradient_imnn(validation=False, optimiser=optax.adam(1e-2))
    model.fit(10.0, 0.1, patience=5, min_iterations=0, max_iterations=60)
    h = model.history["detF"]
    assert model.history["max_detF"] == pytest.approx(np.max(h), rel=1e-6)
    # best_w reproduces the best det F on the training data: it is w_i, not w_{i+1}.
    model.set_F_statistics(model.best_w)
    assert np.linalg.det(model.F) == pytest.approx(np.max(h), rel=1e-4)
    assert model.w is model.best_w


def test_best_weights_with_validation_are_the_updated_weights():
    model = gradient_imnn(validation=True, optimiser=optax.adam(1e-2))
    model.fit(10.0, 0.1, patience=5, min_iterations=0, max_iterations=60, best=False)
    h = model.history["val_detF"]
    assert len(h) == len(model.history["detF"])
    assert model.w is model.final_w
    model.set_F_statistics(model.best_w)  # validation data; the given weights become w
    assert np.linalg.det(model.F) == pytest.approx(np.max(h), rel=1e-4)
    assert model.w is model.best_w


def test_second_fit_continues_the_optimiser():
    once = gradient_imnn(validation=False)
    once.fit(10.0, 0.1, min_iterations=100, max_iterations=20)
    twice = gradient_imnn(validation=False)
    twice.fit(10.0, 0.1, min_iterations=100, max_iterations=12)
    twice.fit(10.0, 0.1, min_iterations=100, max_iterations=8)
    assert len(twice.history["detF"]) == 20
    np.testing.assert_allclose(twice.history["detF"], once.history["detF"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(once.final_w), jax.tree.leaves(twice.final_w)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert int(twice.state[0].count) == 20  # Adam's step count carried on


def test_fit_step_is_traced_once():
    model = gradient_imnn()
    model.fit(10.0, 0.1, min_iterations=0, max_iterations=30, print_rate=7)
    model.fit(5.0, 0.2, patience=3, min_iterations=2, max_iterations=50)
    model.fit(10.0, 0.1, max_iterations=10, print_rate=None)
    assert model._runner.programs() == 1


def test_progress_bar_switches_on_and_off(capsys):
    model = gradient_imnn()
    model.fit(10.0, 0.1, max_iterations=20, print_rate=5)
    assert "GradientIMNN fit" in capsys.readouterr().err
    model.fit(10.0, 0.1, max_iterations=20)
    assert "GradientIMNN fit" not in capsys.readouterr().err


def test_legacy_optimiser_triple_is_accepted(x64):
    # float64: the two Adams order their arithmetic differently, so in float32 their
    # histories part by a few ulps per iteration (1.8e-4 relative by iteration 5 on
    # some CPU targets); in float64 the same drift stays below 1e-12.
    from jax.example_libraries import optimizers
    model = gradient_imnn(optimiser=optimizers.adam(1e-3))
    adam = gradient_imnn(optimiser=optax.adam(1e-3))
    model.fit(10.0, 0.1, min_iterations=100, max_iterations=10)
    adam.fit(10.0, 0.1, min_iterations=100, max_iterations=10)
    assert len(model.history["detF"]) == 10
    np.testing.assert_allclose(model.history["detF"], adam.history["detF"], rtol=1e-9)
    # the weights moved: a triple whose update were ignored would fail here
    assert not np.allclose(model.history["detF"][0], model.history["detF"][-1], rtol=1e-6)


def test_stax_model_is_accepted():
    from jax.example_libraries import stax
    fid, der = exact_data(jax.random.PRNGKey(1), 50, 50)
    model = imnn.GradientIMNN(50, 50, 2, 2, INPUT_SHAPE, θ_FID,
                              stax.serial(stax.Dense(8), stax.Tanh, stax.Dense(2)),
                              optax.adam(1e-3), jax.random.PRNGKey(0), fid, der)
    model.fit(10.0, 0.1, max_iterations=5)
    assert len(model.history["detF"]) == 5 and np.all(np.isfinite(model.history["detF"]))


def test_estimates_single_and_batch():
    model = gradient_imnn()
    model.fit(10.0, 0.1, max_iterations=5)
    d = exact_data(jax.random.PRNGKey(9), 6, 1)[0]
    batch = model.get_estimate(d)
    assert batch.shape == (6, 2)
    np.testing.assert_allclose(model.get_estimate(d[2]), batch[2], rtol=1e-5)
    x = model.summarise(d)
    expected = θ_FID + model.invF @ model.dμ_dθ.T @ model.invC @ (x[3] - model.μ)
    np.testing.assert_allclose(batch[3], expected, rtol=1e-5)


def test_image_input_batch_decision_uses_input_rank():
    # A (4, 4) input: one simulation has ndim 2; a batch of 4 has ndim 3.
    net = imnn.nn.serial(imnn.nn.Flatten, imnn.nn.Dense(2))
    sim = lambda k, θ: θ[0] + jax.random.normal(k, (4, 4)) * jax.numpy.sqrt(θ[1])
    model = imnn.SimulatorIMNN(20, 10, 2, 2, (4, 4), θ_FID, net, optax.adam(1e-3),
                               jax.random.PRNGKey(0), sim)
    model.fit(10.0, 0.1, rng=jax.random.PRNGKey(1), max_iterations=3)
    assert model.get_estimate(np.zeros((4, 4))).shape == (2,)
    assert model.get_estimate(np.zeros((4, 4, 4))).shape == (4, 2)


def test_plot_returns_stacked_axes(tmp_path):
    model = gradient_imnn()
    model.fit(10.0, 0.1, max_iterations=10)
    ax = model.plot(expected_detF=50, filename=tmp_path / "history.png")
    assert len(ax) == 5 and (tmp_path / "history.png").stat().st_size > 0
    assert len(ax[0].lines) == 3  # training, validation, expected
    assert ax[1].get_yscale() == "log"
    model.plot(ax=ax, colour="C1", label="again")
    assert len(ax[0].lines) == 5  # two more: training and validation


def test_nan_fisher_is_reported():
    # Constant simulations: C is singular at the initial weights, so det F cannot be
    # finite: the first iteration stops with the reason, and nothing is kept.
    net = imnn.nn.serial(imnn.nn.Dense(2), imnn.nn.Relu, imnn.nn.Dense(2))
    fid, der = exact_data(jax.random.PRNGKey(1), 40, 40)
    model = imnn.GradientIMNN(40, 40, 2, 2, INPUT_SHAPE, θ_FID, net, optax.sgd(0.0),
                              jax.random.PRNGKey(0), fid * 0 - 5.0, der * 0)
    with pytest.raises(ValueError, match=r"first iteration of the fit is not finite: the "
                       r"covariance of the summaries is singular \(rank 0 of n_summaries = 2\)"):
        model.fit(10.0, 0.1, max_iterations=3)
    assert model.fit_iteration == 0 and len(model.history["detF"]) == 0
    assert model.history["max_detF"] == 0.0


def test_simulator_fit_uses_fresh_simulations_and_needs_a_key():
    model = imnn.SimulatorIMNN(100, 50, 2, 2, INPUT_SHAPE, θ_FID, mlp(16), optax.adam(1e-3),
                               jax.random.PRNGKey(0), simulator)
    with pytest.raises(ValueError, match="rng"):
        model.fit(10.0, 0.1, max_iterations=3)
    model.fit(10.0, 0.1, rng=jax.random.PRNGKey(1), max_iterations=3)
    parts0, _ = model.loss_and_gradient(10.0, 0.1, rng=jax.random.PRNGKey(1), iteration=0)
    parts1, _ = model.loss_and_gradient(10.0, 0.1, rng=jax.random.PRNGKey(1), iteration=1)
    assert float(parts0.Λ) != float(parts1.Λ)


def test_interrupted_fit_keeps_its_iterations_and_resumes_exactly():
    def simulator_imnn():
        return imnn.SimulatorIMNN(100, 50, 2, 2, INPUT_SHAPE, θ_FID, mlp(16), optax.adam(3e-3),
                                  jax.random.PRNGKey(0), simulator)

    kw = dict(rng=jax.random.PRNGKey(1), patience=40, min_iterations=10, max_iterations=200,
              print_rate=20)
    whole = simulator_imnn().fit(10.0, 0.1, **kw)

    def interrupt(model):
        if model.fit_iteration >= 40:
            raise KeyboardInterrupt

    broken = simulator_imnn()
    with pytest.warns(RuntimeWarning, match="interrupted after 40 iterations"):
        broken.fit(10.0, 0.1, callback=interrupt, **kw)
    assert len(broken.history["detF"]) == 40
    np.testing.assert_array_equal(broken.history["detF"], whole.history["detF"][:40])
    broken.fit(10.0, 0.1, resume=True, **kw)
    np.testing.assert_array_equal(broken.history["detF"], whole.history["detF"])
    assert broken.history["max_detF"] == whole.history["max_detF"]
    for a, b in zip(jax.tree.leaves(whole.best_w), jax.tree.leaves(broken.best_w)):
        np.testing.assert_array_equal(a, b)
    # The resumed fit stopped on patience, as the whole one did, not at max_iterations.
    assert 40 < len(whole.history["detF"]) < 200


# --- where the iterations loop: on the device or from the host --------------------

def _fit_with_loop(build, loop, **kw):
    from imnn.backends.jax.execution import make_runner
    model = build()
    model._runner = make_runner(model.problem, loop=loop)
    return model.fit(10.0, 0.1, **kw)


@pytest.mark.parametrize("kind", ["gradient", "simulator", "aggregated"])
def test_device_loop_equals_host_loop(x64, kind):
    """One compiled while_loop per run and one compiled call per iteration give the
    same fit: history, patience stop inside a run, best and final weights."""
    def build():
        if kind == "gradient":
            return gradient_imnn(n=60, validation=True, optimiser=optax.adam(1e-2))
        common = (60, 30, 2, 2, INPUT_SHAPE, θ_FID, mlp(8), optax.adam(1e-2),
                  jax.random.PRNGKey(0), simulator)
        if kind == "simulator":
            return imnn.SimulatorIMNN(*common)
        return imnn.AggregatedSimulatorIMNN(*common, jax.devices()[0], jax.devices()[:2], 15)

    kw = dict(rng=jax.random.PRNGKey(3), patience=6, min_iterations=4, max_iterations=150,
              print_rate=9)
    host, device = (_fit_with_loop(build, loop, **kw) for loop in ("host", "device"))
    assert host._runner.loop == "host" and device._runner.loop == "device"
    n = len(host.history["detF"])
    assert 4 + 6 < n < 150 and n % 9 != 0  # stopped on patience, inside a run of 9
    for name in ("detF", "detC", "Λ2", "val_detF"):
        np.testing.assert_allclose(device.history[name], host.history[name], rtol=1e-10)
    assert device.patience_counter == host.patience_counter == 6
    for a, b in zip(jax.tree.leaves((host.best_w, host.final_w, host.state)),
                    jax.tree.leaves((device.best_w, device.final_w, device.state))):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-10, atol=1e-13)


def test_device_loop_stops_at_max_iterations_and_compiles_once():
    from imnn.backends.jax.execution import CHUNK
    model = _fit_with_loop(lambda: gradient_imnn(validation=False), "device",
                           min_iterations=10 ** 6, max_iterations=CHUNK + 5)
    assert len(model.history["detF"]) == CHUNK + 5 == model.fit_iteration
    model.fit(10.0, 0.1, min_iterations=10 ** 6, max_iterations=7, print_rate=3)
    assert len(model.history["detF"]) == CHUNK + 12
    assert model._runner.programs() == 1


def test_loop_choice_follows_convolutions_on_cpu():
    """Auto: a CPU fit of a network with lax.conv (imnn.nn.Conv, a stax Conv, or one
    nested in a sub-computation) loops from the host; a dense network on the device."""
    from jax.example_libraries import stax

    nn = imnn.nn

    def loop_of(model, shape=INPUT_SHAPE):
        m = imnn.SimulatorIMNN(20, 10, 2, 2, shape, θ_FID, model, optax.adam(1e-3),
                               jax.random.PRNGKey(0), simulator)
        m.fit(10.0, 0.1, rng=jax.random.PRNGKey(1), max_iterations=1)
        return m._runner.loop

    conv = nn.serial(nn.Reshape(INPUT_SHAPE + (1,)), nn.Conv(2, (3,)), nn.Flatten, nn.Dense(2))
    init, apply = stax.serial(stax.GeneralConv(("NWC", "WIO", "NWC"), 2, (3,), padding="SAME"),
                              stax.Flatten, stax.Dense(2))

    def checkpointed(w, d):  # the convolution inside a remat sub-jaxpr
        return jax.checkpoint(apply)(w, d[None, :, None])[0]

    assert loop_of(mlp(8)) == "device"
    assert loop_of(conv) == "host"
    assert loop_of((lambda key, shape: init(key, (1,) + shape + (1,)), checkpointed)) == "host"
    with pytest.raises(ValueError, match="loop must be"):
        from imnn.backends.jax.execution import make_runner
        make_runner(gradient_imnn().problem, loop="gpu")


@pytest.mark.parametrize("isa", ["AVX2"])
def test_legacy_optimiser_test_passes_on_other_xla_cpu_targets(isa):
    # The test above, in a fresh process whose XLA CPU code generator is limited to an older
    # instruction set (other vector widths, other rounding of reductions): a tolerance that
    # only held for one target's rounding would fail here.
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "XLA_FLAGS": f"--xla_cpu_max_isa={isa}"}
    here = Path(__file__).resolve().parent
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
         f"{here / 'test_fit.py'}::test_legacy_optimiser_triple_is_accepted"],
        env=env, cwd=here.parent, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 passed" in result.stdout
