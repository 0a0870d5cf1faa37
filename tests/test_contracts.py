"""The declared seams: every runtime, executor and source the classes build
provides the methods of ``imnn.contracts.Runtime``, ``Executor`` and ``Source``."""
import inspect

import jax
import numpy as onp
import optax
import pytest

import imnn
from imnn.contracts import Executor, Runtime, Source

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
