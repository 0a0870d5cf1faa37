"""The float64 Numba reference backend: the NumPy reference's structure with
compiled kernels for convolutions and activations."""
from typing import final

from imnn.reference.numpy import ReferenceBackend

from ._kernels import NUMBA_KERNELS


@final
class NumbaBackend(ReferenceBackend):
    """The float64 reference backend with Numba-compiled kernels."""
    name = "numba"
    kernels = NUMBA_KERNELS


__all__ = ["NumbaBackend", "NUMBA_KERNELS"]
