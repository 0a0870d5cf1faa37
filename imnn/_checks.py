"""Argument checks shared by the modules of imnn.

Every check raises before any work starts, names the argument and says what was
expected. The wording differs between families of arguments (the messages are
part of the tested behaviour), so each family has its own function here; a module
that needs a check imports it from this module rather than writing its own or
borrowing another module's private helper.
"""
from __future__ import annotations

import math
import numbers

import numpy as np


def is_int(value: object) -> bool:
    """Whether ``value`` is an integer (Python or NumPy), booleans excluded.

    Args:
        value: any object.

    Returns:
        True for ``int`` and ``numpy.integer`` values other than ``bool`` and
        ``numpy.bool_``, False otherwise.
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def positive_int(name: str, value: object, minimum: int = 1) -> int:
    """A size or count given to an IMNN class or its ``fit``.

    Args:
        name: the argument's name, used in the message.
        value: the value given.
        minimum: the smallest value allowed: 1 (default; a positive integer) or 0 (a
            non-negative integer).

    Returns:
        ``value`` as a Python ``int``.

    Raises:
        TypeError: ``value`` is not an ``int`` or ``numpy.integer`` (or is a bool).
        ValueError: ``value`` is below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{name} must be a {kind} integer, got {value}")
    return int(value)


def positive_integer(name: str, value: object) -> int:
    """A positive integer setting (layer widths, numbers of rounds), refused
    with a ValueError whatever is wrong.

    Args:
        name: the argument's name, used in the message.
        value: the value given.

    Returns:
        ``value`` as a Python ``int``.

    Raises:
        ValueError: ``value`` is not an ``int``/``numpy.integer`` of at least 1
            (booleans are refused).
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def int_at_least(name: str, value: object, minimum: int) -> int:
    """An integer with a lower bound (a simulator's size), refused with a
    ValueError whatever is wrong.

    Args:
        name: the argument's name, used in the message.
        value: the value given.
        minimum: the smallest value allowed.

    Returns:
        ``value`` as a Python ``int``.

    Raises:
        ValueError: ``value`` is not an ``int``/``numpy.integer`` (or is a bool),
            or is below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def quoted_int(name: str, value: object, minimum: int) -> int:
    """An integer with a lower bound, the argument's name quoted in back-ticks
    (the TFRecords writer's wording).

    Args:
        name: the argument's name, used in the message.
        value: the value given.
        minimum: the smallest value allowed.

    Returns:
        ``value`` as a Python ``int``.

    Raises:
        TypeError: ``value`` is not an integer (see ``is_int``).
        ValueError: ``value`` is below ``minimum``.
    """
    if not is_int(value):
        raise TypeError(f"`{name}` must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be at least {minimum}, got {value}")
    return int(value)


def quoted_bool(name: str, value: object) -> bool:
    """A flag, the argument's name quoted in back-ticks.

    Args:
        name: the argument's name, used in the message.
        value: the value given.

    Returns:
        ``value`` as a Python ``bool``.

    Raises:
        TypeError: ``value`` is not a ``bool`` or ``numpy.bool_``.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a bool, got {value!r}")
    return bool(value)


def positive_ints(**values: object) -> None:
    """Several positive integer settings of an LFI method at once.

    Args:
        **values: the arguments by name, e.g. ``n_samples=1000``.

    Raises:
        ValueError: a value is not an ``int``/``numpy.integer`` of at least 1
            (booleans are refused).
    """
    for name, value in values.items():
        if isinstance(value, (bool, np.bool_)) or not (
                isinstance(value, (int, np.integer)) and value > 0):
            raise ValueError(f"`{name}` must be a positive int; got {value!r}")


def positive_number(name: str, value: object) -> float:
    """A positive finite real number (a rate or a scale).

    Args:
        name: the argument's name, used in the message.
        value: the value given.

    Returns:
        ``value`` as a Python ``float``.

    Raises:
        TypeError: ``value`` is not a real number (or is a bool).
        ValueError: ``value`` is not finite or not above 0.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a positive number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def positive_entry(argument: str, what: str, value: float) -> None:
    """One entry of a parameter vector that must be above 0 (a variance, an
    amplitude).

    Args:
        argument: the argument holding the vector, e.g. ``"θ"``.
        what: the entry in words, e.g. ``"σ² = θ[1]"``.
        value: the entry's value (a scalar).

    Raises:
        ValueError: ``value`` is not above 0 (NaN included).
    """
    if not value > 0:
        raise ValueError(f"{argument}: {what} must be positive, got {value}")
