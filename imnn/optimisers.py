"""Optimisers: optax GradientTransformations, or the legacy
``(init, update, get_params)`` triple of ``jax.example_libraries.optimizers``.

Both are adapted to one pure interface, :class:`imnn.contracts.Optimiser`:
``init(w) -> state`` and ``update(grads, state, w) -> (new_w, new_state)``,
so the fit loop never asks which kind it was given.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from .contracts import Optimiser


class LegacyState(NamedTuple):
    """State of a legacy optimiser: its step count and its own state."""
    step: Any
    inner: Any


def as_optimiser(optimiser) -> Optimiser:
    """Adapt a user's optimiser; raise TypeError for anything else."""
    if _is_optax(optimiser):
        import optax

        def update(grads, state, w):
            updates, state = optimiser.update(grads, state, w)
            return optax.apply_updates(w, updates), state

        return Optimiser(optimiser.init, update)
    if _is_legacy_triple(optimiser):
        legacy_init, legacy_update, get_params = optimiser

        def init(w):
            return LegacyState(0, legacy_init(w))

        def update(grads, state, w):
            inner = legacy_update(state.step, grads, state.inner)
            return get_params(inner), LegacyState(state.step + 1, inner)

        return Optimiser(init, update)
    raise TypeError(
        "optimiser must be an optax.GradientTransformation (e.g. optax.adam(1e-3)) or the "
        "(init, update, get_params) triple of jax.example_libraries.optimizers, got "
        f"{type(optimiser).__name__}")


def _is_optax(obj) -> bool:
    return callable(getattr(obj, "init", None)) and callable(getattr(obj, "update", None))


def _is_legacy_triple(obj) -> bool:
    return isinstance(obj, tuple) and len(obj) == 3 and all(callable(f) for f in obj)
