"""``IMNN(**kwargs)``: the IMNN class that a set of constructor arguments describes
(docs/design/behaviour.md#factory).

The data decide the family, the aggregation arguments the execution:

===============================================  ========================================
data given                                       class (``+ host, devices, n_per_device``)
===============================================  ========================================
``simulator``                                    SimulatorIMNN (AggregatedSimulatorIMNN)
``fiducial``, ``derivative`` arrays              GradientIMNN (AggregatedGradientIMNN)
the same with ``δθ``                             NumericalGradientIMNN (Aggregated…)
``main``, ``remaining`` lists of iterators       DatasetGradientIMNN (aggregation required)
``fiducial``, ``derivative`` lists of iterators  DatasetNumericalGradientIMNN (``δθ`` and
                                                 aggregation required)
===============================================  ========================================

Then every argument must be one the chosen class takes, and every argument it
requires must be there; errors name what is missing or superfluous.
"""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from . import classes, datasets

if TYPE_CHECKING:
    from ._base import BaseIMNN

AGGREGATION = ("host", "devices", "n_per_device")
DATA = ("simulator", "fiducial", "derivative", "main", "remaining")


LEADING = ("n_s", "n_d", "n_params", "n_summaries", "input_shape", "θ_fid", "model",
           "optimiser", "key_or_state")


def IMNN(*args: Any, verbose: bool = False, **kwargs: Any) -> BaseIMNN:
    """Build the IMNN class that the arguments describe (see module docstring).

    Every constructor argument may be passed by keyword, e.g.
    ``IMNN(n_s=..., n_d=..., ..., fiducial=..., derivative=..., δθ=...)``; the
    nine arguments every class shares (``n_s, n_d, n_params, n_summaries,
    input_shape, θ_fid, model, optimiser, key_or_state``) may also come first,
    by position, as in the earlier library.

    Args:
        *args: the nine shared arguments, in that order (or fewer, the rest by
            keyword).
        verbose: print which class the arguments select (default False).
        **kwargs: every other constructor argument, by keyword.

    Returns:
        An instance of the selected class (one of the eight classes in the module
        docstring's table).

    Raises:
        TypeError: unknown, missing, superfluous or contradictory arguments, or
            ``verbose`` not a bool; the chosen class's own checks raise as that class
            does.
    """
    if len(args) > len(LEADING):
        raise TypeError(f"IMNN takes at most {len(LEADING)} positional arguments "
                        f"({', '.join(LEADING)}), got {len(args)}; pass the data by keyword")
    twice = [name for name in LEADING[:len(args)] if name in kwargs]
    if twice:
        raise TypeError(f"IMNN got multiple values for {_names(twice)} (by position and by "
                        "keyword)")
    if not isinstance(verbose, bool):
        raise TypeError(f"verbose must be a bool, got {type(verbose).__name__}")
    kwargs = {**dict(zip(LEADING, args)), **kwargs}
    unknown = [name for name in kwargs if name not in _known()]
    if unknown:
        raise TypeError(f"IMNN got unknown argument(s) {_names(unknown)}: no IMNN class takes "
                        f"{'it' if len(unknown) == 1 else 'them'}")
    cls = _choose(kwargs)
    parameters = inspect.signature(cls).parameters
    superfluous = [name for name in kwargs if name not in parameters]
    if superfluous:
        raise TypeError(f"{_names(superfluous)} {_be(superfluous)} superfluous for "
                        f"{cls.__name__}, which the other arguments select"
                        + _why(superfluous, cls))
    missing = [name for name, p in parameters.items()
               if p.default is inspect.Parameter.empty and name not in kwargs]
    if missing:
        raise TypeError(f"{cls.__name__} (selected by the data given) needs "
                        f"{_names(missing)} too")
    if verbose:
        print(f"IMNN: the arguments select {cls.__name__}")
    return cls(**kwargs)


