"""Choosing a backend by name, and running the reference backends.

The JAX backend compiles the fit itself. The reference backends only fulfil
the contracts; ``ReferenceRuntime`` runs them with Python loops in float64,
through the same ``imnn.fitting.fit_step``.
"""
from __future__ import annotations

import numpy as np
from jax import tree_util

from .fitting import LoopExecutor, run_loop

BACKENDS = ("jax", "numpy", "numba")


def make_backend(name: str, devices=None):
    """The backend called ``name``, sharding over ``devices`` where it can."""
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
    where = staticmethod(np.where)

    def __init__(self, backend):
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

    def asarray(self, array):
        array = np.asarray(array)
        return array.astype(np.float64) if np.issubdtype(array.dtype, np.floating) else array

    def place(self, tree):
        return tree_util.tree_map(self.asarray, tree)

    replicate = place

    def executor(self, network, kind):
        return LoopExecutor(self.backend, network, kind)

    def compile(self, function):
        return function

    def make_runner(self, problem):
        return python_runner(problem)


def python_runner(problem):
    """run(carry, data, λ, α, min_iterations, patience, max_iterations, start,
    n_steps) -> (carry, records stacked as NumPy arrays, iterations run): the fit
    loop in Python, one ``fit_step`` call per iteration (``run_loop``)."""
    def run(carry, data, λ, α, min_iterations, patience, max_iterations, start, n_steps):
        carry, records, n = run_loop(problem, carry, data, λ, α, min_iterations,
                                     patience, max_iterations, start, n_steps)
        stacked = (tree_util.tree_map(lambda *r: np.stack([np.asarray(v) for v in r]),
                                      *records) if records else None)
        return carry, stacked, n
    return run
