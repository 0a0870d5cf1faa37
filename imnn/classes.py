"""The IMNN classes users know, as thin compositions.

Each class is one choice of *data source* (simulator, arrays, iterators) ×
*derivative kind* (exact chain rule, seed-matched finite difference, through a
simulator) × *execution* (in memory, or aggregated over devices), handed to
``_IMNN``, which fits through the backend contracts. Only ``_IMNN`` is
abstract; the nine public classes are final.
"""
from __future__ import annotations

import functools
import math
import threading
import warnings

import jax
import numpy as np
from jax import tree_util

from ._checks import positive_int
from .contracts import Exact, FiniteDifference, PerturbedSummaries, Summaries, ThroughSimulator
from .fitting import (
    Carry,
    FitSettings,
    Problem,
    Stopping,
    get_α,
    loss_and_gradient,
    stream_summaries,
    summaries_of,
    weight_gradient,
)
from .optimisers import LegacyState, as_optimiser
from .runtime import make_backend
from .sources import (
    ArraySource,
    Layout,
    SimulatorSource,
    as_raw_key,
    check_array,
    out_of_range,
    simulation_keys,
)

ON_NAN = ("stop", "raise", "warn")


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


def _as_simulations(name, d, input_shape, dtype):
    """``d`` as a finite real array of shape input_shape or (n,) + input_shape,
    within the range of the working precision ``dtype``."""
    try:
        d = np.asarray(d)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{name} must be an array of shape {input_shape} or "
                         f"(n,)+{input_shape}; it could not be read as one: {error}") from None
    if not (np.issubdtype(d.dtype, np.floating) or np.issubdtype(d.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers, got dtype {d.dtype}")
    if d.shape[max(d.ndim - len(input_shape), 0):] != tuple(input_shape) or \
            d.ndim not in (len(input_shape), len(input_shape) + 1):
        raise ValueError(f"{name} must have shape {input_shape} or (n,)+{input_shape}, "
                         f"got {d.shape}")
    if not np.all(np.isfinite(d)):
        bad = int(d.size - np.count_nonzero(np.isfinite(d)))
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf): their "
                         "summaries and estimates would be NaN")
    problem = out_of_range(d, dtype)
    if problem:
        raise ValueError(f"{name} {problem}")
    return d


