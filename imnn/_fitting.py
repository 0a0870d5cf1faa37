"""The fit, built only from the backend contracts.

``fit_step`` is one iteration (docs/design/behaviour.md#iteration) written once: the JAX
backend compiles it (a loop of iterations on the device, or one compiled call per iteration,
``run_loop``); the reference backends run it as it is. The early-stopping bookkeeping is a
pure function of (state, ln det F, iteration) for the same reason.

What is static about a fit (the executor, the optimiser, the streams) is a ``Problem``,
closed over once by whoever builds the loop (``build_step``, a runtime's ``make_runner``);
the numbers of one ``fit`` call are one ``FitSettings`` value, a pytree of scalars, so a
compiled loop takes them as traced arguments and a second fit with another λ, patience or
budget compiles nothing. A loop of iterations is a ``Runner``.
"""
from __future__ import annotations

import math
import warnings
from functools import partial
from typing import Any, Callable, NamedTuple

import numpy as np
from jax import tree_util

from ._checks import positive_number
from .contracts import (
    Array,
    Backend,
    Executor,
    Kind,
    LossParts,
    Network,
    Optimiser,
    Streams,
    Summaries,
    Weights,
)

# --- the regularisation rate ---------------------------------------------------

def get_α(λ: float, ε: float) -> float:
    """The rate α of the regulariser's strength, α(λ, ε) = −ln(ε(λ − 1) + ε²/(1 + ε)) / ε.

    Chosen so that when the covariance is ε away from the identity (Λ2 = ε) the
    regularisation strength is λ / (λ + ε/(1 + ε))
    (docs/design/behaviour.md#regulariser).

    Args:
        λ: regularisation coupling, a positive number with λ > 1 − ε/(1 + ε); 10 is a
            common choice.
        ε: closeness criterion of the covariance to the identity, a positive number,
            e.g. 0.1.

    Returns:
        α, a float. It is negative when λ or ε is so large that ε(λ − 1) + ε²/(1 + ε) > 1
        (a RuntimeWarning says so: the regulariser would then fade when it is most needed).

    Raises:
        TypeError: λ or ε is not a real number.
        ValueError: λ or ε is not positive and finite, or λ ≤ 1 − ε/(1 + ε) (no rate exists).
    """
    λ, ε = positive_number("λ", λ), positive_number("ε", ε)
    argument = ε * (λ - 1.0) + ε ** 2 / (1.0 + ε)
    if argument <= 0.0:
        raise ValueError(
            f"no regularisation rate exists for λ={λ} and ε={ε}: ε(λ − 1) + ε²/(1 + ε) = "
            f"{argument:.4g} must be positive (choose λ > 1 − ε/(1 + ε))")
    α = -math.log(argument) / ε
    if α < 0.0:
        warnings.warn(
            f"the regularisation rate α = {α:.4g} is negative for λ={λ}, ε={ε}: the "
            "regulariser then fades exactly when the covariance is far from identity; "
            "choose a smaller λ or ε", RuntimeWarning, stacklevel=2)
    return α


# --- early stopping --------------------------------------------------------------

class Stopping(NamedTuple):
    """Early-stopping state: the best criterion ln det F (a scalar), the weights at
    which it was measured (a pytree like w), and the patience counter (an integer scalar)."""
    max_logdetF: Array
    best_w: Weights
    patience_counter: Array


def update_stopping(state: Stopping, logdetF: Array, w_measured: Weights, i: Array,
                    min_iterations: Array, where: Callable) -> Stopping:
    """Early stopping (docs/design/behaviour.md#early-stopping): strictly greater criterion
    → reset the counter and remember the weights it was measured at; otherwise count once
    past ``min_iterations``. ``where`` is the backend's elementwise select (np.where or
    jnp.where)."""
    improved = logdetF > state.max_logdetF
    return Stopping(
        where(improved, logdetF, state.max_logdetF),
        tree_util.tree_map(lambda new, old: where(improved, new, old), w_measured, state.best_w),
        where(improved, 0, where(i > min_iterations, state.patience_counter + 1,
                                 state.patience_counter)))


def keep_going(state: Stopping, i: Array, patience: Array, max_iterations: Array) -> Array:
    """Whether iteration ``i`` (0-based, within this fit call) should run (a boolean scalar)."""
    return (state.patience_counter < patience) & (i < max_iterations)


# --- one iteration -----------------------------------------------------------------

