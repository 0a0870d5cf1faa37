"""The common base of the nine IMNN classes: construction and its checks, the
weights, the data source and derivative kind a class attaches, and the batching
attributes the seed's aggregated and Dataset classes show.

``BaseIMNN`` is abstract. It checks the sizes (n_s, n_d, n_params, n_summaries),
input_shape and θ_fid, builds the backend's runtime and network, initialises the
weights and optimiser state, and, through ``_attach``, wires a source and a
derivative kind into the ``Problem`` the fit runs on and the compiled programs of
the statistics methods. Its methods come from three mixins, one concern each:
``FitLoop`` (``imnn._fit_loop``: fitting, progress, NaN diagnosis),
``SeedStatistics`` (``imnn._statistics``: the seed's summary and gradient methods)
and ``Estimates`` (``imnn._estimates``: summaries, estimates, the compressor and
the plot, shared with ``imnn.persistence.FittedIMNN``). Each mixin declares, as
typed class annotations, the attributes of the object it reads.

The argument checks that several public classes share (``aggregation``,
``keep_within``, ``finite_difference``) live here too, under public names.
"""
from __future__ import annotations

import math
import threading
from typing import Any, Self, Sequence

import jax
import numpy as np
from jax import tree_util

from ._checks import positive_int
from ._estimates import Estimates
from ._fit_loop import FitLoop
from ._fitting import Problem, stream_summaries, summaries_of, weight_gradient
from ._runtime import make_backend
from ._sources import Layout, SimulatorSource, check_array
from ._statistics import SeedStatistics
from .contracts import Array, FiniteDifference
from .optimisers import LegacyState, as_optimiser


def _check_sizes(n_s, n_params, n_summaries):
    """Refuse sizes whose Fisher information is singular by construction."""
    if n_s <= n_params:
        raise ValueError(f"n_s = {n_s} must be greater than n_params = {n_params}: the "
                         "covariance of n_s summaries has rank at most n_s − 1, too few for "
                         "the Fisher matrix of n_params parameters")
    if n_s <= n_summaries:
        raise ValueError(f"n_s = {n_s} must be greater than n_summaries = {n_summaries}: the "
                         "covariance of n_s summaries has rank at most n_s − 1, so with "
                         "n_s <= n_summaries it is singular")
    if n_summaries < n_params:
        raise ValueError(f"n_summaries = {n_summaries} must be at least n_params = {n_params}: "
                         "F = dμ/dθᵀ C⁻¹ dμ/dθ has rank at most n_summaries, so det F = 0")