class _IMNN:
    """Abstract: what every IMNN class shares. Not for direct use.

    Attributes after ``fit``: ``history``, ``w`` (``best_w`` or ``final_w``),
    ``best_w``, ``final_w``, ``state`` (optimiser state), and, after
    ``set_F_statistics``: ``F, invF, C, invC, μ, dμ_dθ``.
    """

    def __init__(self, n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                 optimiser, key_or_state, backend, devices=None):
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
        self._statistics = {
            validate: self.runtime.compile(
                lambda w, data, key, validate=validate: stream_summaries(
                    self.executor, w, source.statistics_streams(data, key, validate),
                    source.sizes))
            for validate in (False, True)}
        self._training_summaries = self.runtime.compile(
            lambda w, data, i: summaries_of(self.executor, w, source.training_streams(data, i),
                                            source.sizes))
        self._pass_two = self.runtime.compile(
            lambda w, data, cotangents: weight_gradient(
                self.executor, w, source.training_streams(data, 0), source.sizes, cotangents))
        self._placed = self._gradient = None

    def _seed_shapes(self, layout: Layout):
        """The batching attributes the seed's aggregated and Dataset classes show."""
        n_devices, n_per_device = layout.n_devices, layout.n_per_device
        per_pass = n_devices * n_per_device
        if isinstance(self.kind, FiniteDifference):
            self.fiducial_iterations = self.n_s // per_pass
            self.derivative_iterations = 2 * self.n_params * self.n_d // per_pass
            self.derivative_output_shape = (self.n_d, 2, self.n_params, self.n_summaries)
            self.fiducial_batch_shape = (n_devices, self.fiducial_iterations, n_per_device)
            self.derivative_batch_shape = (n_devices, self.derivative_iterations, n_per_device)
        else:
            self.n_remaining = self.n_s - self.n_d
            self.n_iterations = self.n_d // per_pass
            self.n_remaining_iterations = self.n_remaining // per_pass
            self.batch_shape = (n_devices, self.n_iterations, n_per_device)
            self.remaining_batch_shape = (n_devices, self.n_remaining_iterations, n_per_device)

    # --- fitting ---------------------------------------------------------------

    def get_α(self, λ: float, ε: float) -> float:
        """Rate of the regularisation strength.

        Args:
            λ: regularisation coupling (> 1 − ε/(1 + ε)).
            ε: closeness criterion of the covariance to the identity (> 0).

        Returns:
            α = −ln(ε(λ − 1) + ε²/(1 + ε)) / ε.
        """
        return get_α(λ, ε)

    def fit(self, λ: float, ε: float, rng=None, patience: int = 100, min_iterations: int = 100,
            max_iterations: int = 100000, print_rate: int | None = None, best: bool = True, *,
            on_nan: str = "stop", resume: bool = False, callback=None):
        """Fit the network.

        Each iteration computes the summaries (and their θ-derivatives) at the
        current weights, the loss and its weight gradient, and the optimiser
        update; with a validation set its statistics at the updated weights are
        the early-stopping criterion, otherwise the training det F is. A second
        call continues the optimiser (its step count and moments) and appends to
        the history.

        Before the first iteration of a call nothing is trusted: if its loss or
        gradient is not finite (at the initial weights, on the first data), the
        fit stops with a ``ValueError`` saying why (summaries not finite,
        covariance singular, derivative zero...) and what to try; the object is
        left as it was. A non-finite iteration later on never updates the weights
        or the optimiser state; ``on_nan`` says what follows.

        Args:
            λ: regularisation coupling.
            ε: closeness criterion of the covariance to the identity.
            rng: JAX PRNG key; required by simulator classes (fresh simulations
                every iteration), unused otherwise.
            patience: iterations without improvement (past ``min_iterations``)
                before stopping.
            min_iterations: iterations before patience starts counting.
            max_iterations: the most iterations of this call.
            print_rate: show a progress bar updated every ``print_rate``
                iterations (None: no bar).
            best: set ``w`` to ``best_w`` (True) or ``final_w`` (False).
            on_nan: after the first iteration, what a non-finite loss or
                gradient does: ``"stop"`` (default) ends the fit there with a
                RuntimeWarning that says why, keeping every earlier iteration;
                ``"raise"`` does the same but raises ``FloatingPointError``;
                ``"warn"`` skips that iteration's update and carries on (e.g.
                rare NaN simulations), with one warning at the end.
            resume: carry on the last, interrupted call from its iteration and
                patience counter (an interrupted and resumed fit equals an
                uninterrupted one).
            callback: ``callback(self)`` after every batch of iterations
                (checkpoints).

        Returns:
            self.

        Raises:
            TypeError, ValueError: a bad argument, or a first iteration that
                cannot work (see above).
            RuntimeError: ``fit`` is already running on this object (another
                thread).
            FloatingPointError: a non-finite iteration with ``on_nan="raise"``.

        Ctrl-C stops the fit and keeps every finished iteration.
        """
        α = get_α(λ, ε)
        patience = positive_int("patience", patience)
        min_iterations = positive_int("min_iterations", min_iterations, minimum=0)
        max_iterations = positive_int("max_iterations", max_iterations)
        if print_rate is not None:
            print_rate = positive_int("print_rate", print_rate)
        for name, flag in (("best", best), ("resume", resume)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
        if not isinstance(on_nan, str) or on_nan not in ON_NAN:
            raise ValueError(f"on_nan must be one of {ON_NAN}, got {on_nan!r}")
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        if rng is not None:
            rng = as_raw_key(rng, "rng")
        if not self._fitting.acquire(blocking=False):
            raise RuntimeError(
                f"{type(self).__name__} object at {id(self):#x} is already fitting in another "
                "thread: one fit at a time per object (wait for that fit to return, or fit a "
                "separate object)")
        try:
            settings = FitSettings(float(λ), float(α), min_iterations, patience, max_iterations)
            return self._fit(settings, rng, print_rate, best, on_nan, resume, callback)
        finally:
            self._fitting.release()

    def _fit(self, settings: FitSettings, rng, print_rate, best, on_nan, resume, callback):
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
        chunk = min(print_rate or 100, self._runner.chunk)
        patience, max_iterations = settings.patience, settings.max_iterations
        from tqdm.auto import tqdm
        bar = tqdm(total=max_iterations, initial=self.fit_iteration, unit="it", leave=True,
                   desc=f"{type(self).__name__} fit", disable=print_rate is None)
        stopped, skipped = None, []
        try:
            while self.fit_iteration < max_iterations and self.patience_counter < patience:
                start = self.fit_iteration
                n_steps = min(chunk, max_iterations - start)
                carry, records, n = self._runner.run(carry, data, settings, start, n_steps)
                n = int(n)
                bad = n and not bool(np.asarray(records.finite)[n - 1])
                if bad and start + n == 1:
                    # The first iteration: nothing was learnt, nothing is kept.
                    raise ValueError(
                        "the first iteration of the fit is not finite: "
                        + self._diagnose(self.final_w, data, 0) + " Nothing was fitted.")
                if n:
                    self._commit(carry, records, n)
                bar.update(n)
                bar.set_postfix(self._progress(), refresh=False)
                if callback is not None:
                    callback(self)
                if bad:
                    if on_nan != "warn":
                        stopped = (start + n - 1, self._diagnose(self.final_w, data,
                                                                 start + n - 1))
                        break
                    skipped.append(start + n - 1)
        except KeyboardInterrupt:
            warnings.warn(f"fit interrupted after {self.fit_iteration} iterations; the weights, "
                          "optimiser state and history of every finished iteration are kept "
                          "(fit(..., resume=True) carries on)", RuntimeWarning, stacklevel=3)
        finally:
            bar.close()
        self.w = self.best_w if best else self.final_w
        if stopped is not None:
            i, why = stopped
            message = (f"the fit stopped at iteration {i}, whose loss or gradient is not "
                       f"finite: {why} Its update was not applied; the {i} iteration(s) "
                       "before it and the best weights found (best_w) are kept.")
            if on_nan == "raise":
                raise FloatingPointError(message + " Call set_F_statistics() to use them.")
            warnings.warn(message, RuntimeWarning, stacklevel=3)
        self._report_nan(skipped)
        # Simulator classes: fresh simulations from a key the fit did not use.
        key = None if rng is None else np.asarray(jax.random.split(rng))[0]
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

    def _report_nan(self, skipped):
        if skipped:
            warnings.warn(
                f"the loss or its gradient was not finite at {len(skipped)} iteration(s) "
                f"(first: iteration {skipped[0]}); their updates were skipped "
                "(on_nan='warn'). If this happens often, check the simulations for NaN.",
                RuntimeWarning, stacklevel=4)
        bad = np.flatnonzero(~np.isfinite(self.history["val_detF"]))
        if bad.size:
            warnings.warn(
                f"the validation det F was not finite at {bad.size} iteration(s), first at "
                f"iteration {bad[0]}: the validation Fisher matrix (or covariance) was not "
                "positive definite there. Those iterations never count as improvements.",
                RuntimeWarning, stacklevel=4)

    def _diagnose(self, w, data, i) -> str:
        """Why the loss at weights ``w`` on iteration ``i``'s training data is not
        finite, and what to try (one or two sentences)."""
        if isinstance(self.source, SimulatorSource):
            # The simulator's output is checked here, on the iteration's first simulations.
            problem = self._simulation_problem(data, i, np.arange(min(self.n_s, 8)))
            if problem:
                return problem
        s = self._training_summaries(w, data, i)
        x = np.asarray(s.x, np.float64)
        dx = np.asarray(s.dx_dθ, np.float64)
        bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
        if bad.size:
            return (f"the summaries of {bad.size} of the n_s = {self.n_s} simulations are not "
                    f"finite (the first is simulation {bad[0]}); {self._input_cause(data, i, bad)}")
        bad = np.flatnonzero(~np.isfinite(dx).reshape(dx.shape[0], -1).all(axis=1))
        if bad.size:
            return (f"the derivatives ∂x/∂θ of {bad.size} of the n_d = {self.n_d} simulations "
                    f"are not finite (the first is simulation {bad[0]}): check the derivative "
                    "data (or the simulator's derivative) and δθ.")
        dtype = np.dtype(self.runtime.dtype)
        with np.errstate(over="ignore", invalid="ignore"):
            centred = (x - x.mean(axis=0)).astype(dtype)     # in the working precision
            overflows = not np.isfinite(centred.T @ centred).all()
        if overflows:
            return (f"the covariance of the summaries overflows {dtype.name} (summaries up to "
                    f"{np.max(np.abs(x)):.3g}): rescale the simulations or the network's "
                    "initial weights so that its outputs are of order one.")
        C = np.atleast_2d(np.cov(x, rowvar=False))
        eigenvalues = np.linalg.eigvalsh(C)
        tolerance = max(eigenvalues.max(), 0.0) * self.n_summaries * np.finfo(dtype).eps
        rank = int(np.sum(eigenvalues > tolerance))
        if rank < self.n_summaries:
            return (f"the covariance of the summaries is singular (rank {rank} of "
                    f"n_summaries = {self.n_summaries}): the network's outputs are constant or "
                    "linearly dependent over the simulations. Check that the simulations "
                    "differ; try another initialisation key or activation (e.g. LeakyRelu "
                    "rather than Relu, whose units can all be off), or fewer summaries.")
        dμ_dθ = dx.mean(axis=0)
        if not np.any(dμ_dθ):
            return ("the derivative of the mean summaries dμ/dθ is zero: the summaries do not "
                    "depend on the parameters. Check the derivative data (all zero?), δθ, and "
                    "that the simulations depend on θ (an integer cast stops derivatives).")
        rank = int(np.linalg.matrix_rank(dμ_dθ))
        if rank < self.n_params:
            return (f"the derivative of the mean summaries dμ/dθ has rank {rank} < n_params = "
                    f"{self.n_params}: some parameters do not change the summaries, or change "
                    "them alike, so F is singular. Check the derivative data for those "
                    "parameters.")
        return ("the Fisher matrix is not positive definite in "
                f"{dtype.name} (nearly singular covariance or derivatives): try float64 "
                "(jax.config.update('jax_enable_x64', True)) or a larger n_s.")

    def _input_cause(self, data, i, rows) -> str:
        """Whether the simulations behind non-finite summaries are themselves bad."""
        if not isinstance(self.source, SimulatorSource):
            return ("the simulations themselves are finite and in range (checked when they "
                    "were given), so the network makes them: check its initial weights and "
                    "the scale of the inputs.")
        return (self._simulation_problem(data, i, rows)
                or "those simulations are finite and in range, so the network makes the "
                   "non-finite values: check its initial weights and the scale of the inputs.")

    def _simulation_problem(self, data, i, rows) -> str | None:
        """What is wrong with simulations ``rows`` of iteration ``i`` (simulator
        classes): non-finite, or beyond the working precision's range; else None."""
        keys = np.asarray(simulation_keys(data["rng"], i, self.n_s))[np.asarray(rows)[:8]]
        simulator, θ = self.kind.simulator, self.θ_fid
        sims = [np.asarray(simulator(key, θ)[0] if self.kind.returns_derivative
                           else simulator(key, θ), np.float64) for key in keys]
        non_finite = [int(r) for r, d in zip(rows, sims) if not np.isfinite(d).all()]
        if non_finite:
            return (f"the simulator returned non-finite values for simulation(s) "
                    f"{non_finite} of iteration {i}. Make the simulator finite for every key "
                    "(on_nan='warn' skips such iterations instead).")
        problems = [p for p in (out_of_range(d, self.runtime.dtype) for d in sims) if p]
        if problems:
            return f"the simulator's output {problems[0]}."
        return None

    def loss_and_gradient(self, λ: float, ε: float, w=None, rng=None, iteration: int = 0):
        """The loss parts and dΛ/dw by the same two passes the fit uses.

        Args:
            λ: regularisation coupling.
            ε: closeness criterion.
            w: weights (default: ``self.w``).
            rng: JAX PRNG key (simulator classes: the fit's key).
            iteration: which iteration's training data (simulator classes draw
                fresh simulations per iteration).

        Returns:
            (LossParts, gradient: a pytree like w).

        Raises:
            TypeError, ValueError: λ or ε not a positive number, no λ > 1 − ε/(1 + ε), or
                no valid PRNG key ``rng`` for a simulator class.
        """
        α = get_α(λ, ε)
        w = self.w if w is None else w
        if self._gradient is None:
            self._gradient = self.runtime.compile(
                lambda w, data, i, λ, α: loss_and_gradient(
                    self.executor, w, self.source.training_streams(data, i),
                    self.source.sizes, λ, α))
        return self._gradient(w, self._data(rng), iteration, float(λ), α)

    # --- the seed's summary and gradient methods ------------------------------------

    def _statistics_data(self, key, validate, caller):
        """(data, key) for the summaries of the training or validation data, or of
        fresh simulations from ``key`` (simulator classes)."""
        if not isinstance(validate, (bool, np.bool_)):
            raise TypeError(f"validate must be a bool, got {type(validate).__name__}")
        if isinstance(self.source, SimulatorSource):
            return {}, as_raw_key(key, "key")
        if validate and not self.validate:
            raise ValueError(f"{caller}(validate=True) needs a validation set, and this "
                             f"{type(self).__name__} has none: pass validate=False (training "
                             "data)")
        return self._data(None), None

    def get_summaries(self, w=None, key=None, validate: bool = False):
        """All network outputs and their θ-derivatives.

        Args:
            w: weights (default: ``self.w``).
            key: JAX PRNG key; simulator classes summarise ``n_s`` fresh
                simulations made from it (required there, unused otherwise).
            validate: summarise the validation set (True) or the training data
                (False); simulator classes ignore it.

        Returns:
            ``Summaries(x (n_s, s), dx_dθ (n_d, s, p))``; for the numerical
            derivative classes ``PerturbedSummaries(x (n_s, s), x_mp (n_d, 2, p,
            s))``, the outputs of the perturbed simulations in their stored layout
            (``x_mp[:, 0, α]`` below, ``x_mp[:, 1, α]`` above θ_fid in parameter α).

        Raises:
            ValueError: ``validate=True`` without a validation set, or no ``key``
                for a simulator class.
        """
        w = self.w if w is None else w
        data, key = self._statistics_data(key, validate, "get_summaries")
        outputs = self._statistics[bool(validate)](w, data, key)
        if isinstance(self.kind, FiniteDifference):
            return PerturbedSummaries(outputs["fiducial"].x, outputs["derivative"].x.reshape(
                (self.n_d, 2, self.n_params, self.n_summaries)))
        return self.runtime.assemble(self.kind, outputs)

    def set_F_statistics(self, w=None, key=None, validate: bool = True):
        """Fill ``F, invF, C, invC, μ, dμ_dθ`` for score compression.

        Args:
            w: weights; when given they become ``self.w`` (default: ``self.w``).
            key: JAX PRNG key; simulator classes use fresh simulations from it
                (required there, unused otherwise).
            validate: use the validation set when there is one (True), else the
                training data; False: the training data.

        Returns:
            self.

        Raises:
            TypeError: ``validate`` not a bool, or (simulator classes) ``key`` not a JAX
                PRNG key.
        """
        if not isinstance(validate, (bool, np.bool_)):
            raise TypeError(f"validate must be a bool, got {type(validate).__name__}")
        if w is not None:
            self.w = w
        data, key = self._statistics_data(key, bool(validate) and self.validate,
                                          "set_F_statistics")
        outputs = self._statistics[bool(validate) and self.validate](self.w, data, key)
        stats = self._fisher_of_outputs(outputs)
        for name in ("F", "invF", "C", "invC", "μ", "dμ_dθ"):
            setattr(self, name, np.asarray(getattr(stats, name), np.float64))
        return self

    @functools.cached_property
    def _fisher_of_outputs(self):
        """Per-stream summaries -> FisherStatistics, assembled and computed in one compiled
        program (eagerly, the assembly alone compiled a program of its own)."""
        runtime, kind = self.runtime, self.kind

        def fisher(outputs):
            s = runtime.assemble(kind, outputs)
            return runtime.fisher_statistics(s.x, s.dx_dθ)

        return runtime.compile(fisher)

    def get_gradient(self, dΛ_dx, w=None, key=None):
        """Pass 2 on its own: the weight gradient Σ_i dΛ/dx_i · ∂x_i/∂w (and the
        θ-derivative term) over the training data, from the cotangents of every
        simulation's summaries, one vector-Jacobian product per batch.

        ``get_summaries(w, key)``, then the loss's gradient with respect to those
        summaries, then ``get_gradient`` equals the fit's own gradient.

        Args:
            dΛ_dx: ``(dΛ/dx (n_s, s), dΛ/d(∂x/∂θ) (n_d, s, p))``; for the
                numerical derivative classes ``(dΛ/dx (n_s, s), dΛ/dx_mp (n_d,
                2, p, s))``, shaped like ``get_summaries``'s outputs.
            w: weights (default: ``self.w``).
            key: JAX PRNG key; simulator classes re-make the simulations of
                ``get_summaries(w, key)`` from it (required there).

        Returns:
            The gradient, a pytree like ``w``.

        Raises:
            TypeError, ValueError: ``dΛ_dx`` not a pair of arrays of the shapes above, or
                (simulator classes) ``key`` not a JAX PRNG key.
        """
        w = self.w if w is None else w
        if isinstance(self.source, SimulatorSource):
            data = {"rng": as_raw_key(key, "key")}
        else:
            data = self._data(None)
        return self._pass_two(w, data, self._stream_cotangents(dΛ_dx))

    def _stream_cotangents(self, dΛ_dx) -> dict:
        s, p = self.n_summaries, self.n_params
        numerical = isinstance(self.kind, FiniteDifference)
        second = (self.n_d, 2, p, s) if numerical else (self.n_d, s, p)
        if not isinstance(dΛ_dx, (tuple, list)) or len(dΛ_dx) != 2:
            raise TypeError(f"dΛ_dx must be a pair (dΛ/dx {(self.n_s, s)}, "
                            f"{'dΛ/dx_mp' if numerical else 'dΛ/d(∂x/∂θ)'} {second}), got "
                            f"{type(dΛ_dx).__name__}")
        ct_x = self.runtime.asarray(check_array("dΛ_dx[0]", dΛ_dx[0], (self.n_s, s)))
        ct_d = self.runtime.asarray(check_array("dΛ_dx[1]", dΛ_dx[1], second))
        if numerical:
            streams = {"fiducial": Summaries(ct_x, None),
                       "derivative": Summaries(ct_d.reshape((-1, s)), None)}
        else:
            streams = {"main": Summaries(ct_x[:self.n_d], ct_d),
                       "remaining": Summaries(ct_x[self.n_d:], None)}
        return {name: ct for name, ct in streams.items() if self.source.sizes[name]}

    def get_summary(self, input, w=None, θ=None, derivative: bool = False,
                    gradient: bool = False):
        """One example through the network (the seed's per-example method).

        ``input`` is, by flags (``d`` a simulation of shape input_shape, ``dd_dθ``
        its θ-derivative input_shape + (p,), ``key`` a PRNG key for simulator
        classes, which simulate at ``θ``):

        - neither flag: ``d`` (``key``) -> the summary x (s,);
        - ``derivative``: ``(d, dd_dθ)`` (``key``) -> ``(x (s,), ∂x/∂θ (s, p))``;
        - ``gradient``: ``(dΛ_dx (s,), d)`` (``(dΛ_dx, key)``) -> the weight
          gradient of ``dΛ_dx · x``, a pytree like ``w``;
        - both: ``((dΛ_dx (s,), d2Λ_dxdθ (s, p)), (d, dd_dθ))`` (``(…, key)``)
          -> the weight gradient of ``dΛ_dx · x + Σ d2Λ_dxdθ ∘ ∂x/∂θ``.

        Gradients are one vector-Jacobian product (never a Jacobian ∂x/∂w).
        Numerical derivative classes take no ``derivative`` (their θ-derivatives
        come from differences of summaries).

        Args:
            input: see above.
            w: weights (default: ``self.w``).
            θ: parameters to simulate at (simulator classes; default θ_fid);
                unused by the other classes.
            derivative: also the θ-derivative (see above).
            gradient: the weight gradient (see above).

        Returns:
            See above.

        Raises:
            TypeError: a flag that is not a bool, or ``input`` not of the structure the
                flags ask for.
            ValueError: arrays of the wrong shape, or ``derivative=True`` on a numerical
                derivative class.
        """
        w = self.w if w is None else w
        for name, flag in (("derivative", derivative), ("gradient", gradient)):
            if not isinstance(flag, (bool, np.bool_)):
                raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
        if derivative and isinstance(self.kind, FiniteDifference):
            raise ValueError(f"derivative must be False for {type(self).__name__}: its "
                             "θ-derivatives are differences of summaries of the perturbed "
                             "simulations, not per-example derivatives")
        s, p = self.n_summaries, self.n_params
        ct = None
        if gradient:
            if not isinstance(input, (tuple, list)) or len(input) != 2:
                raise TypeError("with gradient=True, input must be a pair (cotangents, "
                                "example)")
            ct, input = input
            if derivative:
                if not isinstance(ct, (tuple, list)) or len(ct) != 2:
                    raise TypeError("with gradient=True and derivative=True the cotangents "
                                    "must be a pair (dΛ_dx (s,), d2Λ_dxdθ (s, p))")
                ct = Summaries(check_array("dΛ_dx", ct[0], (s,))[None],
                               check_array("d2Λ_dxdθ", ct[1], (s, p))[None])
            else:
                ct = Summaries(check_array("dΛ_dx", ct, (s,))[None], None)
            ct = tree_util.tree_map(self.runtime.asarray, ct)
        if isinstance(self.source, SimulatorSource):
            θ = self.θ_fid if θ is None else check_array("θ", θ, (p,)).astype(np.float64)
            kind = self.kind._replace(θ_fid=θ)
            inputs = as_raw_key(input, "input")[None]
        else:
            kind = Exact(p)
            if derivative:
                if not isinstance(input, (tuple, list)) or len(input) != 2:
                    raise TypeError("with derivative=True, the example must be a pair "
                                    "(d, dd_dθ)")
                inputs = (check_array("d", input[0], self.input_shape, floating=True)[None],
                          check_array("dd_dθ", input[1], self.input_shape + (p,),
                                      floating=True)[None])
            else:
                inputs = check_array("d", input, self.input_shape, floating=True)[None]
        inputs = tree_util.tree_map(self.runtime.asarray, inputs)
        if gradient:
            return self.runtime.batch_weight_gradient(self.network, w, kind, inputs,
                                                      derivative, ct)
        out = self.runtime.batch_summaries(self.network, w, kind, inputs, derivative)
        return (out.x[0], out.dx_dθ[0]) if derivative else out.x[0]

    # --- statistics and estimates -------------------------------------------------

    def summarise(self, d, w=None):
        """Network outputs of simulations.

        Args:
            d: one simulation (input_shape) or a batch (n,) + input_shape of
                finite real numbers.
            w: weights (default: ``self.w``).

        Returns:
            (s,) or (n, s) summaries.

        Raises:
            TypeError, ValueError: ``d`` not real, of neither shape, non-finite or beyond
                the backend's floating-point range.
        """
        w = self.w if w is None else w
        d = _as_simulations("d", d, self.input_shape, self.runtime.dtype)
        single = d.ndim == len(self.input_shape)
        batch = d[None] if single else d
        x = np.asarray(self.runtime.batch_summaries(
            self.network, w, Exact(self.n_params), self.runtime.asarray(batch), False).x)
        return x[0] if single else x

    def get_estimate(self, d):
        """Score-compressed estimates θ̂ = θ_fid + F⁻¹ dμ_dθᵀ C⁻¹ (x − μ).

        Args:
            d: one simulation (input_shape) or a batch (n,) + input_shape.

        Returns:
            (p,) or (n, p) estimates.

        Raises:
            RuntimeError: no Fisher statistics yet (call fit or set_F_statistics).
            TypeError, ValueError: ``d`` rejected as by ``summarise``.
        """
        if self.F is None:
            raise RuntimeError("no Fisher statistics yet: call fit or set_F_statistics first")
        x = self.summarise(d)
        return self.θ_fid + (x - self.μ) @ self.invC @ self.dμ_dθ @ self.invF

    def compressor(self):
        """The score compressor as a JAX function, for imnn.lfi.

        The current weights and Fisher statistics are fixed inside it: later fits do not
        change a compressor already made.

        Returns:
            A JAX-traceable function ``d (n,) + input_shape -> θ̂ (n, p)``, θ̂ = θ_fid +
            F⁻¹ dμ_dθᵀ C⁻¹ (x − μ) (docs/design/behaviour.md#estimate).

        Raises:
            RuntimeError: no Fisher statistics yet (call fit or set_F_statistics).
            ValueError: the backend is not ``"jax"`` (use get_estimate on the reference
                backends).
        """
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
        """Plot the fitting history in five stacked panels.

        The panels show det F (with ``expected_detF`` as a dashed line), det C and det C⁻¹
        (log scale, line at 1), Λ2 and r; training solid, validation dotted. Needs
        matplotlib.

        Args:
            ax: five matplotlib axes to draw on, e.g. those returned by an earlier call, so
                that a second history is drawn over the first (default None: a new figure).
            expected_detF: the expected det F, drawn as a dashed line (default None: none).
            colour: matplotlib colour of the lines (default "C0").
            figsize: figure size in inches when a new figure is made (default (5, 15)).
            label: prefix of the legend labels (default "").
            filename: if given, the figure is saved there (default None).
            ncol: number of columns of the legend (default 1).

        Returns:
            The array of the five axes.

        Raises:
            ValueError: ``ax`` does not hold five axes.
        """
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


def _aggregation(host, devices, n_per_device, memory_budget=None) -> tuple[Layout, list]:
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


def _keep_within(imnn, memory_budget):
    """Hand the aggregated gradient its memory budget (bytes per device that pass 1
    may keep for pass 2; None: the backend's default). Reference backends keep nothing."""
    keep_within = getattr(imnn.executor, "keep_within", None)
    return memory_budget if keep_within is None else keep_within(memory_budget, imnn.source.sizes)


def _simulator_kind(simulator, θ_fid, input_shape, backend):
    if not callable(simulator):
        raise TypeError(f"simulator must be a function simulator(key, θ), got {type(simulator).__name__}")
    out = simulator(jax.random.PRNGKey(0), θ_fid) if backend != "jax" else jax.eval_shape(
        simulator, jax.random.PRNGKey(0), θ_fid)
    returns_derivative = isinstance(out, tuple)
    if returns_derivative and backend == "jax":
        raise TypeError("on the jax backend simulator(key, θ) must return one simulation "
                        "(derivatives come from forward-mode autodiff)")
    dtype = getattr(out[0] if returns_derivative else out, "dtype", None)
    if dtype is None or not np.issubdtype(np.dtype(dtype), np.floating):
        raise TypeError(f"simulator must return floating-point simulations, but "
                        f"simulator(key, θ) gives dtype {dtype}: simulations are "
                        "differentiated with respect to θ (an integer result has no "
                        "derivative); return e.g. d.astype(jnp.float32)")
    shape = tuple(np.shape(out[0] if returns_derivative else out))
    if shape != tuple(input_shape):
        raise ValueError(f"simulator returns simulations of shape {shape}, but input_shape "
                         f"is {tuple(input_shape)}")
    return ThroughSimulator(simulator, np.asarray(θ_fid), returns_derivative)


# --- the public classes -----------------------------------------------------------

class SimulatorIMNN(_IMNN):
    """Fits on fresh simulations from a simulator every iteration.

    Each iteration draws n_s simulations at θ_fid from new keys split from fit's rng; the
    derivatives ∂x/∂θ of the first n_d summaries come from forward-mode differentiation through
    the simulator and the network (docs/design/behaviour.md#derivatives). fit needs rng.

    Args:
        n_s: Number of fiducial simulations (at θ_fid) whose summaries give the covariance C and
            the mean μ each iteration. An int, at least 2, greater than n_params and greater
            than n_summaries (otherwise C or F is singular by construction).
        n_d: Number of simulations whose θ-derivatives give dμ/dθ; they are the first n_d of the
            n_s fiducial ones (same seeds). An int with 1 ≤ n_d ≤ n_s.
        n_params: Number of physical parameters p (the length of θ_fid). A positive int.
        n_summaries: Number of summaries s the network outputs; at least n_params and less than
            n_s.
        input_shape: Shape of one simulation d, without a batch axis, e.g. (10,) or (32, 32, 1):
            a tuple of positive ints.
        θ_fid: Fiducial parameter values, an array of shape (n_params,), finite and within the
            backend's floating-point range; the Fisher information is estimated there.
        model: The network, mapping one simulation of shape input_shape to summaries of shape
            (n_summaries,). Any of: an imnn.nn model (imnn.nn.serial(...) or one layer; the only
            kind the numpy and numba backends run); an (init, apply) pair with init(key,
            input_shape) -> (output_shape, params) and apply(params, d) on one unbatched
            simulation (as jax.example_libraries.stax.serial returns); a flax.linen.Module
            instance (weights from module.init); a flax.nnx.Module or equinox.Module instance
            (its current parameters are the initial weights); or imnn.nn.from_function(apply,
            params) for a plain function. Its output shape must be (n_summaries,).
        optimiser: An optax GradientTransformation (e.g. optax.adam(1e-3)), or the legacy (init,
            update, get_params) triple of jax.example_libraries.optimizers.
        key_or_state: A JAX PRNG key (jax.random.PRNGKey(seed)) that initialises the network
            weights; or, with a legacy optimiser triple, a state of that optimiser from an
            earlier fit, whose weights (get_params(state)) are the starting point.
        simulator: simulator(key, θ) -> d: one simulation of shape input_shape (floating point)
            from a JAX PRNG key and parameters θ of shape (n_params,). On the jax backend it
            must be JAX-traceable and return d alone (∂d/∂θ comes from forward-mode autodiff);
            on the numpy and numba backends it may return the pair (d, ∂d/∂θ) with ∂d/∂θ of
            shape input_shape + (n_params,).
        backend: Keyword-only. The backend that computes the fit: "jax" (default; compiled,
            float32 unless JAX's x64 mode is on), or the float64 reference backends "numpy" and
            "numba" (imnn.nn models only).

    Raises:
        TypeError: An argument of the wrong type (the message names it), e.g. a model or
            optimiser of no accepted kind, or key_or_state that is neither a key nor a legacy
            state.
        ValueError: Inconsistent sizes or shapes (n_s ≤ n_params or ≤ n_summaries, n_d > n_s, a
            model whose output shape is not (n_summaries,), data of the wrong shape), non-finite
            data, or an unknown backend; raised before anything is computed.
    """

    def __init__(self, n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                 optimiser, key_or_state, simulator, *, backend="jax"):
        super().__init__(n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                         optimiser, key_or_state, backend)
        kind = _simulator_kind(simulator, self.θ_fid, self.input_shape, self.backend)
        self.simulator = simulator
        self._attach(SimulatorSource(kind, self.n_s, self.n_d, self.n_params, Layout(),
                                     self.runtime), kind)


class AggregatedSimulatorIMNN(_IMNN):
    """SimulatorIMNN for more simulations than fit in memory at once.

    The simulations are made and summarised n_per_device at a time on every device, and the
    weight gradient is exact, by two passes over the data
    (docs/design/behaviour.md#aggregation). fit needs rng.

    Args:
        n_s: Number of fiducial simulations (at θ_fid) whose summaries give the covariance C and
            the mean μ each iteration. An int, at least 2, greater than n_params and greater
            than n_summaries (otherwise C or F is singular by construction).
        n_d: Number of simulations whose θ-derivatives give dμ/dθ; they are the first n_d of the
            n_s fiducial ones (same seeds). An int with 1 ≤ n_d ≤ n_s.
        n_params: Number of physical parameters p (the length of θ_fid). A positive int.
        n_summaries: Number of summaries s the network outputs; at least n_params and less than
            n_s.
        input_shape: Shape of one simulation d, without a batch axis, e.g. (10,) or (32, 32, 1):
            a tuple of positive ints.
        θ_fid: Fiducial parameter values, an array of shape (n_params,), finite and within the
            backend's floating-point range; the Fisher information is estimated there.
        model: The network, mapping one simulation of shape input_shape to summaries of shape
            (n_summaries,). Any of: an imnn.nn model (imnn.nn.serial(...) or one layer; the only
            kind the numpy and numba backends run); an (init, apply) pair with init(key,
            input_shape) -> (output_shape, params) and apply(params, d) on one unbatched
            simulation (as jax.example_libraries.stax.serial returns); a flax.linen.Module
            instance (weights from module.init); a flax.nnx.Module or equinox.Module instance
            (its current parameters are the initial weights); or imnn.nn.from_function(apply,
            params) for a plain function. Its output shape must be (n_summaries,).
        optimiser: An optax GradientTransformation (e.g. optax.adam(1e-3)), or the legacy (init,
            update, get_params) triple of jax.example_libraries.optimizers.
        key_or_state: A JAX PRNG key (jax.random.PRNGKey(seed)) that initialises the network
            weights; or, with a legacy optimiser triple, a state of that optimiser from an
            earlier fit, whose weights (get_params(state)) are the starting point.
        simulator: simulator(key, θ) -> d: one simulation of shape input_shape (floating point)
            from a JAX PRNG key and parameters θ of shape (n_params,). On the jax backend it
            must be JAX-traceable and return d alone (∂d/∂θ comes from forward-mode autodiff);
            on the numpy and numba backends it may return the pair (d, ∂d/∂θ) with ∂d/∂θ of
            shape input_shape + (n_params,).
        host: The JAX device that holds the weights and the gathered summaries and runs the
            loss, e.g. jax.devices('cpu')[0].
        devices: Non-empty list of JAX devices the simulations are summarised on (e.g.
            jax.devices()); the data are split over them in equal contiguous chunks.
        n_per_device: Number of simulations each device summarises at a time (a positive int);
            every stream's size must be a multiple of len(devices) · n_per_device.
        memory_budget: Keyword-only. Bytes per device that pass 1 may keep for pass 2 (the
            simulations, or everything pass 2 needs) instead of recomputing them: None (the
            backend's default, 1 GiB on JAX), 0 (recompute every batch in pass 2), or a
            positive int. What each stream kept is in ``executor.kept`` after the first
            gradient.
        backend: Keyword-only. The backend that computes the fit: "jax" (default; compiled,
            float32 unless JAX's x64 mode is on), or the float64 reference backends "numpy" and
            "numba" (imnn.nn models only).

    Raises:
        TypeError: An argument of the wrong type (the message names it), e.g. a model or
            optimiser of no accepted kind, or key_or_state that is neither a key nor a legacy
            state.
        ValueError: Inconsistent sizes or shapes (n_s ≤ n_params or ≤ n_summaries, n_d > n_s, a
            model whose output shape is not (n_summaries,), data of the wrong shape), non-finite
            data, or an unknown backend; raised before anything is computed.
    """

    def __init__(self, n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                 optimiser, key_or_state, simulator, host, devices, n_per_device, *,
                 backend="jax", memory_budget=None):
        layout, devices = _aggregation(host, devices, n_per_device, memory_budget)
        super().__init__(n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                         optimiser, key_or_state, backend, devices)
        self.host, self.devices, self.n_per_device = host, devices, layout.n_per_device
        kind = _simulator_kind(simulator, self.θ_fid, self.input_shape, self.backend)
        self.simulator = simulator
        self._attach(SimulatorSource(kind, self.n_s, self.n_d, self.n_params, layout,
                                     self.runtime), kind)
        self._seed_shapes(layout)
        self.memory_budget = _keep_within(self, memory_budget)


class GradientIMNN(_IMNN):
    """Fits on simulations and their known derivatives ∂d/∂θ held in memory.

    ∂x/∂θ is the chain rule through the network (docs/design/behaviour.md#derivatives).

    Args:
        n_s: Number of fiducial simulations (at θ_fid) whose summaries give the covariance C and
            the mean μ each iteration. An int, at least 2, greater than n_params and greater
            than n_summaries (otherwise C or F is singular by construction).
        n_d: Number of simulations whose θ-derivatives give dμ/dθ; they are the first n_d of the
            n_s fiducial ones (same seeds). An int with 1 ≤ n_d ≤ n_s.
        n_params: Number of physical parameters p (the length of θ_fid). A positive int.
        n_summaries: Number of summaries s the network outputs; at least n_params and less than
            n_s.
        input_shape: Shape of one simulation d, without a batch axis, e.g. (10,) or (32, 32, 1):
            a tuple of positive ints.
        θ_fid: Fiducial parameter values, an array of shape (n_params,), finite and within the
            backend's floating-point range; the Fisher information is estimated there.
        model: The network, mapping one simulation of shape input_shape to summaries of shape
            (n_summaries,). Any of: an imnn.nn model (imnn.nn.serial(...) or one layer; the only
            kind the numpy and numba backends run); an (init, apply) pair with init(key,
            input_shape) -> (output_shape, params) and apply(params, d) on one unbatched
            simulation (as jax.example_libraries.stax.serial returns); a flax.linen.Module
            instance (weights from module.init); a flax.nnx.Module or equinox.Module instance
            (its current parameters are the initial weights); or imnn.nn.from_function(apply,
            params) for a plain function. Its output shape must be (n_summaries,).
        optimiser: An optax GradientTransformation (e.g. optax.adam(1e-3)), or the legacy (init,
            update, get_params) triple of jax.example_libraries.optimizers.
        key_or_state: A JAX PRNG key (jax.random.PRNGKey(seed)) that initialises the network
            weights; or, with a legacy optimiser triple, a state of that optimiser from an
            earlier fit, whose weights (get_params(state)) are the starting point.
        fiducial: Simulations at θ_fid, an array of shape (n_s,) + input_shape of finite real
            numbers.
        derivative: Their derivatives ∂d/∂θ, an array of shape (n_d,) + input_shape +
            (n_params,): derivative[i] belongs to fiducial[i].
        validation_fiducial: Optional validation simulations, shape (n_s,) + input_shape
            (default None). With them, det F of the validation set is the early-stopping
            criterion.
        validation_derivative: Their derivatives, shape (n_d,) + input_shape + (n_params,);
            given together with validation_fiducial (default None).
        backend: Keyword-only. The backend that computes the fit: "jax" (default; compiled,
            float32 unless JAX's x64 mode is on), or the float64 reference backends "numpy" and
            "numba" (imnn.nn models only).

    Raises:
        TypeError: An argument of the wrong type (the message names it), e.g. a model or
            optimiser of no accepted kind, or key_or_state that is neither a key nor a legacy
            state.
        ValueError: Inconsistent sizes or shapes (n_s ≤ n_params or ≤ n_summaries, n_d > n_s, a
            model whose output shape is not (n_summaries,), data of the wrong shape), non-finite
            data, or an unknown backend; raised before anything is computed.
    """

    def __init__(self, n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                 optimiser, key_or_state, fiducial, derivative, validation_fiducial=None,
                 validation_derivative=None, *, backend="jax"):
        super().__init__(n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                         optimiser, key_or_state, backend)
        kind = Exact(self.n_params)
        self._attach(ArraySource(kind, self.n_s, self.n_d, self.n_params, self.input_shape,
                                 fiducial, derivative, validation_fiducial,
                                 validation_derivative, Layout(), self.runtime.dtype), kind)


class AggregatedGradientIMNN(_IMNN):
    """GradientIMNN with the summaries computed n_per_device at a time over devices.

    The weight gradient is exact, by two passes over the data
    (docs/design/behaviour.md#aggregation).

    Args:
        n_s: Number of fiducial simulations (at θ_fid) whose summaries give the covariance C and
            the mean μ each iteration. An int, at least 2, greater than n_params and greater
            than n_summaries (otherwise C or F is singular by construction).
        n_d: Number of simulations whose θ-derivatives give dμ/dθ; they are the first n_d of the
            n_s fiducial ones (same seeds). An int with 1 ≤ n_d ≤ n_s.
        n_params: Number of physical parameters p (the length of θ_fid). A positive int.
        n_summaries: Number of summaries s the network outputs; at least n_params and less than
            n_s.
        input_shape: Shape of one simulation d, without a batch axis, e.g. (10,) or (32, 32, 1):
            a tuple of positive ints.
        θ_fid: Fiducial parameter values, an array of shape (n_params,), finite and within the
            backend's floating-point range; the Fisher information is estimated there.
        model: The network, mapping one simulation of shape input_shape to summaries of shape
            (n_summaries,). Any of: an imnn.nn model (imnn.nn.serial(...) or one layer; the only
            kind the numpy and numba backends run); an (init, apply) pair with init(key,
            input_shape) -> (output_shape, params) and apply(params, d) on one unbatched
            simulation (as jax.example_libraries.stax.serial returns); a flax.linen.Module
            instance (weights from module.init); a flax.nnx.Module or equinox.Module instance
            (its current parameters are the initial weights); or imnn.nn.from_function(apply,
            params) for a plain function. Its output shape must be (n_summaries,).
        optimiser: An optax GradientTransformation (e.g. optax.adam(1e-3)), or the legacy (init,
            update, get_params) triple of jax.example_libraries.optimizers.
        key_or_state: A JAX PRNG key (jax.random.PRNGKey(seed)) that initialises the network
            weights; or, with a legacy optimiser triple, a state of that optimiser from an
            earlier fit, whose weights (get_params(state)) are the starting point.
        fiducial: Simulations at θ_fid, an array of shape (n_s,) + input_shape of finite real
            numbers.
        derivative: Their derivatives ∂d/∂θ, an array of shape (n_d,) + input_shape +
            (n_params,): derivative[i] belongs to fiducial[i].
        host: The JAX device that holds the weights and the gathered summaries and runs the
            loss, e.g. jax.devices('cpu')[0].
        devices: Non-empty list of JAX devices the simulations are summarised on (e.g.
            jax.devices()); the data are split over them in equal contiguous chunks.
        n_per_device: Number of simulations each device summarises at a time (a positive int);
            every stream's size must be a multiple of len(devices) · n_per_device.
        validation_fiducial: Optional validation simulations, shape (n_s,) + input_shape
            (default None). With them, det F of the validation set is the early-stopping
            criterion.
        validation_derivative: Their derivatives, shape (n_d,) + input_shape + (n_params,);
            given together with validation_fiducial (default None).
        prefetch: Accepted for compatibility with earlier code and ignored: the arrays are laid
            over the devices once (default None).
        cache: Accepted for compatibility and ignored, like prefetch (default False).
        memory_budget: Keyword-only. Bytes per device that pass 1 may keep for pass 2 (the
            simulations, or everything pass 2 needs) instead of recomputing them: None (the
            backend's default, 1 GiB on JAX), 0 (recompute every batch in pass 2), or a
            positive int. What each stream kept is in ``executor.kept`` after the first
            gradient.
        backend: Keyword-only. The backend that computes the fit: "jax" (default; compiled,
            float32 unless JAX's x64 mode is on), or the float64 reference backends "numpy" and
            "numba" (imnn.nn models only).

    Raises:
        TypeError: An argument of the wrong type (the message names it), e.g. a model or
            optimiser of no accepted kind, or key_or_state that is neither a key nor a legacy
            state.
        ValueError: Inconsistent sizes or shapes (n_s ≤ n_params or ≤ n_summaries, n_d > n_s, a
            model whose output shape is not (n_summaries,), data of the wrong shape), non-finite
            data, or an unknown backend; raised before anything is computed.
    """

    def __init__(self, n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                 optimiser, key_or_state, fiducial, derivative, host, devices, n_per_device,
                 validation_fiducial=None, validation_derivative=None, prefetch=None,
                 cache=False, *, backend="jax", memory_budget=None):
        layout, devices = _aggregation(host, devices, n_per_device, memory_budget)
        super().__init__(n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                         optimiser, key_or_state, backend, devices)
        self.host, self.devices, self.n_per_device = host, devices, layout.n_per_device
        kind = Exact(self.n_params)
        self._attach(ArraySource(kind, self.n_s, self.n_d, self.n_params, self.input_shape,
                                 fiducial, derivative, validation_fiducial,
                                 validation_derivative, layout, self.runtime.dtype), kind)
        self._seed_shapes(layout)
        self.memory_budget = _keep_within(self, memory_budget)


class NumericalGradientIMNN(_IMNN):
    """Fits on simulations held in memory, with ∂x/∂θ by seed-matched finite differences.

    Simulations made with the same seed just above and below θ_fid give the derivatives of the
    summaries by central differences (docs/design/behaviour.md#derivatives).

    Args:
        n_s: Number of fiducial simulations (at θ_fid) whose summaries give the covariance C and
            the mean μ each iteration. An int, at least 2, greater than n_params and greater
            than n_summaries (otherwise C or F is singular by construction).
        n_d: Number of simulations whose θ-derivatives give dμ/dθ; they are the first n_d of the
            n_s fiducial ones (same seeds). An int with 1 ≤ n_d ≤ n_s.
        n_params: Number of physical parameters p (the length of θ_fid). A positive int.
        n_summaries: Number of summaries s the network outputs; at least n_params and less than
            n_s.
        input_shape: Shape of one simulation d, without a batch axis, e.g. (10,) or (32, 32, 1):
            a tuple of positive ints.
        θ_fid: Fiducial parameter values, an array of shape (n_params,), finite and within the
            backend's floating-point range; the Fisher information is estimated there.
        model: The network, mapping one simulation of shape input_shape to summaries of shape
            (n_summaries,). Any of: an imnn.nn model (imnn.nn.serial(...) or one layer; the only
            kind the numpy and numba backends run); an (init, apply) pair with init(key,
            input_shape) -> (output_shape, params) and apply(params, d) on one unbatched
            simulation (as jax.example_libraries.stax.serial returns); a flax.linen.Module
            instance (weights from module.init); a flax.nnx.Module or equinox.Module instance
            (its current parameters are the initial weights); or imnn.nn.from_function(apply,
            params) for a plain function. Its output shape must be (n_summaries,).
        optimiser: An optax GradientTransformation (e.g. optax.adam(1e-3)), or the legacy (init,
            update, get_params) triple of jax.example_libraries.optimizers.
        key_or_state: A JAX PRNG key (jax.random.PRNGKey(seed)) that initialises the network
            weights; or, with a legacy optimiser triple, a state of that optimiser from an
            earlier fit, whose weights (get_params(state)) are the starting point.
        fiducial: Simulations at θ_fid, an array of shape (n_s,) + input_shape of finite real
            numbers.
        derivative: Seed-matched perturbed simulations, an array of shape (n_d, 2, n_params) +
            input_shape: [i, 0, a] is made at θ_fid − δθ[a]/2 along parameter a and [i, 1, a] at
            θ_fid + δθ[a]/2, both with the seed of fiducial[i].
        δθ: Full finite-difference step per parameter, an array of shape (n_params,) of non-zero
            values: ∂x/∂θ_a ≈ (x(θ_fid + δθ_a/2) − x(θ_fid − δθ_a/2)) / δθ_a.
        validation_fiducial: Optional validation simulations at θ_fid, shape (n_s,) +
            input_shape (default None); with them the validation det F decides early stopping.
        validation_derivative: Their perturbed counterparts, shape (n_d, 2, n_params) +
            input_shape, given together with validation_fiducial (default None).
        backend: Keyword-only. The backend that computes the fit: "jax" (default; compiled,
            float32 unless JAX's x64 mode is on), or the float64 reference backends "numpy" and
            "numba" (imnn.nn models only).

    Raises:
        TypeError: An argument of the wrong type (the message names it), e.g. a model or
            optimiser of no accepted kind, or key_or_state that is neither a key nor a legacy
            state.
        ValueError: Inconsistent sizes or shapes (n_s ≤ n_params or ≤ n_summaries, n_d > n_s, a
            model whose output shape is not (n_summaries,), data of the wrong shape), non-finite
            data, or an unknown backend; raised before anything is computed.
    """

    def __init__(self, n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                 optimiser, key_or_state, fiducial, derivative, δθ, validation_fiducial=None,
                 validation_derivative=None, *, backend="jax"):
        super().__init__(n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                         optimiser, key_or_state, backend)
        kind = _finite_difference(δθ, self.n_params)
        self.δθ = np.asarray(kind.δθ)
        self._attach(ArraySource(kind, self.n_s, self.n_d, self.n_params, self.input_shape,
                                 fiducial, derivative, validation_fiducial,
                                 validation_derivative, Layout(), self.runtime.dtype), kind)


class AggregatedNumericalGradientIMNN(_IMNN):
    """NumericalGradientIMNN with the summaries computed n_per_device at a time over devices.

    The weight gradient is exact, by two passes over the data
    (docs/design/behaviour.md#aggregation).

    Args:
        n_s: Number of fiducial simulations (at θ_fid) whose summaries give the covariance C and
            the mean μ each iteration. An int, at least 2, greater than n_params and greater
            than n_summaries (otherwise C or F is singular by construction).
        n_d: Number of simulations whose θ-derivatives give dμ/dθ; they are the first n_d of the
            n_s fiducial ones (same seeds). An int with 1 ≤ n_d ≤ n_s.
        n_params: Number of physical parameters p (the length of θ_fid). A positive int.
        n_summaries: Number of summaries s the network outputs; at least n_params and less than
            n_s.
        input_shape: Shape of one simulation d, without a batch axis, e.g. (10,) or (32, 32, 1):
            a tuple of positive ints.
        θ_fid: Fiducial parameter values, an array of shape (n_params,), finite and within the
            backend's floating-point range; the Fisher information is estimated there.
        model: The network, mapping one simulation of shape input_shape to summaries of shape
            (n_summaries,). Any of: an imnn.nn model (imnn.nn.serial(...) or one layer; the only
            kind the numpy and numba backends run); an (init, apply) pair with init(key,
            input_shape) -> (output_shape, params) and apply(params, d) on one unbatched
            simulation (as jax.example_libraries.stax.serial returns); a flax.linen.Module
            instance (weights from module.init); a flax.nnx.Module or equinox.Module instance
            (its current parameters are the initial weights); or imnn.nn.from_function(apply,
            params) for a plain function. Its output shape must be (n_summaries,).
        optimiser: An optax GradientTransformation (e.g. optax.adam(1e-3)), or the legacy (init,
            update, get_params) triple of jax.example_libraries.optimizers.
        key_or_state: A JAX PRNG key (jax.random.PRNGKey(seed)) that initialises the network
            weights; or, with a legacy optimiser triple, a state of that optimiser from an
            earlier fit, whose weights (get_params(state)) are the starting point.
        fiducial: Simulations at θ_fid, an array of shape (n_s,) + input_shape of finite real
            numbers.
        derivative: Seed-matched perturbed simulations, an array of shape (n_d, 2, n_params) +
            input_shape: [i, 0, a] is made at θ_fid − δθ[a]/2 along parameter a and [i, 1, a] at
            θ_fid + δθ[a]/2, both with the seed of fiducial[i].
        δθ: Full finite-difference step per parameter, an array of shape (n_params,) of non-zero
            values: ∂x/∂θ_a ≈ (x(θ_fid + δθ_a/2) − x(θ_fid − δθ_a/2)) / δθ_a.
        host: The JAX device that holds the weights and the gathered summaries and runs the
            loss, e.g. jax.devices('cpu')[0].
        devices: Non-empty list of JAX devices the simulations are summarised on (e.g.
            jax.devices()); the data are split over them in equal contiguous chunks.
        n_per_device: Number of simulations each device summarises at a time (a positive int);
            every stream's size must be a multiple of len(devices) · n_per_device.
        validation_fiducial: Optional validation simulations at θ_fid, shape (n_s,) +
            input_shape (default None); with them the validation det F decides early stopping.
        validation_derivative: Their perturbed counterparts, shape (n_d, 2, n_params) +
            input_shape, given together with validation_fiducial (default None).
        prefetch: Accepted for compatibility with earlier code and ignored: the arrays are laid
            over the devices once (default None).
        cache: Accepted for compatibility and ignored, like prefetch (default False).
        memory_budget: Keyword-only. Bytes per device that pass 1 may keep for pass 2 (the
            simulations, or everything pass 2 needs) instead of recomputing them: None (the
            backend's default, 1 GiB on JAX), 0 (recompute every batch in pass 2), or a
            positive int. What each stream kept is in ``executor.kept`` after the first
            gradient.
        backend: Keyword-only. The backend that computes the fit: "jax" (default; compiled,
            float32 unless JAX's x64 mode is on), or the float64 reference backends "numpy" and
            "numba" (imnn.nn models only).

    Raises:
        TypeError: An argument of the wrong type (the message names it), e.g. a model or
            optimiser of no accepted kind, or key_or_state that is neither a key nor a legacy
            state.
        ValueError: Inconsistent sizes or shapes (n_s ≤ n_params or ≤ n_summaries, n_d > n_s, a
            model whose output shape is not (n_summaries,), data of the wrong shape), non-finite
            data, or an unknown backend; raised before anything is computed.
    """

    def __init__(self, n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                 optimiser, key_or_state, fiducial, derivative, δθ, host, devices,
                 n_per_device, validation_fiducial=None, validation_derivative=None,
                 prefetch=None, cache=False, *, backend="jax", memory_budget=None):
        layout, devices = _aggregation(host, devices, n_per_device, memory_budget)
        super().__init__(n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                         optimiser, key_or_state, backend, devices)
        self.host, self.devices, self.n_per_device = host, devices, layout.n_per_device
        kind = _finite_difference(δθ, self.n_params)
        self.δθ = np.asarray(kind.δθ)
        self._attach(ArraySource(kind, self.n_s, self.n_d, self.n_params, self.input_shape,
                                 fiducial, derivative, validation_fiducial,
                                 validation_derivative, layout, self.runtime.dtype), kind)
        self._seed_shapes(layout)
        self.memory_budget = _keep_within(self, memory_budget)


def _finite_difference(δθ, n_params) -> FiniteDifference:
    δθ = check_array("δθ", δθ, (n_params,)).astype(np.float64)
    if np.any(δθ == 0):
        raise ValueError(f"δθ must be non-zero for every parameter, got {δθ}")
    return FiniteDifference(δθ)


__all__ = ["SimulatorIMNN", "AggregatedSimulatorIMNN", "GradientIMNN",
           "AggregatedGradientIMNN", "NumericalGradientIMNN",
           "AggregatedNumericalGradientIMNN"]
