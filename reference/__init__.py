"""Reference backends in float64: ``imnn.reference.numpy`` and ``imnn.reference.numba``."""
