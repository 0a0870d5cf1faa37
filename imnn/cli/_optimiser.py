"""``[optimiser]``: any optax optimiser by name, its arguments checked against its signature.

Each argument's value is checked against the optax function's annotations
(numbers where it takes numbers, ``true``/``false`` where it takes a bool, a
string only where it takes one) and must be finite; a learning rate must be
positive. ``learning_rate`` may also be a schedule, an inline table naming any
optax schedule with its keyword arguments, checked the same way::

    [optimiser]
    name = "adam"
    learning_rate = {schedule = "cosine_decay", init_value = 1e-2, decay_steps = 2000,
                     alpha = 1e-2}

(``"cosine_decay"`` and ``"cosine_decay_schedule"`` both name
``optax.cosine_decay_schedule``.)
"""
from __future__ import annotations

import collections.abc
import inspect
import math
import types
import typing

from ._errors import CommandError
from ._schema import defaults_of


def resolve(table: dict) -> dict:
    """Check an ``[optimiser]`` table and fill in its defaults (optax is imported,
    nothing is built).

    Args:
        table: the parsed ``[optimiser]`` table (possibly empty).

    Returns:
        The table with ``name`` and, if the optimiser takes one, ``learning_rate``.

    Raises:
        CommandError: naming the key whose value optax would not accept.
    """
    defaults = defaults_of("optimiser")
    table = dict(table)
    name = table.setdefault("name", defaults["name"])
    if not isinstance(name, str):
        raise CommandError(f"'optimiser.name' must be a string (an optax optimiser such as "
                           f"\"adam\"), got {type(name).__name__} {name!r}")
    factory = _optax_function(name, "optimiser.name", "optimiser")
    parameters = inspect.signature(factory).parameters
    if "learning_rate" in parameters and "learning_rate" not in table:
        table["learning_rate"] = defaults["learning_rate"]
    arguments = {k: v for k, v in table.items() if k != "name"}
    _check_arguments(factory, f"optax.{name}", arguments, "optimiser.")
    return table


def build(table: dict):
    """The optax optimiser a resolved ``[optimiser]`` table describes.

    Args:
        table: a table returned by ``resolve``.

    Returns:
        An ``optax.GradientTransformation``.

    Raises:
        CommandError: optax refused the arguments (its message, with the table named).
    """
    import optax
    name = table["name"]
    arguments = {k: v for k, v in table.items() if k != "name"}
    if isinstance(arguments.get("learning_rate"), dict):
        arguments["learning_rate"] = _schedule(arguments["learning_rate"])
    try:
        optimiser = getattr(optax, name)(**arguments)
    except (TypeError, ValueError) as error:
        raise CommandError(f"[optimiser] optax.{name}: {error}") from None
    if not all(callable(getattr(optimiser, method, None)) for method in ("init", "update")):
        raise CommandError(f"'optimiser.name': optax.{name} is not an optimiser")
    return optimiser


def _schedule(table: dict):
    name = table["schedule"]
    function = _optax_function(name, "optimiser.learning_rate.schedule", "schedule")
    arguments = {k: v for k, v in table.items() if k != "schedule"}
    if "boundaries_and_scales" in arguments:  # TOML keys are strings; optax wants steps
        arguments["boundaries_and_scales"] = {int(k): v for k, v in
                                              arguments["boundaries_and_scales"].items()}
    try:
        return function(**arguments)
    except (TypeError, ValueError) as error:
        raise CommandError(f"'optimiser.learning_rate': optax.{function.__name__}: "
                           f"{error}") from None


def _optax_function(name: str, key: str, what: str):
    import optax
    candidates = [name] + ([f"{name}_schedule"] if what == "schedule" else [])
    for candidate in candidates:
        function = getattr(optax, candidate, None)
        if not candidate.startswith("_") and inspect.isfunction(function):
            return function
    raise CommandError(f"{key!r}: optax has no {what} {name!r}")


