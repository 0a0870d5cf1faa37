"""The fit compiles once: one trace of the fit step, one XLA program for the loop
of iterations, none again in later fits or in set_F_statistics; and the
compiler options imnn chooses for CPUs are those its programs are built with."""
import jax
import numpy as np
import optax
import pytest

import imnn
import imnn._fitting
from imnn._compilation import CPU_OPTIONS, compiler_options

from conftest import INPUT_SHAPE, exact_data, mlp, simulator, θ_FID

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class Compilations:
    """Names of the programs XLA compiles (and of the fit steps traced) while active."""

    def __init__(self, monkeypatch):
        self.programs, self.steps = [], 0
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        step = imnn._fitting.fit_step

        def counted(*args, **kwargs):
            self.steps += 1
            return step(*args, **kwargs)

        monkeypatch.setattr(imnn._fitting, "fit_step", counted)

    def _listen(self, event, duration, **kwargs):
        if event == COMPILE_EVENT:
            self.programs.append(kwargs.get("fun_name", "?"))

    def take(self):
        programs, self.programs = self.programs, []
        steps, self.steps = self.steps, 0
        return programs, steps


@pytest.fixture
def compilations(monkeypatch):
    counter = Compilations(monkeypatch)
    yield counter
    jax.monitoring.unregister_event_duration_listener(counter._listen)


def _gradient_imnn(n=40):
    fid, der = exact_data(jax.random.PRNGKey(1), n, n)
    val = exact_data(jax.random.PRNGKey(2), n, n)
    return imnn.GradientIMNN(n, n, 2, 2, INPUT_SHAPE, θ_FID, mlp(8), optax.adam(1e-3),
                             jax.random.PRNGKey(0), fid, der, *val)


@pytest.mark.parametrize("kind", ["gradient", "simulator"])
def test_fit_compiles_once_across_fits_and_statistics(compilations, kind):
    if kind == "gradient":
        model = _gradient_imnn()
        rng = None
    else:
        model = imnn.SimulatorIMNN(40, 20, 2, 2, INPUT_SHAPE, θ_FID, mlp(8), optax.adam(1e-3),
                                   jax.random.PRNGKey(0), simulator)
        rng = jax.random.PRNGKey(5)
    compilations.take()
    model.fit(10.0, 0.1, rng=rng, min_iterations=0, max_iterations=12, print_rate=5)
    first, steps = compilations.take()
    assert steps == 1, "the fit step was traced more than once"
    assert first.count("jit(chunk)") == 1, first
    # The loop, the summaries and the Fisher statistics of the final weights, and
    # (simulator classes) the split of the key: nothing compiled op by op.
    assert len(first) <= 4, first

    # Other λ, ε, patience, budgets, progress rates and weights: the same programs.
    model.fit(5.0, 0.2, rng=rng, patience=3, min_iterations=2, max_iterations=7)
    model.fit(10.0, 0.1, rng=rng, min_iterations=0, max_iterations=3, print_rate=2,
              best=False)
    model.set_F_statistics(model.final_w, None if rng is None else jax.random.PRNGKey(9))
    again, steps = compilations.take()
    assert again == [] and steps == 0, again
    assert model._runner.programs() == 1
    assert model.fit_iteration == 3 and np.isfinite(model.history["detF"]).all()


def test_cpu_compiler_options_are_in_effect():
    """On a CPU imnn's programs are compiled with its options (LLVM -O2): asserted on the
    options the runner's program and the backend's other programs are lowered with."""
    assert jax.default_backend() == "cpu"
    assert compiler_options("cpu") == CPU_OPTIONS
    assert compiler_options("gpu") is None
    model = _gradient_imnn(n=20)
    runner = model.runtime.make_runner(model.problem)
    carry = imnn._fitting.Carry(model.final_w, model.state, imnn._fitting.Stopping(
        model.runtime.replicate(np.float32(-np.inf)), model.best_w,
        model.runtime.replicate(np.int32(0))))
    settings = imnn._fitting.FitSettings(10.0, 1.0, 0, 10, 10)
    lowered = runner.compiled.lower(carry, model._data(None), settings, 0, 5)
    assert dict(lowered._lowering._compiler_options_kvs) == CPU_OPTIONS
    other = model.runtime.compile(lambda x: x).lower(1.0)
    assert dict(other._lowering._compiler_options_kvs) == CPU_OPTIONS


def test_xla_defaults_switch(monkeypatch):
    monkeypatch.setenv("IMNN_XLA_DEFAULTS", "1")
    assert compiler_options("cpu") is None
    monkeypatch.setenv("IMNN_XLA_DEFAULTS", "0")
    assert compiler_options("cpu") == CPU_OPTIONS