class BaseIMNN(FitLoop, SeedStatistics, Estimates):
    """Abstract: what every IMNN class shares; the nine public classes are its final
    subclasses. Not for direct use.

    A subclass's constructor calls ``BaseIMNN.__init__`` (the sizes, input_shape, θ_fid,
    the backend's runtime and network, the weights and optimiser state), then
    ``_attach(source, kind)`` with its data source and derivative kind; the aggregated and
    Dataset classes then call ``_seed_shapes(layout)``.

    Attributes after ``fit``: ``history``, ``w`` (``best_w`` or ``final_w``),
    ``best_w``, ``final_w``, ``state`` (optimiser state), and, after
    ``set_F_statistics``: ``F, invF, C, invC, μ, dμ_dθ``.
    """

    def __init__(self, n_s: int, n_d: int, n_params: int, n_summaries: int,
                 input_shape: tuple[int, ...], θ_fid: Array, model: Any, optimiser: Any,
                 key_or_state: Array | tuple, backend: str,
                 devices: Sequence[jax.Device] | None = None) -> None:
        self.n_s = positive_int("n_s", n_s)
        self.n_d = positive_int("n_d", n_d)
        if self.n_d > self.n_s:
            raise ValueError(f"n_d = {n_d} must not exceed n_s = {n_s}: the derivative "
                             "simulations are the first n_d of the fiducial ones")
        if self.n_s < 2:
            raise ValueError(f"n_s must be at least 2 to estimate a covariance, got {n_s}")
        self.n_params = positive_int("n_params", n_params)
        self.n_summaries = positive_int("n_summaries", n_summaries)
        _check_sizes(self.n_s, self.n_params, self.n_summaries)
        if not isinstance(input_shape, (tuple, list)) or not all(
                isinstance(n, (int, np.integer)) and not isinstance(n, (bool, np.bool_))
                and n > 0 for n in input_shape):
            raise TypeError(f"input_shape must be a tuple of positive ints, got {input_shape!r}")
        self.input_shape = tuple(int(n) for n in input_shape)
        self.θ_fid = check_array("θ_fid", θ_fid, (self.n_params,)).astype(np.float64)
        self.runtime = make_backend(backend, devices)
        largest = float(np.finfo(self.runtime.dtype).max)
        if np.any(np.abs(self.θ_fid) > largest):
            raise ValueError(f"θ_fid = {self.θ_fid} is beyond the largest "
                             f"{np.dtype(self.runtime.dtype).name} ({largest:.3g})")
        self.backend = self.runtime.name
        self.network = self.runtime.network(model, self.input_shape)
        self.model = model  # kept so that imnn.save can describe it
        if self.network.output_shape != (self.n_summaries,):
            raise ValueError(f"the model's output shape {self.network.output_shape} does not "
                             f"match n_summaries = {self.n_summaries}")
        self.optimiser = as_optimiser(optimiser)
        self.w, self.state = self._initial_weights(optimiser, key_or_state)
        self.best_w = self.final_w = self.w
        self._max_logdetF = -math.inf
        self.history = _empty_history()
        self._runner = None
        self._fitting = threading.Lock()   # one fit at a time per object
        self.fit_iteration = self.patience_counter = 0
        self.F = self.invF = self.C = self.invC = self.μ = self.dμ_dθ = None

    def _initial_weights(self, optimiser, key_or_state):
        if _is_key(key_or_state):
            w = self.runtime.replicate(self.network.init(key_or_state))
            # Replicated like w, so that later fits see the same input shardings (no retrace).
            return w, self.runtime.replicate(self.optimiser.init(w))
        if isinstance(optimiser, tuple) and not hasattr(optimiser, "init"):
            # A legacy optimiser state from an earlier fit: its weights continue.
            try:
                w = optimiser[2](key_or_state)
            except Exception as error:  # noqa: BLE001 - report what the user passed
                raise TypeError("key_or_state must be a JAX PRNG key or a state of the given "
                                f"legacy optimiser; get_params failed: {error}") from error
            return w, LegacyState(0, key_or_state)
        raise TypeError("key_or_state must be a JAX PRNG key (jax.random.PRNGKey(seed)), "
                        f"got {type(key_or_state).__name__}")

    def _attach(self, source, kind, executor=None):
        self.source, self.kind = source, kind
        self.executor = executor or self.runtime.executor(self.network, kind)
        self.validate = source.validate
        self.problem = Problem(
            self.executor, self.optimiser, source.sizes, source.training_streams,
            source.validation_streams if source.validate else None, self.runtime.where)
        self._summaries_of_statistics_data = {
            validate: lambda w, data, key, validate=validate: stream_summaries(
                self.executor, w, source.statistics_streams(data, key, validate), source.sizes)
            for validate in (False, True)}
        self._statistics = {validate: self.runtime.compile(function) for validate, function
                            in self._summaries_of_statistics_data.items()}
        self._training_summaries = self.runtime.compile(
            lambda w, data, i: summaries_of(self.executor, w, source.training_streams(data, i),
                                            source.sizes))
        self._pass_two = self.runtime.compile(
            lambda w, data, cotangents: weight_gradient(
                self.executor, w, source.training_streams(data, 0), source.sizes, cotangents))
        self._placed = self._gradient = None

    def _seed_shapes(self, layout: Layout):
        """The batching attributes the seed's aggregated and Dataset classes show."""
        for name, value in self.kind.seed_batch_attributes(
                self.n_s, self.n_d, self.n_summaries, layout.n_devices,
                layout.n_per_device).items():
            setattr(self, name, value)

    def _data(self, rng):
        if isinstance(self.source, SimulatorSource):
            return self.source.data(self.runtime, rng)
        if self._placed is None:
            self._placed = self.source.data(self.runtime)
        return self._placed

    def initialise_from(self, other: BaseIMNN) -> Self:
        """Start from another IMNN's weights, with a fresh optimiser state and history.

        The refit step of the recommended loop: fit, simulate closer to the estimate, refit
        starting from the earlier network. The iteration and patience counters start again.

        Args:
            other: a fitted IMNN (any of the classes) whose model has the same weight
                shapes as this one's.

        Returns:
            self.

        Raises:
            TypeError: ``other`` is not an IMNN.
            ValueError: ``other``'s weights do not match this IMNN's model.
        """
        if not isinstance(other, BaseIMNN):
            raise TypeError(f"other must be an IMNN, got {type(other).__name__}")
        shapes = [np.shape(a) for a in tree_util.tree_leaves(other.w)]
        if shapes != [np.shape(a) for a in tree_util.tree_leaves(self.w)]:
            raise ValueError("other's network weights do not match this IMNN's model")
        w = self.runtime.replicate(tree_util.tree_map(np.asarray, other.w))
        self.w = self.best_w = self.final_w = w
        self.state = self.runtime.replicate(self.optimiser.init(w))
        self._max_logdetF = -math.inf
        self.history = _empty_history()
        self.fit_iteration = self.patience_counter = 0
        return self


