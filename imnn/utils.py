"""Utilities the seed's examples import."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax


def _value_and_jacobian(jacobian_transform: Callable[..., Callable]
                        ) -> Callable[..., Callable[..., tuple]]:
    def transform(f: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False,
                  holomorphic: bool = False) -> Callable[..., tuple]:
        # The value rides along as auxiliary output of the one linearisation
        # (jvp for jacfwd, vjp for jacrev) that builds the Jacobian.
        def with_value(*args: Any) -> tuple:
            out = f(*args)
            return (out[0], out) if has_aux else (out, out)

        jacobian = jacobian_transform(with_value, argnums=argnums, has_aux=True,
                                      holomorphic=holomorphic)

        def wrapped(*args: Any) -> tuple:
            jac, out = jacobian(*args)
            return (out[0], jac, out[1]) if has_aux else (out, jac)
        return wrapped
    return transform


value_and_jacfwd = _value_and_jacobian(jax.jacfwd)
value_and_jacfwd.__doc__ = """f's value and its forward-mode Jacobian from one linearisation (a jvp).

Args:
    f: the function to differentiate; its outputs are arrays (a pair ``(out, aux)`` with
        ``has_aux``).
    argnums: the positional argument(s) to differentiate with respect to, an int or a
        tuple of ints, as for ``jax.jacfwd`` (default 0).
    has_aux: whether ``f`` returns ``(out, aux)``; ``aux`` is passed through undifferentiated
        (default False).
    holomorphic: whether ``f`` is holomorphic (complex inputs and outputs; default False).

Returns:
    A function of ``f``'s arguments returning ``(value, jacobian)``, or
    ``(value, jacobian, aux)`` with ``has_aux``; ``jacobian`` has shape
    ``value.shape + argument.shape`` (a tuple of such with a tuple ``argnums``).
"""

value_and_jacrev = _value_and_jacobian(jax.jacrev)
value_and_jacrev.__doc__ = """f's value and its reverse-mode Jacobian from one linearisation (a vjp).

Args:
    f: the function to differentiate; its outputs are arrays (a pair ``(out, aux)`` with
        ``has_aux``).
    argnums: the positional argument(s) to differentiate with respect to, an int or a
        tuple of ints, as for ``jax.jacrev`` (default 0).
    has_aux: whether ``f`` returns ``(out, aux)``; ``aux`` is passed through undifferentiated
        (default False).
    holomorphic: whether ``f`` is holomorphic (complex inputs and outputs; default False).

Returns:
    A function of ``f``'s arguments returning ``(value, jacobian)``, or
    ``(value, jacobian, aux)`` with ``has_aux``; ``jacobian`` has shape
    ``value.shape + argument.shape`` (a tuple of such with a tuple ``argnums``).
"""

__all__ = ["value_and_jacfwd", "value_and_jacrev"]
