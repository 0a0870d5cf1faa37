"""The six IMNN classes whose data are made by a simulator or held in memory,
re-exported under the module path earlier code imports them from.

Each class is one choice of *data source* (simulator, arrays, iterators) ×
*derivative kind* (exact chain rule, seed-matched finite difference, through a
simulator) × *execution* (in memory, or aggregated over devices), handed to
``BaseIMNN`` (``imnn._base``), which fits through the backend contracts. The
simulator classes are written in ``imnn._simulator_classes``, the array classes
in ``imnn._array_classes``, the two that read iterators in ``imnn.datasets``.
"""
from __future__ import annotations

from ._array_classes import (
    AggregatedGradientIMNN,
    AggregatedNumericalGradientIMNN,
    GradientIMNN,
    NumericalGradientIMNN,
)
from ._simulator_classes import AggregatedSimulatorIMNN, SimulatorIMNN

__all__ = ["SimulatorIMNN", "AggregatedSimulatorIMNN", "GradientIMNN",
           "AggregatedGradientIMNN", "NumericalGradientIMNN",
           "AggregatedNumericalGradientIMNN"]
