"""The method's recommended loop: fit at a fiducial, estimate the target's
parameters, refit at the estimate, and repeat."""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import numpy as np


class RefitRound(NamedTuple):
    """One round: the fiducial it was fitted at, the fitted IMNN, its estimate."""
    θ_fid: np.ndarray
    imnn: object
    estimate: np.ndarray


def fit_and_refit(make_imnn: Callable, target_data, θ_fid, n_rounds: int, λ: float, ε: float,
                  rng=None, **fit_kwargs) -> list[RefitRound]:
    """Fit at θ_fid, estimate θ̂ for ``target_data`` (one simulation), refit a
    new IMNN at θ̂ initialised from the last network, ``n_rounds`` times.

    make_imnn(θ_fid) -> an unfitted IMNN at that fiducial (e.g. a SimulatorIMNN
    with the same model and simulator; array classes make their data there).
    ``rng`` (split per round) and ``fit_kwargs`` go to every ``fit``.
    Returns the rounds; the last estimate is the final θ̂.
    """
    if not callable(make_imnn):
        raise TypeError(f"make_imnn must be a function θ_fid -> IMNN, got {type(make_imnn).__name__}")
    if isinstance(n_rounds, bool) or not isinstance(n_rounds, int) or n_rounds < 1:
        raise ValueError(f"n_rounds must be a positive integer, got {n_rounds!r}")
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
