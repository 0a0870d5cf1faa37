"""The method's recommended loop: fit at a fiducial, estimate the target's
parameters, refit at the estimate, and repeat."""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from imnn._checks import positive_integer
from imnn._types import ArrayLike, Key


class RefitRound(NamedTuple):
    """One round of `fit_and_refit`.

    Attributes:
        θ_fid: (p,) the fiducial parameters the round's IMNN was fitted at.
        imnn: the fitted IMNN.
        estimate: (p,) its estimate θ̂ of the target's parameters.
    """
    θ_fid: np.ndarray
    imnn: object
    estimate: np.ndarray


def fit_and_refit(make_imnn: Callable[[np.ndarray], Any], target_data: ArrayLike,
                  θ_fid: ArrayLike, n_rounds: int, λ: float, ε: float, rng: Key | None = None,
                  **fit_kwargs: Any) -> list[RefitRound]:
    """Fit at θ_fid, estimate θ̂ for ``target_data`` (one simulation), refit a
    new IMNN at θ̂ initialised from the last network, ``n_rounds`` times.

    Args:
        make_imnn: `make_imnn(θ_fid)` -> an unfitted IMNN at that fiducial (e.g. a
            SimulatorIMNN with the same model and simulator; array classes make their data
            there).
        target_data: one simulation, of the IMNNs' input_shape.
        θ_fid: (p,) the first fiducial parameters.
        n_rounds: the number of fits (>= 1).
        λ: the regularisation strength of every fit.
        ε: the covariance tolerance of every fit.
        rng: None (default) or a JAX PRNG key, split once per round, for every `fit`
            (simulator classes need it).
        **fit_kwargs: further keyword arguments of every `fit` (patience, ...).

    Returns:
        The rounds, in order; the last one's estimate is the final θ̂.

    Raises:
        TypeError: `make_imnn` not callable.
        ValueError: `n_rounds` not a positive int, or `target_data` not one simulation.
    """
    if not callable(make_imnn):
        raise TypeError(f"make_imnn must be a function θ_fid -> IMNN, got {type(make_imnn).__name__}")
    n_rounds = positive_integer("n_rounds", n_rounds)
    θ = np.asarray(θ_fid, np.float64)
    rounds, previous = [], None
    keys = [None] * n_rounds if rng is None else list(jax.random.split(rng, n_rounds))
    for key in keys:
        model = make_imnn(θ)
        if previous is not None:
            model.initialise_from(previous)
        model.fit(λ, ε, rng=key, **fit_kwargs)
        estimate = np.asarray(model.get_estimate(target_data), np.float64)
        if estimate.shape != θ.shape:
            raise ValueError(f"target_data must be one simulation: its estimate has shape "
                             f"{estimate.shape}, expected {θ.shape}")
        rounds.append(RefitRound(θ, model, estimate))
        θ, previous = estimate, model
    return rounds