def _empty_history():
    keys = ("detF", "detC", "detinvC", "Λ2", "r")
    history = {k: np.zeros(0) for k in keys}
    history.update({"val_" + k: np.zeros(0) for k in keys})
    history["max_detF"] = 0.0
    return history


def _is_key(obj) -> bool:
    dtype = getattr(obj, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return True
    return dtype is not None and np.dtype(dtype) == np.uint32 and np.shape(obj) == (2,)


def aggregation(host: jax.Device, devices: Sequence[jax.Device], n_per_device: int,
                memory_budget: int | None = None) -> tuple[Layout, list[jax.Device]]:
    """The layout of an aggregated class (len(devices) · n_per_device simulations a
    step) and its devices as a list, after checking host, devices, n_per_device and
    memory_budget; TypeError or ValueError naming the argument otherwise."""
    if memory_budget is not None:
        positive_int("memory_budget", memory_budget, minimum=0)
    if not isinstance(devices, (list, tuple)) or not devices:
        raise ValueError(f"devices must be a non-empty list of JAX devices, got {devices!r}")
    for device in devices:
        if not isinstance(device, jax.Device):
            raise TypeError(f"devices must hold JAX devices (e.g. jax.devices()), got "
                            f"{type(device).__name__} {device!r}")
    if not isinstance(host, jax.Device):
        raise TypeError(f"host must be a JAX device (e.g. jax.devices('cpu')[0]), got "
                        f"{type(host).__name__} {host!r}")
    n_per_device = positive_int("n_per_device", n_per_device)
    return Layout(len(devices) * n_per_device, len(devices), n_per_device), list(devices)


def keep_within(imnn: BaseIMNN, memory_budget: int | None) -> int | None:
    """Hand the aggregated gradient its memory budget (bytes per device that pass 1
    may keep for pass 2; None: the backend's default). Reference backends keep nothing."""
    return imnn.executor.keep_within(memory_budget, imnn.source.sizes)


def finite_difference(δθ: Array, n_params: int) -> FiniteDifference:
    """The finite-difference kind of step δθ (n_params,), after checking that it is
    finite and non-zero for every parameter."""
    δθ = check_array("δθ", δθ, (n_params,)).astype(np.float64)
    if np.any(δθ == 0):
        raise ValueError(f"δθ must be non-zero for every parameter, got {δθ}")
    return FiniteDifference(δθ)