class FitSettings(NamedTuple):
    """The numbers of one ``fit`` call, handed to the loop as one value.

    A pytree of scalars: a compiled loop takes it as a traced argument, so fits with
    other values compile nothing new. Plain Python numbers are fine (each runner casts
    them to the types its compiled loop was built with).

    λ: regularisation coupling (float).
    α: regularisation rate (float, ``get_α(λ, ε)``).
    min_iterations: iterations before patience starts counting (int ≥ 0).
    patience: iterations without improvement that end the fit (int ≥ 1).
    max_iterations: the fit's iteration budget, counted from the fit's first
        iteration (int ≥ 1).
    """
    λ: float | Array
    α: float | Array
    min_iterations: int | Array
    patience: int | Array
    max_iterations: int | Array


class Carry(NamedTuple):
    """What one iteration hands the next: the weights (a pytree), the optimiser
    state (a pytree) and the early-stopping state."""
    w: Weights
    opt_state: Any
    stopping: Stopping


class Record(NamedTuple):
    """The statistics of one iteration (training at w_i, validation at w_{i+1}).

    ``finite``: whether the training loss and its weight gradient were finite;
    when not, the iteration's update was not applied and the loop stops there.
    """
    train: LossParts
    validation: LossParts | None
    finite: Array


class Problem(NamedTuple):
    """Everything static about a fit.

    executor: runs streams through the network (see ``LoopExecutor``)
    optimiser: an imnn.contracts.Optimiser
    sizes: number of simulations per stream
    training_streams(data, i) -> {name: (inputs, with_derivative)}
    validation_streams(data) -> same, or None without validation
    where: elementwise select of the backend's array library
    """
    executor: Executor
    optimiser: Optimiser
    sizes: dict[str, int]
    training_streams: Callable[[dict, Any], Streams]
    validation_streams: Callable[[dict], Streams] | None
    where: Callable


class Runner(NamedTuple):
    """A fit's loop of iterations, built once per ``Problem`` by a runtime's
    ``make_runner``, which closes over the static choices (the problem, where the
    iterations loop, how many one call may run).

    run: ``run(carry, data, settings, start, n_steps) -> (carry, records, n)`` runs
        iterations start, start + 1, … while early stopping and the budget allow, at
        most ``n_steps`` (≤ ``chunk``) of them, and stops after a non-finite one.
        ``carry`` is a ``Carry``, ``data`` what the source's ``data`` returned,
        ``settings`` a ``FitSettings``, ``start`` the index of the first iteration,
        counted from the fit's first. A non-finite iteration is the last it runs, and its
        update is undone (``undo_update``). It returns the next ``Carry``, the n iterations'
        ``Record`` as NumPy arrays with a leading axis of length n (None when n is 0),
        and n, an int.
    loop: where the iterations loop: ``"device"`` (one compiled loop per call),
        ``"host"`` (one compiled call per iteration) or ``"python"`` (nothing compiled
        as a whole).
    chunk: the most iterations one call of ``run`` may run.
    compiled: the jitted function, or None where nothing is compiled as a whole. For
        ``"device"`` it is the whole run and takes ``run``'s arguments; for ``"host"``
        it is one iteration, ``step(carry, i, data, settings)`` (``build_step``).
    """
    run: Callable[[Carry, dict, FitSettings, int, int], tuple[Carry, Record | None, int]]
    loop: str
    chunk: int
    compiled: Callable | None = None

    def programs(self) -> int:
        """How many programs ``compiled`` holds (traced and compiled for distinct argument
        types): 1 after any number of fits that compiled once; 0 where nothing compiles."""
        return 0 if self.compiled is None else self.compiled._cache_size()


def loss_and_gradient(executor: Executor, w: Weights, streams: Streams, sizes: dict[str, int],
                      λ: Array, α: Array) -> tuple[LossParts, Weights]:
    """Two passes: summaries of every stream (pass 1), the loss and its
    cotangents on the small gathered summaries, then one VJP per batch (pass 2)."""
    outputs, pullbacks = {}, {}
    for name, (inputs, with_derivative) in streams.items():
        if sizes[name]:
            outputs[name], pullbacks[name] = executor.summaries_and_pullback(
                w, inputs, with_derivative)
    backend, kind = executor.backend, executor.kind
    summaries = backend.assemble(kind, outputs)
    parts, cotangents = backend.loss_and_cotangents(summaries.x, summaries.dx_dθ, λ, α)
    stream_cotangents = backend.assemble_transpose(kind, cotangents, sizes)
    gradients = [pullbacks[name](stream_cotangents[name]) for name in pullbacks]
    return parts, tree_util.tree_map(lambda *g: sum(g[1:], g[0]), *gradients)


