"""The IMNN classes users know, as thin compositions.

Each class is one choice of *data source* (simulator, arrays, iterators) ×
*derivative kind* (exact chain rule, seed-matched finite difference, through a
simulator) × *execution* (in memory, or aggregated over devices), handed to
``_IMNN``, which fits through the backend contracts. Only ``_IMNN`` is
abstract; the nine public classes are final.
"""
from __future__ import annotations

import math
import warnings

import jax
import numpy as np
from jax import tree_util

from . import nn as _nn
from .contracts import Exact, FiniteDifference, Summaries, ThroughSimulator
from .fitting import Carry, Problem, Stopping, get_α, loss_and_gradient, summaries_of
from .optimisers import LegacyState, as_optimiser
from .runtime import make_backend
from .sources import ArraySource, Layout, SimulatorSource, as_raw_key, check_array


def _positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{name} must be a {kind} integer, got {value}")
    return int(value)


class _IMNN:
    """Abstract: what every IMNN class shares. Not for direct use.

    Attributes after ``fit``: ``history``, ``w`` (``best_w`` or ``final_w``),
    ``best_w``, ``final_w``, ``state`` (optimiser state), and, after
    ``set_F_statistics``: ``F, invF, C, invC, μ, dμ_dθ``.
    """

    def __init__(self, n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                 optimiser, key_or_state, backend, devices=None):
        self.n_s = _positive_int("n_s", n_s)
        self.n_d = _positive_int("n_d", n_d)
        if self.n_d > self.n_s:
            raise ValueError(f"n_d = {n_d} must not exceed n_s = {n_s}: the derivative "
                             "simulations are the first n_d of the fiducial ones")
        if self.n_s < 2:
            raise ValueError(f"n_s must be at least 2 to estimate a covariance, got {n_s}")
        self.n_params = _positive_int("n_params", n_params)
        self.n_summaries = _positive_int("n_summaries", n_summaries)
        if not isinstance(input_shape, (tuple, list)) or not all(
                isinstance(n, (int, np.integer)) and n > 0 for n in input_shape):
            raise TypeError(f"input_shape must be a tuple of positive ints, got {input_shape!r}")
        self.input_shape = tuple(int(n) for n in input_shape)
        self.θ_fid = check_array("θ_fid", θ_fid, (self.n_params,)).astype(np.float64)
        self.runtime = make_backend(backend, devices)
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
        self._statistics = self.runtime.compile(
            lambda w, data, key: summaries_of(self.executor, w,
                                              source.statistics_streams(data, key),
                                              source.sizes))
        self._placed = self._gradient = None

    # --- fitting ---------------------------------------------------------------

    def get_α(self, λ, ε):
        """Rate of the regularisation strength (spec §1)."""
        return get_α(λ, ε)

    def fit(self, λ, ε, rng=None, patience=100, min_iterations=100, max_iterations=100000,
            print_rate=None, best=True, *, resume=False, callback=None):
        """Fit the network (spec §3).

        A second call continues the optimiser (its step count and moments) and
        appends to the history. ``resume=True`` instead carries on the last,
        interrupted call from its iteration and patience counter, so that an
        interrupted and resumed fit equals an uninterrupted one.
        ``callback(self)`` runs after every batch of iterations (checkpoints).
        Ctrl-C stops the fit and keeps every finished iteration.
        """
        α = get_α(λ, ε)
        patience = _positive_int("patience", patience)
        min_iterations = _positive_int("min_iterations", min_iterations, minimum=0)
        max_iterations = _positive_int("max_iterations", max_iterations)
        if print_rate is not None:
            print_rate = _positive_int("print_rate", print_rate)
        for name, flag in (("best", best), ("resume", resume)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        data = self._data(rng)
        if self._runner is None:
            self._runner = self.runtime.make_runner(self.problem)
        if not resume:
            self.fit_iteration = self.patience_counter = 0
        counter = np.int32(self.patience_counter)
        # Replicated like the weights, as every step hands them back (no retrace).
        carry = Carry(self.final_w, self.state, Stopping(
            self.runtime.replicate(np.float64(self._max_logdetF)), self.best_w,
            self.runtime.replicate(counter) if self.backend == "jax" else counter))
        chunk = min(print_rate or 100, getattr(self.runtime, "chunk", 100))
        from tqdm.auto import tqdm
        bar = tqdm(total=max_iterations, initial=self.fit_iteration, unit="it", leave=True,
                   desc=f"{type(self).__name__} fit", disable=print_rate is None)
        try:
            while self.fit_iteration < max_iterations:
                start = self.fit_iteration
                n_steps = min(chunk, max_iterations - start)
                carry, records, n = self._runner(
                    carry, data, float(λ), float(α), min_iterations, patience,
                    max_iterations, start, n_steps)
                n = int(n)
                if n:
                    self._commit(carry, records, n)
                bar.update(n)
                bar.set_postfix(self._progress(), refresh=False)
                if callback is not None:
                    callback(self)
                if n < n_steps:
                    break
        except KeyboardInterrupt:
            warnings.warn(f"fit interrupted after {self.fit_iteration} iterations; the weights, "
                          "optimiser state and history of every finished iteration are kept "
                          "(fit(..., resume=True) carries on)", RuntimeWarning, stacklevel=2)
        finally:
            bar.close()
        self._report_nan()
        self.w = self.best_w if best else self.final_w
        # Simulator classes: fresh simulations from a key the fit did not use.
        key = None if rng is None else np.asarray(jax.random.split(as_raw_key(rng)))[0]
        self.set_F_statistics(self.w, key)
        return self

    def _commit(self, carry, records, n):
        """Take n finished iterations: history first, then the state."""
        self._append_history(records, n)
        self.final_w, self.state = carry.w, carry.opt_state
        self.best_w = carry.stopping.best_w
        self._max_logdetF = float(carry.stopping.max_logdetF)
        self.history["max_detF"] = _exp(self._max_logdetF)
        self.patience_counter = int(carry.stopping.patience_counter)
        self.fit_iteration += n

    def _data(self, rng):
        if isinstance(self.source, SimulatorSource):
            return self.source.data(self.runtime, rng)
        if self._placed is None:
            self._placed = self.source.data(self.runtime)
        return self._placed

    def _append_history(self, records, n):
        def add(prefix, parts):
            values = {"detF": parts.logdetF, "detC": parts.logdetC,
                      "detinvC": parts.logdetinvC}
            for name, value in values.items():
                self.history[prefix + name] = np.concatenate(
                    [self.history[prefix + name], _exp(np.asarray(value)[:n])])
            for name in ("Λ2", "r"):
                self.history[prefix + name] = np.concatenate(
                    [self.history[prefix + name], np.asarray(getattr(parts, name))[:n]])

        add("", records.train)
        if records.validation is not None:
            add("val_", records.validation)

    def _progress(self):
        h = self.history
        shown = {"detF": h["detF"], "detC": h["detC"], "Λ2": h["Λ2"], "r": h["r"]}
        if self.validate:
            shown["val_detF"] = h["val_detF"]
        out = {k: f"{v[-1]:.3g}" for k, v in shown.items() if len(v)}
        out["patience"] = self.patience_counter
        return out

    def _report_nan(self):
        bad = np.flatnonzero(~np.isfinite(self.history["detF"]))
        if bad.size:
            warnings.warn(
                f"det F was not finite at {bad.size} iteration(s), first at iteration {bad[0]}: "
                "the Fisher matrix (or the covariance) was not positive definite there. Those "
                "iterations never count as improvements; if the fit diverged, lower the "
                "learning rate or raise λ.", RuntimeWarning, stacklevel=3)

    def loss_and_gradient(self, λ, ε, w=None, rng=None, iteration=0):
        """The loss parts and dΛ/dw at weights ``w`` on the training data of
        ``iteration`` (for simulator classes, the simulations drawn from ``rng``
        at that iteration), by the same two passes the fit uses."""
        α = get_α(λ, ε)
        w = self.w if w is None else w
        if self._gradient is None:
            self._gradient = self.runtime.compile(
                lambda w, data, i, λ, α: loss_and_gradient(
                    self.executor, w, self.source.training_streams(data, i),
                    self.source.sizes, λ, α))
        return self._gradient(w, self._data(rng), iteration, float(λ), α)

    # --- statistics and estimates -------------------------------------------------

    def get_summaries(self, w=None, key=None):
        """Summaries (n_s, s) and ∂x/∂θ (n_d, s, p) of the validation (or
        training) data, or of fresh simulations from ``key`` for simulator classes."""
        w = self.w if w is None else w
        if isinstance(self.source, SimulatorSource):
            key = as_raw_key(key, "key")
            return self._statistics(w, {}, key)
        return self._statistics(w, self._data(None), None)

    def set_F_statistics(self, w=None, key=None):
        """Fill F, invF, C, invC, μ, dμ_dθ at weights ``w`` (default: ``self.w``)."""
        s = self.get_summaries(w, key)
        stats = self.runtime.fisher_statistics(s.x, s.dx_dθ)
        for name in ("F", "invF", "C", "invC", "μ", "dμ_dθ"):
            setattr(self, name, np.asarray(getattr(stats, name), np.float64))
        return self

    def summarise(self, d, w=None):
        """Network outputs of simulations d: shape input_shape or (n,)+input_shape."""
        w = self.w if w is None else w
        d = np.asarray(d)
        single = d.ndim == len(self.input_shape)
        batch = d[None] if single else d
        if batch.shape[1:] != self.input_shape:
            raise ValueError(f"d must have shape {self.input_shape} or (n,)+{self.input_shape}, "
                             f"got {d.shape}")
        x = np.asarray(self.runtime.batch_summaries(
            self.network, w, Exact(self.n_params), self.runtime.asarray(batch), False).x)
        return x[0] if single else x

    def get_estimate(self, d):
        """Score-compressed estimates θ̂ = θ_fid + F⁻¹ dμ_dθᵀ C⁻¹ (x − μ) (spec §1)."""
        if self.F is None:
            raise RuntimeError("no Fisher statistics yet: call fit or set_F_statistics first")
        x = self.summarise(d)
        return self.θ_fid + (x - self.μ) @ self.invC @ self.dμ_dθ @ self.invF

    def compressor(self):
        """A JAX-traceable ``d (n,)+input_shape -> θ̂ (n, p)`` with the current
        weights and Fisher statistics baked in: what imnn.lfi takes."""
        if self.F is None:
            raise RuntimeError("no Fisher statistics yet: call fit or set_F_statistics first")
        if self.backend != "jax":
            raise ValueError("compressor() builds a JAX function and needs backend='jax'; "
                             "use get_estimate on a reference backend")
        import jax.numpy as jnp
        apply, w = self.network.apply, self.w
        θ_fid, μ = jnp.asarray(self.θ_fid), jnp.asarray(self.μ)
        projection = jnp.asarray(self.invC @ self.dμ_dθ @ self.invF)

        def compress(d):
            x = jax.vmap(lambda one: apply(w, one))(jnp.asarray(d, projection.dtype))
            return θ_fid + (x - μ) @ projection
        return compress

    def initialise_from(self, other):
        """Start from another IMNN's weights (same model), with a fresh optimiser
        state and history: the refit step of the method's recommended loop."""
        if not isinstance(other, _IMNN):
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

    def plot(self, ax=None, expected_detF=None, colour="C0", figsize=(5, 15), label="",
             filename=None, ncol=1):
        """Stacked panels of the fitting history; returns the axes."""
        from .plotting import plot_history
        return plot_history(self.history, ax=ax, expected_detF=expected_detF, colour=colour,
                            figsize=figsize, label=label, filename=filename, ncol=ncol)


def _empty_history():
    keys = ("detF", "detC", "detinvC", "Λ2", "r")
    history = {k: np.zeros(0) for k in keys}
    history.update({"val_" + k: np.zeros(0) for k in keys})
    history["max_detF"] = 0.0
    return history


def _exp(value):
    with np.errstate(over="ignore"):
        return np.exp(np.asarray(value, np.float64))


def _is_key(obj) -> bool:
    dtype = getattr(obj, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return True
    return dtype is not None and np.dtype(dtype) == np.uint32 and np.shape(obj) == (2,)


def _aggregation(host, devices, n_per_device) -> tuple[Layout, list]:
    if not isinstance(devices, (list, tuple)) or not devices:
        raise ValueError(f"devices must be a non-empty list of JAX devices, got {devices!r}")
    for device in devices:
        if not isinstance(device, jax.Device):
            raise TypeError(f"devices must hold JAX devices (e.g. jax.devices()), got "
                            f"{type(device).__name__} {device!r}")
    if not isinstance(host, jax.Device):
        raise TypeError(f"host must be a JAX device (e.g. jax.devices('cpu')[0]), got "
                        f"{type(host).__name__} {host!r}")
    n_per_device = _positive_int("n_per_device", n_per_device)
    return Layout(len(devices) * n_per_device, len(devices), n_per_device), list(devices)


def _simulator_kind(simulator, θ_fid, input_shape, backend):
    if not callable(simulator):
        raise TypeError(f"simulator must be a function simulator(key, θ), got {type(simulator).__name__}")
    out = simulator(jax.random.PRNGKey(0), θ_fid) if backend != "jax" else jax.eval_shape(
        simulator, jax.random.PRNGKey(0), θ_fid)
    returns_derivative = isinstance(out, tuple)
    if returns_derivative and backend == "jax":
        raise TypeError("on the jax backend simulator(key, θ) must return one simulation "
                        "(derivatives come from forward-mode autodiff)")
    shape = tuple(np.shape(out[0] if returns_derivative else out))
    if shape != tuple(input_shape):
        raise ValueError(f"simulator returns simulations of shape {shape}, but input_shape "
                         f"is {tuple(input_shape)}")
    return ThroughSimulator(simulator, np.asarray(θ_fid), returns_derivative)


# --- the public classes -----------------------------------------------------------

class SimulatorIMNN(_IMNN):
    """Fresh simulations from ``simulator(key, θ)`` every iteration; ∂x/∂θ by
    forward-mode differentiation through simulator and network."""

    def __init__(self, n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                 optimiser, key_or_state, simulator, *, backend="jax"):
        super().__init__(n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                         optimiser, key_or_state, backend)
        kind = _simulator_kind(simulator, self.θ_fid, self.input_shape, self.backend)
        self.simulator = simulator
        self._attach(SimulatorSource(kind, self.n_s, self.n_d, self.n_params, Layout(),
                                     self.runtime), kind)


class AggregatedSimulatorIMNN(_IMNN):
    """SimulatorIMNN whose simulations are made and summarised ``n_per_device``
    at a time on every device, with exact two-pass gradients (spec §4)."""

    def __init__(self, n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                 optimiser, key_or_state, simulator, host, devices, n_per_device, *,
                 backend="jax"):
        layout, devices = _aggregation(host, devices, n_per_device)
        super().__init__(n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                         optimiser, key_or_state, backend, devices)
        self.host, self.devices, self.n_per_device = host, devices, layout.n_per_device
        kind = _simulator_kind(simulator, self.θ_fid, self.input_shape, self.backend)
        self.simulator = simulator
        self._attach(SimulatorSource(kind, self.n_s, self.n_d, self.n_params, layout,
                                     self.runtime), kind)


class GradientIMNN(_IMNN):
    """Simulations and their known derivatives ∂d/∂θ held in memory."""

    def __init__(self, n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                 optimiser, key_or_state, fiducial, derivative, validation_fiducial=None,
                 validation_derivative=None, *, backend="jax"):
        super().__init__(n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                         optimiser, key_or_state, backend)
        kind = Exact(self.n_params)
        self._attach(ArraySource(kind, self.n_s, self.n_d, self.n_params, self.input_shape,
                                 fiducial, derivative, validation_fiducial,
                                 validation_derivative, Layout()), kind)


class AggregatedGradientIMNN(_IMNN):
    """GradientIMNN with two-pass gradients aggregated over devices.
    ``prefetch`` and ``cache`` are accepted for compatibility: arrays are laid
    over the devices once, so there is nothing to prefetch or cache."""

    def __init__(self, n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                 optimiser, key_or_state, fiducial, derivative, host, devices, n_per_device,
                 validation_fiducial=None, validation_derivative=None, prefetch=None,
                 cache=False, *, backend="jax"):
        layout, devices = _aggregation(host, devices, n_per_device)
        super().__init__(n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                         optimiser, key_or_state, backend, devices)
        self.host, self.devices, self.n_per_device = host, devices, layout.n_per_device
        kind = Exact(self.n_params)
        self._attach(ArraySource(kind, self.n_s, self.n_d, self.n_params, self.input_shape,
                                 fiducial, derivative, validation_fiducial,
                                 validation_derivative, layout), kind)


class NumericalGradientIMNN(_IMNN):
    """Seed-matched simulations above and below θ_fid give ∂x/∂θ by finite
    differences of the summaries (spec §2)."""

    def __init__(self, n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                 optimiser, key_or_state, fiducial, derivative, δθ, validation_fiducial=None,
                 validation_derivative=None, *, backend="jax"):
        super().__init__(n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                         optimiser, key_or_state, backend)
        kind = _finite_difference(δθ, self.n_params)
        self.δθ = np.asarray(kind.δθ)
        self._attach(ArraySource(kind, self.n_s, self.n_d, self.n_params, self.input_shape,
                                 fiducial, derivative, validation_fiducial,
                                 validation_derivative, Layout()), kind)


class AggregatedNumericalGradientIMNN(_IMNN):
    """NumericalGradientIMNN with two-pass gradients aggregated over devices."""

    def __init__(self, n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                 optimiser, key_or_state, fiducial, derivative, δθ, host, devices,
                 n_per_device, validation_fiducial=None, validation_derivative=None,
                 prefetch=None, cache=False, *, backend="jax"):
        layout, devices = _aggregation(host, devices, n_per_device)
        super().__init__(n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                         optimiser, key_or_state, backend, devices)
        self.host, self.devices, self.n_per_device = host, devices, layout.n_per_device
        kind = _finite_difference(δθ, self.n_params)
        self.δθ = np.asarray(kind.δθ)
        self._attach(ArraySource(kind, self.n_s, self.n_d, self.n_params, self.input_shape,
                                 fiducial, derivative, validation_fiducial,
                                 validation_derivative, layout), kind)


def _finite_difference(δθ, n_params) -> FiniteDifference:
    δθ = check_array("δθ", δθ, (n_params,)).astype(np.float64)
    if np.any(δθ == 0):
        raise ValueError(f"δθ must be non-zero for every parameter, got {δθ}")
    return FiniteDifference(δθ)


__all__ = ["SimulatorIMNN", "AggregatedSimulatorIMNN", "GradientIMNN",
           "AggregatedGradientIMNN", "NumericalGradientIMNN",
           "AggregatedNumericalGradientIMNN"]
