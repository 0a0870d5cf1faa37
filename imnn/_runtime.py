"""Choosing a backend by name, and running the reference backends.

The JAX backend compiles the fit itself. The reference backends only fulfil
the contracts; ``ReferenceRuntime`` runs them with Python loops in float64,
through the same ``imnn._fitting.fit_step``.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from jax import tree_util

from ._fitting import FitSettings, LoopExecutor, Problem, Runner, build_step, run_loop
from .contracts import Array, Backend, Kind, Network, Runtime

BACKENDS = ("jax", "numpy", "numba")


def make_backend(name: str, devices: Sequence | None = None) -> Runtime:
    """The runtime of the backend called ``name``, sharding over ``devices`` where it can.

    Args:
        name: one of ``BACKENDS``.
        devices: the JAX devices to shard simulations over (None: one device, no
            sharding); the reference backends run on the host and ignore it.

    Returns:
        A ``Runtime``: the ``JaxBackend``, or a ``ReferenceRuntime`` around the NumPy or
        Numba backend.

    Raises:
        ValueError: ``name`` is not one of ``BACKENDS``.
    """
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "jax":
        from .backends.jax import JaxBackend
        return JaxBackend(devices)
    if name == "numpy":
        from .reference.numpy import NumpyBackend
        return ReferenceRuntime(NumpyBackend())
    from .reference.numba import NumbaBackend
    return ReferenceRuntime(NumbaBackend())


class ReferenceRuntime:
    """Gives a reference backend what a fit needs beyond the contracts."""

    chunk = 100  # iterations between progress updates and callbacks
    dtype = np.float64
    mesh = None  # runs on the host
    traces = False  # NumPy arrays; simulators and networks are called as they are
    where = staticmethod(np.where)

    def __init__(self, backend: Backend):
        self.backend = backend
        self.name = backend.name
        # The contract methods are the reference backend's own.
        self.network = backend.network
        self.batch_summaries = backend.batch_summaries
        self.batch_weight_gradient = backend.batch_weight_gradient
        self.assemble = backend.assemble
        self.assemble_transpose = backend.assemble_transpose
        self.fisher_statistics = backend.fisher_statistics
        self.loss = backend.loss
        self.loss_and_cotangents = backend.loss_and_cotangents

    def asarray(self, array: Array) -> np.ndarray:
        array = np.asarray(array)
        return array.astype(np.float64) if np.issubdtype(array.dtype, np.floating) else array

    def place(self, tree: Any) -> Any:
        return tree_util.tree_map(self.asarray, tree)

    replicate = place

    def executor(self, network: Network, kind: Kind) -> LoopExecutor:
        return LoopExecutor(self.backend, network, kind)

    def compile(self, function: Callable) -> Callable:
        return function

    def make_runner(self, problem: Problem) -> Runner:
        """The fit loop of ``problem`` in Python (``python_runner``)."""
        return python_runner(problem, self.chunk)


def python_runner(problem: Problem, chunk: int = ReferenceRuntime.chunk) -> Runner:
    """The fit loop in Python, one ``fit_step`` call per iteration (``run_loop``).

    Args:
        problem: the static part of the fit.
        chunk: the most iterations one call of ``run`` may run.

    Returns:
        ``Runner(run, "python", chunk)``: ``run(carry, data, settings, start, n_steps) ->
        (carry, records stacked as NumPy arrays or None, iterations run)``.
    """
    step = build_step(problem)

    def run(carry, data, settings: FitSettings, start: int, n_steps: int):
        carry, records, n = run_loop(step, carry, data, settings, start, n_steps)
        stacked = (tree_util.tree_map(lambda *r: np.stack([np.asarray(v) for v in r]),
                                      *records) if records else None)
        return carry, stacked, n

    return Runner(run, "python", chunk)