def stream_summaries(executor: Executor, w: Weights, streams: Streams, sizes: dict[str, int]
                     ) -> dict[str, Summaries]:
    """Pass 1 only: the summaries of every stream that holds simulations."""
    return {name: executor.summaries(w, inputs, with_derivative)
            for name, (inputs, with_derivative) in streams.items() if sizes[name]}


def summaries_of(executor: Executor, w: Weights, streams: Streams, sizes: dict[str, int]
                 ) -> Summaries:
    """Pass 1 only: the assembled summaries of every stream."""
    return executor.backend.assemble(executor.kind, stream_summaries(executor, w, streams, sizes))


def weight_gradient(executor: Executor, w: Weights, streams: Streams, sizes: dict[str, int],
                    cotangents: dict[str, Summaries]) -> Weights:
    """Pass 2 only: Σ over streams and batches of the VJP of ``w ↦ stream
    summaries`` with that stream's cotangents (``cotangents[name]``, shaped like
    the stream's summaries), through the executor's ``pullback``: an executor
    that can skip pass 1 does; otherwise pass 1's outputs are computed and
    dropped (a compiler removes them)."""
    gradients = []
    for name, (inputs, with_derivative) in streams.items():
        if sizes[name]:
            gradients.append(executor.pullback(w, inputs, with_derivative)(cotangents[name]))
    return tree_util.tree_map(lambda *g: sum(g[1:], g[0]), *gradients)


def all_finite(*trees):
    """Whether every number in the trees is finite, with only array operators
    (so the same code serves NumPy and traced JAX arrays): x·0 is 0 exactly
    when x is finite, and NaN otherwise."""
    total = 0
    for tree in trees:
        for leaf in tree_util.tree_leaves(tree):
            total = total + (leaf * 0).sum()
    return total == 0


def undo_update(before: Carry, after: Carry) -> Carry:
    """The carry that follows a non-finite iteration: the weights and optimiser state
    from ``before`` it (an update from a non-finite gradient would make every weight
    NaN), the early-stopping state from ``after`` it (the iteration counts as no
    improvement).

    ``fit_step`` applies every update; the runner, which stops after a non-finite
    iteration, undoes that last one (``run_loop`` keeps the carry from before it; the
    JAX device loop runs the iterations before it again). A select of every weight and
    optimiser leaf inside the loop body instead made the compiler copy the optimiser's
    update into each select and cost 0.15 CPU s of the first fit's compile
    (docs/performance/compilation.md).
    """
    return Carry(before.w, before.opt_state, after.stopping)


def fit_step(problem: Problem, carry: Carry, i: Array, data: dict, settings: FitSettings
             ) -> tuple[Carry, Record]:
    """One iteration: summaries, loss and gradient at w_i, the optimiser update
    to w_{i+1}, validation statistics at w_{i+1}, early stopping. Returns (next
    carry, Record).

    The update is applied whatever the numbers; ``Record.finite`` says whether the loss
    and gradient were finite, and the runner then keeps the weights and optimiser state
    from before a non-finite iteration (``undo_update``; ``fit_step_and_keep_going``
    stops there). Early stopping counts such an iteration as no improvement: its
    validation statistics, at the NaN weights, are NaN.
    """
    ex, λ, α = problem.executor, settings.λ, settings.α
    parts, grads = loss_and_gradient(
        ex, carry.w, problem.training_streams(data, i), problem.sizes, λ, α)
    finite = all_finite(parts.Λ, grads)
    w_next, opt_state = problem.optimiser.update(grads, carry.opt_state, carry.w)
    if problem.validation_streams is None:
        validation, criterion, w_measured = None, parts.logdetF, carry.w
    else:
        s = summaries_of(ex, w_next, problem.validation_streams(data), problem.sizes)
        validation = ex.backend.loss(s.x, s.dx_dθ, λ, α)
        criterion, w_measured = validation.logdetF, w_next
    stopping = update_stopping(carry.stopping, criterion, w_measured, i,
                               settings.min_iterations, problem.where)
    return Carry(w_next, opt_state, stopping), Record(parts, validation, finite)


# --- running iterations without a compiler ----------------------------------------------

