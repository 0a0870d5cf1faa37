"""What ABC and PMC share: targets, distances, and simulating-then-compressing."""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from imnn._types import Array, ArrayLike, Compressor, Key, Simulator
from imnn.lfi._priors import Prior, as_prior


class Problem(NamedTuple):
    """An inference problem, checked once at construction (``make_problem``).

    prior:            the Prior (see imnn.lfi.Prior).
    simulator:        simulator(key, θ (p,)) -> one simulation of shape input_shape.
    compressor:       compressor(d (n,) + input_shape) -> summaries (n, s).
    target_summaries: (n_targets, s) compressed target data.
    metrics:          (n_targets, s, s) the metric of the default distance (F, or identity).
    distance:         distance(summaries (n, s), target (s,), metric (s, s)) -> (n,).
    """
    prior: Prior
    simulator: Simulator
    compressor: Compressor
    target_summaries: Array
    metrics: Array
    distance: Callable[[Array, Array, Array], Array]


def fisher_distance(summaries: Array, target: Array, metric: Array) -> Array:
    """sqrt((x − x_t)ᵀ F (x − x_t)) for each row x of summaries (n, s) -> (n,)."""
    δ = summaries - target
    return jnp.sqrt(jnp.maximum(jnp.einsum("ni,ij,nj->n", δ, metric, δ), 0.))


def make_problem(target_data: ArrayLike, prior: Any, simulator: Simulator,
                 compressor: Compressor, F: ArrayLike | None = None,
                 distance_measure: Callable[[Array, Array], Array] | None = None) -> Problem:
    """Checks the arguments of ABC and PMC and compresses the target data.

    Args:
        target_data: input_shape (one target) or (n_targets,) + input_shape, where
            input_shape is the shape of ``simulator(key, θ)``.
        prior: what ``imnn.lfi.as_prior`` accepts.
        simulator: ``simulator(key, θ (p,))`` -> one simulation; JAX-traceable.
        compressor: ``compressor(d (n,) + input_shape)`` -> (n, s); JAX-traceable.
        F: None (default), (s, s) or (n_targets, s, s), symmetric positive definite.
        distance_measure: None (default) or
            ``distance_measure(summaries (n, s), target (s,))`` -> (n,). The distance is
            sqrt((x − x_t)ᵀ F (x − x_t)) with F given, Euclidean with neither.

    Returns:
        The checked ``Problem``, with the target summaries (n_targets, s).

    Raises:
        ValueError: shapes that do not fit together, an F that is not symmetric positive
            definite, or both F and distance_measure.
        TypeError: a prior that is not what ``imnn.lfi.as_prior`` accepts.
    """
    prior = as_prior(prior)
    p = prior.low.shape[0]
    simulation = jax.eval_shape(simulator, jax.random.PRNGKey(0), jnp.zeros(p))
    input_shape = simulation.shape
    target_data = jnp.asarray(target_data)
    if target_data.shape == input_shape:
        target_data = target_data[None]
    elif target_data.ndim != len(input_shape) + 1 or target_data.shape[1:] != input_shape:
        raise ValueError(
            f"`target_data` must have the shape of one simulation {input_shape} or "
            f"(n_targets,) + {input_shape}; got {target_data.shape}")
    target_summaries = compressor(target_data)
    if target_summaries.ndim != 2 or target_summaries.shape[0] != target_data.shape[0]:
        raise ValueError(
            f"`compressor` must map data (n,) + {input_shape} to summaries (n, s); it gave "
            f"{target_summaries.shape} for data {target_data.shape}")
    n_targets, s = target_summaries.shape
    if F is not None and distance_measure is not None:
        raise ValueError("give `F` (Fisher distance) or `distance_measure`, not both: a custom "
                         "distance can close over F itself")
    metrics = np.broadcast_to(np.eye(s), (n_targets, s, s)) if F is None else _check_F(F, n_targets, s)
    if distance_measure is None:
        distance = fisher_distance
    else:
        def distance(summaries: Array, target: Array, metric: Array) -> Array:
            return distance_measure(summaries, target)
    return Problem(prior, simulator, compressor, target_summaries, jnp.asarray(metrics), distance)


def _check_F(F: ArrayLike, n_targets: int, s: int) -> np.ndarray:
    F = np.asarray(F, float)
    if F.shape == (s, s):
        F = np.broadcast_to(F, (n_targets, s, s))
    elif F.shape != (n_targets, s, s):
        raise ValueError(f"`F` must have shape ({s}, {s}) or ({n_targets}, {s}, {s}) to match "
                         f"the {s} summaries of {n_targets} target(s); got {F.shape}")
    if not (np.allclose(F, np.swapaxes(F, -1, -2)) and np.all(np.linalg.eigvalsh(F) > 0)):
        raise ValueError("`F` must be symmetric positive definite")
    return F


def simulate(problem: Problem, key: Key, θ: Array) -> Array:
    """θ (n, p) -> summaries (n, s) of one simulation at each θ, with keys split from key."""
    simulations = jax.vmap(problem.simulator)(jax.random.split(key, θ.shape[0]), θ)
    return problem.compressor(simulations)


def distances(problem: Problem, summaries: Array) -> Array:
    """summaries (n, s) -> (n_targets, n) distances to every target."""
    return jax.vmap(problem.distance, (None, 0, 0))(
        summaries, problem.target_summaries, problem.metrics)


def draw_from_prior(problem: Problem, key: Key, n: int) -> tuple[Array, Array, Array]:
    """n prior draws -> parameters (n, p), summaries (n, s), distances (n_targets, n)."""
    key_prior, key_simulate = jax.random.split(key)
    θ = problem.prior.sample(key_prior, n)
    summaries = simulate(problem, key_simulate, θ)
    return θ, summaries, distances(problem, summaries)