def _check_arguments(function, where: str, arguments: dict, prefix: str) -> None:
    parameters = inspect.signature(function).parameters
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # noqa: BLE001 - annotations that do not evaluate: use the raw ones
        hints = {name: p.annotation for name, p in parameters.items()}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    for key, value in arguments.items():
        name = prefix + key
        if key not in parameters:
            if takes_any:
                continue
            raise CommandError(f"unknown key {name!r}: {where} takes "
                               f"{', '.join(parameters)}")
        annotation = hints.get(key, inspect.Parameter.empty)
        if isinstance(value, dict) and _takes_callable(annotation):
            _check_schedule(value, name)
            continue
        if not _accepts(annotation, value):
            raise CommandError(f"{name!r} must be {_expected(annotation, key)} for {where}, "
                               f"got {type(value).__name__} {value!r}")
        _check_number(value, name, learning_rate=key == "learning_rate")
    missing = [k for k, p in parameters.items() if p.default is p.empty
               and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and k not in arguments]
    if missing:
        raise CommandError(f"{prefix + missing[0]!r} is required by {where}")


def _check_schedule(table: dict, name: str) -> None:
    schedule = table.get("schedule")
    if not isinstance(schedule, str):
        raise CommandError(f"{name!r}: a schedule table needs 'schedule', the name of an optax "
                           "schedule such as \"cosine_decay\", got "
                           f"{type(schedule).__name__} {schedule!r}")
    function = _optax_function(schedule, f"{name}.schedule", "schedule")
    arguments = {k: v for k, v in table.items() if k != "schedule"}
    _check_arguments(function, f"optax.{function.__name__}", arguments, f"{name}.")
    for key, value in arguments.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise CommandError(f"'{name}.{key}' must not be negative, got {value!r}")


def _check_number(value, name: str, learning_rate: bool) -> None:
    values = value if isinstance(value, list) else [value]
    for v in values:
        if isinstance(v, float) and not math.isfinite(v):
            raise CommandError(f"{name!r} must be finite, got {value!r}")
        if learning_rate and isinstance(v, (int, float)) and not isinstance(v, bool) and v <= 0:
            raise CommandError(f"{name!r} must be positive, got {value!r}")


def _members(annotation) -> list:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return [m for a in typing.get_args(annotation) for m in _members(a)]
    return [annotation]


def _takes_callable(annotation) -> bool:
    return any(typing.get_origin(m) is collections.abc.Callable or m is collections.abc.Callable
               for m in _members(annotation))


def _accepts(annotation, value) -> bool:
    """Whether a TOML value fits a (typing) annotation; True where it cannot tell."""
    if annotation is inspect.Parameter.empty or annotation is typing.Any:
        return True
    members = [m for m in _members(annotation) if m is not type(None)]
    if any(m is typing.Any or isinstance(m, (str, typing.ForwardRef, typing.TypeVar))
           for m in members):
        return True
    if isinstance(value, bool):
        return all(m is bool for m in members)
    for m in members:
        origin = typing.get_origin(m) or m
        if isinstance(value, str) and origin is str:
            return True
        if isinstance(value, int) and origin is int:
            return True
        if isinstance(value, (int, float)) and not isinstance(value, str) and _numeric(origin):
            return True
        if isinstance(value, dict) and origin in (dict, collections.abc.Mapping):
            return True
        if isinstance(value, list) and origin in (list, tuple, collections.abc.Sequence,
                                                   collections.abc.Iterable):
            return True
        if not isinstance(origin, type):
            return True  # a typing construct this check does not know: optax decides
    return False


def _numeric(origin) -> bool:
    """Whether an annotation's member takes any number (``int`` takes only integers)."""
    if origin in (float, complex):
        return True
    module = getattr(origin, "__module__", "")
    return isinstance(origin, type) and (module.startswith(("numpy", "jax"))) and \
        origin.__name__ not in ("bool", "bool_", "dtype")


def _expected(annotation, key: str) -> str:
    members = [m for m in _members(annotation) if m is not type(None)]
    if key == "learning_rate" or _takes_callable(annotation):
        return ("a positive number or a schedule table "
                "{schedule = \"NAME\", ...} (e.g. \"cosine_decay\")")
    if members and all(m is bool for m in members):
        return "true or false"
    if members and all(m is int for m in members):
        return "an integer"
    if any(_numeric(typing.get_origin(m) or m) or m is int for m in members):
        return "a number"
    names = sorted({getattr(m, "__name__", str(m)) for m in members})
    return "a " + " or ".join(names)
