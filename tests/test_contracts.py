"""The declared seams: every runtime, executor and source the classes build
provides the methods of ``imnn.contracts.Runtime``, ``Executor`` and ``Source``."""
import inspect

import jax
import numpy as onp
import optax
import pytest

import imnn
from imnn._fitting import Carry, FitSettings, Runner, Stopping, get_α
from imnn._runtime import make_backend
from imnn.contracts import Exact, Executor, Runtime, Source

from conftest import mlp

N_S, N_D, P, S, SHAPE = 12, 6, 2, 2, (4,)
θ = onp.array([0., 1.])


def simulator(key, θ):
    return θ[0] + θ[1] * jax.random.normal(key, SHAPE)


def gradient(backend):
    rng = onp.random.default_rng(0)
    return imnn.GradientIMNN(N_S, N_D, P, S, SHAPE, θ, mlp(8, 1, n_summaries=S),
                             optax.adam(1e-3), jax.random.PRNGKey(0),
                             rng.normal(size=(N_S,) + SHAPE),
                             rng.normal(size=(N_D,) + SHAPE + (P,)), backend=backend)


def simulator_imnn(backend):
    return imnn.SimulatorIMNN(N_S, N_D, P, S, SHAPE, θ, mlp(8, 1, n_summaries=S),
                              optax.adam(1e-3), jax.random.PRNGKey(0), simulator,
                              backend=backend)


def dataset(backend):
    device = jax.devices()[0]
    return imnn.DatasetGradientIMNN(N_S, N_D, P, S, SHAPE, θ, mlp(8, 1, n_summaries=S),
                                    optax.adam(1e-3), jax.random.PRNGKey(0),
                                    [iter(())], [iter(())], device, [device], 3,
                                    backend=backend)


def members(protocol):
    """The names a protocol declares, methods and attributes, its bases' included."""
    names = set()
    for cls in protocol.__mro__:
        if cls.__module__ == "imnn.contracts":
            names |= {n for n in vars(cls) if not n.startswith("_")}
            names |= set(getattr(cls, "__annotations__", {}))
    return names


def check(obj, protocol):
    assert isinstance(obj, protocol), type(obj).__name__
    for name in members(protocol):
        declared = inspect.getattr_static(protocol, name, None)
        if callable(declared) and not isinstance(declared, property):
            assert callable(getattr(obj, name)), f"{type(obj).__name__}.{name}"
        else:
            assert hasattr(obj, name), f"{type(obj).__name__}.{name}"


@pytest.mark.parametrize("build", [gradient, simulator_imnn, dataset])
@pytest.mark.parametrize("backend", ["jax", "numpy"])
def test_runtimes_executors_and_sources_fulfil_the_protocols(build, backend):
    fitter = build(backend)
    check(fitter.runtime, Runtime)
    check(fitter.executor, Executor)
    check(fitter.source, Source)
    assert fitter.runtime.name == backend
    assert fitter.runtime.chunk >= 1


def test_protocols_declare_the_seams():
    """A class missing a declared method is told apart (the checks can fail)."""
    assert {"summaries", "summaries_and_pullback"} <= members(Executor)
    assert {"data", "training_streams", "statistics_streams", "validate",
            "validation_streams"} <= members(Source)
    assert {"name", "dtype", "chunk", "asarray", "place", "replicate", "network", "executor",
            "compile", "make_runner", "where", "batch_summaries", "assemble",
            "loss_and_cotangents"} <= members(Runtime)

    class Half:
        def summaries(self, w, inputs, with_derivative):
            return None

    assert not isinstance(Half(), Executor)


def test_runner_is_declared_and_reads_one_settings_value():
    """A runtime's runner is a Runner; its run takes the fit's numbers as one FitSettings
    value and follows its budget and patience (reference backend: nothing compiles)."""
    fitter = gradient("numpy")
    runner = fitter.runtime.make_runner(fitter.problem)
    assert isinstance(runner, Runner) and runner.loop == "python"
    assert runner.chunk == fitter.runtime.chunk and runner.programs() == 0
    carry = Carry(fitter.w, fitter.state, Stopping(-onp.inf, fitter.w, 0))
    data = fitter._data(None)
    settings = FitSettings(10.0, get_α(10.0, 0.1), 0, 100, 3)
    carry, records, n = runner.run(carry, data, settings, 0, 2)
    assert n == 2 and records.train.Λ.shape == (2,) and onp.isfinite(records.train.Λ).all()
    carry, records, n = runner.run(carry, data, settings, 2, 2)
    assert n == 1 and records.train.Λ.shape == (1,)  # the budget: max_iterations = 3
    exhausted = carry._replace(stopping=carry.stopping._replace(patience_counter=3))
    patient = settings._replace(patience=3, max_iterations=100)
    _, records, n = runner.run(exhausted, data, patient, 3, 2)
    assert n == 0 and records is None


def test_network_declares_its_form_for_loop_bodies(x64):
    """Network.apply_in_loops: imnn.nn convolutions have one (the same summaries), a dense
    network none; a CPU executor runs it in its loops."""
    nn = imnn.nn
    runtime = make_backend("jax")
    conv = runtime.network(nn.serial(nn.Reshape(SHAPE + (1,)), nn.Conv(2, (3,)), nn.Flatten,
                                     nn.Dense(S)), SHAPE)
    assert conv.apply_in_loops is not None
    assert runtime.network(mlp(8, 1, n_summaries=S), SHAPE).apply_in_loops is None
    w, d = conv.init(jax.random.PRNGKey(0)), onp.linspace(-1.0, 1.0, SHAPE[0])
    onp.testing.assert_allclose(jax.jit(conv.apply_in_loops)(w, d), jax.jit(conv.apply)(w, d),
                                rtol=1e-12)
    executor = runtime.executor(conv, Exact(P))
    assert executor.platform == "cpu" and executor.loop_network.apply is conv.apply_in_loops