def _choose(kwargs: dict[str, Any]) -> type:
    given = [name for name in DATA if name in kwargs]
    families = {"simulator": [n for n in given if n == "simulator"],
                "arrays or iterators": [n for n in given if n in ("fiducial", "derivative")],
                "main/remaining iterators": [n for n in given if n in ("main", "remaining")]}
    present = {family: names for family, names in families.items() if names}
    if not present:
        raise TypeError("IMNN needs data: a simulator, fiducial and derivative (arrays, or "
                        "lists of iterators with δθ), or main and remaining (lists of iterators)")
    if len(present) > 1:
        raise TypeError(f"contradictory data: {' and '.join(_names(n) for n in present.values())} "
                        "select different IMNN classes; give only one of: simulator | fiducial "
                        "and derivative | main and remaining")

    aggregation = [name for name in AGGREGATION if name in kwargs]
    if aggregation and len(aggregation) < len(AGGREGATION):
        missing = [name for name in AGGREGATION if name not in kwargs]
        raise TypeError(f"{_names(aggregation)} given without {_names(missing)}: host, devices "
                        "and n_per_device go together (they select the aggregated execution)")
    aggregated = bool(aggregation)

    if "simulator" in kwargs:
        return classes.AggregatedSimulatorIMNN if aggregated else classes.SimulatorIMNN
    if "main" in kwargs or "remaining" in kwargs:
        for name in ("main", "remaining"):
            if name in kwargs and not _is_iterator_list(kwargs[name]) and kwargs[name] is not None:
                raise TypeError(f"{name} must be a list of iterators (one per device) for "
                                "DatasetGradientIMNN; arrays in memory go in fiducial and "
                                "derivative")
        _need_aggregation(aggregated, "DatasetGradientIMNN")
        return datasets.DatasetGradientIMNN

    pair = [name for name in ("fiducial", "derivative") if name not in kwargs]
    if pair:
        raise TypeError(f"fiducial and derivative go together: {_names(pair)} is missing")
    iterators = [_is_iterator_list(kwargs[name]) for name in ("fiducial", "derivative")]
    if iterators[0] != iterators[1]:
        lists, other = (("fiducial", "derivative") if iterators[0] else ("derivative", "fiducial"))
        raise TypeError(f"{lists} is a list of iterators but {other} is not: both are arrays "
                        "(in memory) or both lists of iterators (Dataset classes)")
    numerical = "δθ" in kwargs
    if iterators[0]:
        if not numerical:
            raise TypeError("fiducial and derivative lists of iterators select "
                            "DatasetNumericalGradientIMNN, which needs δθ; for exact "
                            "derivatives read from iterators pass main and remaining instead")
        _need_aggregation(aggregated, "DatasetNumericalGradientIMNN")
        return datasets.DatasetNumericalGradientIMNN
    if numerical:
        return (classes.AggregatedNumericalGradientIMNN if aggregated
                else classes.NumericalGradientIMNN)
    return classes.AggregatedGradientIMNN if aggregated else classes.GradientIMNN


CLASSES = (classes.SimulatorIMNN, classes.AggregatedSimulatorIMNN, classes.GradientIMNN,
           classes.AggregatedGradientIMNN, classes.NumericalGradientIMNN,
           classes.AggregatedNumericalGradientIMNN, datasets.DatasetGradientIMNN,
           datasets.DatasetNumericalGradientIMNN)


def _known() -> set[str]:
    return {name for cls in CLASSES for name in inspect.signature(cls).parameters}


def _need_aggregation(aggregated: bool, name: str) -> None:
    if not aggregated:
        raise TypeError(f"{name} needs host, devices and n_per_device: lists of iterators "
                        "serve one device each")


def _is_iterator_list(value: Any) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) > 0
            and all(hasattr(v, "__next__") for v in value))


def _why(superfluous: list[str], cls: type) -> str:
    hints = []
    if "δθ" in superfluous:
        hints.append("δθ is only for numerical derivatives (fiducial and derivative with "
                     "derivative of shape (n_d, 2, n_params) + input_shape)")
    if set(superfluous) & {"prefetch", "cache"}:
        hints.append("prefetch and cache belong to the Aggregated array classes")
    if set(superfluous) & {"validation_main", "validation_remaining"}:
        hints.append("validation_main and validation_remaining go with main and remaining")
    if set(superfluous) & {"validation_fiducial", "validation_derivative"}:
        hints.append("validation_fiducial and validation_derivative go with fiducial and "
                     "derivative")
    return "".join(f"; {hint}" for hint in hints)


def _names(names: list[str] | tuple[str, ...]) -> str:
    return ", ".join(names)


def _be(names: list[str]) -> str:
    return "is" if len(names) == 1 else "are"


__all__ = ["IMNN"]
