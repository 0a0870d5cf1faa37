"""Fitting, the ``FitLoop`` mixin of ``BaseIMNN``: ``fit`` (its argument checks,
the loop of compiled runner calls, the progress bar, the history, Ctrl-C and
non-finite iterations), ``loss_and_gradient``, and the diagnosis of a loss that
is not finite (which says why, and what to try).

The iterations themselves are ``imnn._fitting``'s, run by the backend's runner
(``runtime.make_runner(problem)``); this module is the Python around them.
"""
from __future__ import annotations

import threading
import warnings
from typing import Any, Callable, Self

import jax
import numpy as np

from ._checks import positive_int
from ._fitting import Carry, FitSettings, Problem, Runner, Stopping, get_α, loss_and_gradient
from ._sources import SimulatorSource, as_raw_key, out_of_range, simulation_keys
from .contracts import Array, Executor, Kind, LossParts, Runtime, Source, Weights

ON_NAN = ("stop", "raise", "warn")


class FitLoop:
    """Mixin of ``BaseIMNN``: fitting and the diagnosis of non-finite iterations.

    Reads from the object: ``runtime``, ``problem``, ``source``, ``kind``,
    ``executor``, ``validate``, the sizes ``n_s, n_d, n_params, n_summaries``,
    ``θ_fid``, ``backend``, the fit state ``w, best_w, final_w, state,
    _max_logdetF, history, fit_iteration, patience_counter``, the lock
    ``_fitting``, the cached ``_runner`` and ``_gradient``, the compiled
    ``_training_summaries``, and the methods ``_data(rng)`` and
    ``set_F_statistics``. Writes the fit state.
    """

    # What the object provides (declared here, set by BaseIMNN).
    runtime: Runtime
    problem: Problem
    source: Source
    kind: Kind
    executor: Executor
    validate: bool
    n_s: int
    n_d: int
    n_params: int
    n_summaries: int
    θ_fid: np.ndarray
    backend: str
    w: Weights
    best_w: Weights
    final_w: Weights
    state: Any
    _max_logdetF: float
    history: dict
    fit_iteration: int
    patience_counter: int
    _fitting: threading.Lock
    _runner: Runner | None
    _gradient: Callable | None
    _training_summaries: Callable
    _data: Callable[[Array | None], dict]
    # and the method set_F_statistics (SeedStatistics)

    def get_α(self, λ: float, ε: float) -> float:
        """Rate of the regularisation strength (``imnn.get_α``).

        Args:
            λ: regularisation coupling, a positive number with λ > 1 − ε/(1 + ε).
            ε: closeness criterion of the covariance to the identity, a positive number.

        Returns:
            α = −ln(ε(λ − 1) + ε²/(1 + ε)) / ε, a float.

        Raises:
            TypeError: λ or ε is not a real number.
            ValueError: λ or ε is not positive and finite, or λ ≤ 1 − ε/(1 + ε).
        """
        return get_α(λ, ε)

    def fit(self, λ: float, ε: float, rng: Array | None = None, patience: int = 100,
            min_iterations: int = 100, max_iterations: int = 100000,
            print_rate: int | None = None, best: bool = True, *, on_nan: str = "stop",
            resume: bool = False, callback: Callable[[Self], object] | None = None) -> Self:
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
                rare NaN simulations), with one warning at the end. Undoing an
                update in the compiled loop reruns the iterations before it in that
                call (at most 9 once one has been skipped), so very frequent
                non-finite iterations slow the fit down.
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
            self.runtime.replicate(counter) if self.runtime.traces else counter))
        chunk = min(print_rate or 100, self._runner.chunk)
        patience, max_iterations = settings.patience, settings.max_iterations
        from tqdm.auto import tqdm
        bar = tqdm(total=max_iterations, initial=self.fit_iteration, unit="it", leave=True,
                   desc=f"{type(self).__name__} fit", disable=print_rate is None)
        stopped, skipped = None, []
        rows = []   # the history rows of this call's non-finite iterations
        first_row = len(self.history["val_detF"])
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
                if bad:
                    rows.append(len(self.history["detF"]) - 1)
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
                    # A compiled loop undoes a non-finite iteration by running the ones
                    # before it in that call again: shorter calls from now on bound that.
                    chunk = min(chunk, 10)
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
        self._report_nan(skipped, rows, first_row)
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

    def _report_nan(self, skipped, rows, first_row):
        if skipped:
            warnings.warn(
                f"the loss or its gradient was not finite at {len(skipped)} iteration(s) "
                f"(first: iteration {skipped[0]}); their updates were skipped "
                "(on_nan='warn'). If this happens often, check the simulations for NaN.",
                RuntimeWarning, stacklevel=4)
        # A non-finite iteration's validation statistics are NaN too (at its NaN update,
        # then undone), and were reported above: only the others count here.
        bad = np.setdiff1d(first_row + np.flatnonzero(
            ~np.isfinite(self.history["val_detF"][first_row:])), rows)
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

    def loss_and_gradient(self, λ: float, ε: float, w: Weights | None = None,
                          rng: Array | None = None,
                          iteration: int = 0) -> tuple[LossParts, Weights]:
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


def _exp(value):
    with np.errstate(over="ignore"):
        return np.exp(np.asarray(value, np.float64))
