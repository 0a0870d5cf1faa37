"""Type aliases shared by imnn's public signatures.

They document what a value is; nothing checks them at run time. Every module that uses them
starts with ``from __future__ import annotations``, so annotations cost nothing at import.
This module imports only JAX and NumPy, which ``import imnn`` loads anyway.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

Array = jax.Array | np.ndarray
"""A JAX or NumPy array (what imnn returns and what its numerics read)."""

ArrayLike = Array | np.generic | bool | int | float | Sequence[Any]
"""Anything ``numpy.asarray`` turns into a numeric array: an array, a NumPy scalar, a Python
number or a (nested) sequence of them. Arguments typed this way are converted on entry."""

PyTree = Any
"""A pytree of arrays: the network weights (for ``imnn.nn`` models a list with one tuple of
arrays per layer, ``()`` for a layer without weights) or an optimiser's state."""

Weights = PyTree
"""Network weights, a pytree of arrays (see ``PyTree``)."""

Key = jax.Array
"""A JAX PRNG key: a raw ``(2,)`` uint32 key (``jax.random.PRNGKey``) or a typed key array
(``jax.random.key``)."""

Shape = tuple[int, ...]
"""The shape of one simulation, without a batch axis."""

Simulator = Callable[[Key, Array], Array]
"""``simulator(key, θ (p,)) -> d`` of shape ``input_shape``; JAX-traceable."""

Compressor = Callable[[Array], Array]
"""``compressor(d (n,) + input_shape) -> summaries (n, s)``; JAX-traceable."""

__all__ = ["Array", "ArrayLike", "PyTree", "Weights", "Key", "Shape", "Simulator", "Compressor"]
