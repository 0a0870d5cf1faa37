"""The float64 NumPy reference backend (independent of the JAX numerics).

``NumpyBackend`` implements imnn.contracts.Backend for imnn.nn models with
hand-derived forward, forward-mode and reverse-mode passes. ``ReferenceBackend``
and ``Kernels`` are the structure other reference backends complete.
"""
from ._backend import NumpyBackend, ReferenceBackend
from ._kernels import NUMPY_KERNELS, Kernels

__all__ = ["NumpyBackend", "ReferenceBackend", "Kernels", "NUMPY_KERNELS"]
