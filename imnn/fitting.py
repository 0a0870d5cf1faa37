"""The fit, built only from the backend contracts.

``fit_step`` is one iteration (docs/design/behaviour.md#iteration) written once: the JAX
backend compiles it (one compiled call per iteration, ``run_loop``); the reference backends run
it as it is. The early-stopping bookkeeping is a pure function of (state,
ln det F, iteration) for the same reason.
"""
from __future__ import annotations

import math
import warnings
from functools import partial
from typing import Any, Callable, NamedTuple

import numpy as np
from jax import tree_util

from ._checks import positive_number
from .contracts import Executor, LossParts, Optimiser, Streams, Summaries

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
    """Early-stopping state: the best criterion ln det F, the weights at which
    it was measured, and the patience counter."""
    max_logdetF: Any
    best_w: Any
    patience_counter: Any


def update_stopping(state: Stopping, logdetF, w_measured, i, min_iterations, where) -> Stopping:
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


def keep_going(state: Stopping, i, patience, max_iterations):
    """Whether iteration ``i`` (0-based, within this fit call) should run."""
    return (state.patience_counter < patience) & (i < max_iterations)


# --- one iteration -----------------------------------------------------------------

class Carry(NamedTuple):
    """What one iteration hands the next."""
    w: Any
    opt_state: Any
    stopping: Stopping


class Record(NamedTuple):
    """The statistics of one iteration (training at w_i, validation at w_{i+1}).

    ``finite``: whether the training loss and its weight gradient were finite;
    when not, the iteration's update was not applied and the loop stops there.
    """
    train: LossParts
    validation: LossParts | None
    finite: Any


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


def loss_and_gradient(executor, w, streams, sizes, λ, α) -> tuple[LossParts, Any]:
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


def stream_summaries(executor, w, streams, sizes) -> dict[str, Summaries]:
    """Pass 1 only: the summaries of every stream that holds simulations."""
    return {name: executor.summaries(w, inputs, with_derivative)
            for name, (inputs, with_derivative) in streams.items() if sizes[name]}


def summaries_of(executor, w, streams, sizes) -> Summaries:
    """Pass 1 only: the assembled summaries of every stream."""
    return executor.backend.assemble(executor.kind, stream_summaries(executor, w, streams, sizes))


def weight_gradient(executor, w, streams, sizes, cotangents: dict[str, Summaries]):
    """Pass 2 only: Σ over streams and batches of the VJP of ``w ↦ stream
    summaries`` with that stream's cotangents (``cotangents[name]``, shaped like
    the stream's summaries). An executor with a ``pullback(w, inputs,
    with_derivative)`` method skips pass 1; otherwise pass 1's outputs are
    computed and dropped (a compiler removes them)."""
    gradients = []
    for name, (inputs, with_derivative) in streams.items():
        if sizes[name]:
            pullback = getattr(executor, "pullback", None)
            pullback = (pullback(w, inputs, with_derivative) if pullback is not None else
                        executor.summaries_and_pullback(w, inputs, with_derivative)[1])
            gradients.append(pullback(cotangents[name]))
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


def fit_step(problem: Problem, carry: Carry, i, data, λ, α, min_iterations):
    """One iteration: summaries, loss and gradient at w_i, the optimiser update
    to w_{i+1}, validation statistics at w_{i+1}, early stopping. Returns (next
    carry, Record). A non-finite loss or gradient leaves the weights and the
    optimiser state as they were (an update from it would make every weight NaN)."""
    ex = problem.executor
    parts, grads = loss_and_gradient(
        ex, carry.w, problem.training_streams(data, i), problem.sizes, λ, α)
    finite = all_finite(parts.Λ, grads)
    w_next, opt_state = problem.optimiser.update(grads, carry.opt_state, carry.w)
    w_next, opt_state = tree_util.tree_map(
        lambda new, old: problem.where(finite, new, old), (w_next, opt_state),
        (carry.w, carry.opt_state))
    if problem.validation_streams is None:
        validation, criterion, w_measured = None, parts.logdetF, carry.w
    else:
        s = summaries_of(ex, w_next, problem.validation_streams(data), problem.sizes)
        validation = ex.backend.loss(s.x, s.dx_dθ, λ, α)
        criterion, w_measured = validation.logdetF, w_next
    stopping = update_stopping(carry.stopping, criterion, w_measured, i, min_iterations,
                               problem.where)
    return Carry(w_next, opt_state, stopping), Record(parts, validation, finite)


# --- running iterations without a compiler ----------------------------------------------

class LoopExecutor:
    """Runs streams batch by batch with a Python loop (the reference backends).

    Stream inputs carry two leading axes (n_batches, batch) on every leaf.
    """

    def __init__(self, backend, network, kind):
        self.backend, self.network, self.kind = backend, network, kind

    def _batches(self, inputs):
        n = tree_util.tree_leaves(inputs)[0].shape[0]
        return [tree_util.tree_map(lambda a: a[b], inputs) for b in range(n)]  # noqa: B023 - called at once

    def summaries(self, w, inputs, with_derivative) -> Summaries:
        parts = [self.backend.batch_summaries(self.network, w, self.kind, batch, with_derivative)
                 for batch in self._batches(inputs)]
        return Summaries(np.concatenate([p.x for p in parts]),
                         np.concatenate([p.dx_dθ for p in parts]) if with_derivative else None)

    def summaries_and_pullback(self, w, inputs, with_derivative):
        return (self.summaries(w, inputs, with_derivative),
                self.pullback(w, inputs, with_derivative))

    def pullback(self, w, inputs, with_derivative):
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


def fit_step_and_keep_going(problem: Problem, carry: Carry, i, data, λ, α, min_iterations,
                            patience, max_iterations):
    """``fit_step``, and whether iteration i + 1 should run: decided with the step,
    so that a compiled step hands back a single flag. A non-finite iteration ends
    the run there, so that the caller decides what follows (``fit(on_nan=...)``)."""
    carry, record = fit_step(problem, carry, i, data, λ, α, min_iterations)
    return carry, record, keep_going(carry.stopping, i + 1, patience, max_iterations) & \
        record.finite


def run_loop(problem: Problem, carry: Carry, data, λ, α, min_iterations, patience,
             max_iterations, start, n_steps, step=None):
    """Run iterations start, start+1, … (at most n_steps) while keep_going.

    ``step``: ``fit_step_and_keep_going`` with ``problem`` bound (the default),
    or a compiled version of it (the JAX backend).
    Returns (carry, list of Records, number of iterations run)."""
    step = step or partial(fit_step_and_keep_going, problem)
    records, i = [], start
    going = bool(keep_going(carry.stopping, i, patience, max_iterations))
    while going and i < start + n_steps:
        carry, record, going = step(carry, i, data, λ, α, min_iterations, patience,
                                    max_iterations)
        records.append(record)
        i, going = i + 1, bool(going)
    return carry, records, i - start
