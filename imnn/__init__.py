"""imnn: information maximising neural networks.

Networks that compress simulations to summaries carrying the most Fisher
information about a model's parameters, for simulation-based inference.
"""
from __future__ import annotations

from . import nn
from ._compilation import enable_compilation_cache
from ._factory import IMNN
from ._fitting import get_α
from .classes import (
    AggregatedGradientIMNN,
    AggregatedNumericalGradientIMNN,
    AggregatedSimulatorIMNN,
    GradientIMNN,
    NumericalGradientIMNN,
    SimulatorIMNN,
)
from .datasets import DatasetGradientIMNN, DatasetNumericalGradientIMNN
from .persistence import load, save
from .utils import value_and_jacfwd, value_and_jacrev

__version__ = "1.0.0"

_LAZY = {"TFRecords": ("tfrecords", "TFRecords")}


def __getattr__(name):
    # TensorFlow-backed pieces load on first use, so `import imnn` stays fast.
    if name in _LAZY:
        import importlib
        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attribute)
    raise AttributeError(f"module 'imnn' has no attribute {name!r}")


__all__ = ["nn", "SimulatorIMNN", "AggregatedSimulatorIMNN", "GradientIMNN",
           "AggregatedGradientIMNN", "NumericalGradientIMNN",
           "AggregatedNumericalGradientIMNN", "DatasetGradientIMNN",
           "DatasetNumericalGradientIMNN", "IMNN", "get_α", "value_and_jacfwd",
           "value_and_jacrev", "TFRecords", "save", "load", "enable_compilation_cache"]