class LoopExecutor:
    """Runs streams batch by batch with a Python loop (the reference backends).

    Stream inputs carry two leading axes (n_batches, batch) on every leaf.
    """

    def __init__(self, backend: Backend, network: Network, kind: Kind):
        self.backend, self.network, self.kind = backend, network, kind

    def _batches(self, inputs):
        n = tree_util.tree_leaves(inputs)[0].shape[0]
        return [tree_util.tree_map(lambda a: a[b], inputs) for b in range(n)]  # noqa: B023 - called at once

    def summaries(self, w: Weights, inputs: Any, with_derivative: bool) -> Summaries:
        parts = [self.backend.batch_summaries(self.network, w, self.kind, batch, with_derivative)
                 for batch in self._batches(inputs)]
        return Summaries(np.concatenate([p.x for p in parts]),
                         np.concatenate([p.dx_dθ for p in parts]) if with_derivative else None)

    def summaries_and_pullback(self, w: Weights, inputs: Any, with_derivative: bool
                               ) -> tuple[Summaries, Callable[[Summaries], Weights]]:
        return (self.summaries(w, inputs, with_derivative),
                self.pullback(w, inputs, with_derivative))

    def pullback(self, w: Weights, inputs: Any, with_derivative: bool
                 ) -> Callable[[Summaries], Weights]:
        """Pass 2 of one stream: cotangents (n, …) -> Σ_batches VJP, a pytree like w."""
        batches = self._batches(inputs)

        def pullback(cotangents: Summaries):
            total, start = None, 0
            for batch in batches:
                n = tree_util.tree_leaves(batch)[0].shape[0]
                ct = Summaries(cotangents.x[start:start + n],
                               None if cotangents.dx_dθ is None
                               else cotangents.dx_dθ[start:start + n])
                g = self.backend.batch_weight_gradient(
                    self.network, w, self.kind, batch, with_derivative, ct)
                total = g if total is None else tree_util.tree_map(np.add, total, g)
                start += n
            return total

        return pullback

    def keep_within(self, memory_budget: int | None, sizes: dict[str, int]) -> int | None:
        """Nothing is kept between the passes (pass 2 recomputes every batch):
        ``memory_budget`` comes back unchanged."""
        return memory_budget


def fit_step_and_keep_going(problem: Problem, carry: Carry, i: Array, data: dict,
                            settings: FitSettings) -> tuple[Carry, Record, Array]:
    """``fit_step``, and whether iteration i + 1 should run: decided with the step,
    so that a compiled step hands back a single flag. A non-finite iteration ends
    the run there, so that the caller decides what follows (``fit(on_nan=...)``)."""
    carry, record = fit_step(problem, carry, i, data, settings)
    return carry, record, keep_going(carry.stopping, i + 1, settings.patience,
                                     settings.max_iterations) & record.finite


def build_step(problem: Problem) -> Callable[[Carry, Array, dict, FitSettings],
                                             tuple[Carry, Record, Array]]:
    """``step(carry, i, data, settings) -> (carry, record, keep going)``:
    ``fit_step_and_keep_going`` with the static ``problem`` closed over, the function a
    runtime compiles (or runs as it is)."""
    return partial(fit_step_and_keep_going, problem)


def run_loop(step: Callable[[Carry, Array, dict, FitSettings], tuple[Carry, Record, Array]],
             carry: Carry, data: dict, settings: FitSettings, start: int, n_steps: int
             ) -> tuple[Carry, list[Record], int]:
    """Run iterations start, start+1, … (at most n_steps) while keep_going, from Python;
    after a non-finite iteration (the last one run) the weights and optimiser state are
    those from before it (``undo_update``).

    Args:
        step: ``build_step(problem)``, or a compiled version of it (the JAX backend).
        carry: the state before iteration ``start``.
        data: what the source's ``data`` returned.
        settings: the fit's numbers.
        start: the fit's iteration index of the first iteration.
        n_steps: the most iterations to run.

    Returns:
        (carry, list of Records, number of iterations run).
    """
    records, i = [], start
    going = bool(keep_going(carry.stopping, i, settings.patience, settings.max_iterations))
    while going and i < start + n_steps:
        before = carry
        carry, record, going = step(carry, i, data, settings)
        records.append(record)
        i, going = i + 1, bool(going)
        if not going and not bool(record.finite):
            carry = undo_update(before, carry)
    return carry, records, i - start
