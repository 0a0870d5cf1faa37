"""imnn.nn models as lists of JSON/TOML tables, one per layer: how an .imnn file
and a command-line config describe a model, e.g.
``[{"type": "Dense", "features": 128}, {"type": "Elu", "alpha": 1.0}]``."""
from __future__ import annotations

import math

from . import nn


def _table_types() -> dict[str, tuple[type[nn.Layer], nn.TableArguments]]:
    """{table type name: (the layer class, its arguments)} over every imnn.nn layer class."""
    return {name: (cls, arguments) for cls in nn.LAYER_CLASSES
            for name, arguments in cls.table_arguments.items()}


def model_to_tables(model: nn.Serial | nn.Layer) -> list[dict]:
    """An imnn.nn model as a list of JSON/TOML tables, one per layer (``Layer.to_table``).

    Args:
        model: an imnn.nn model (``imnn.nn.serial(...)`` or one layer).

    Returns:
        One table per layer, e.g. ``[{"type": "Dense", "features": 128},
        {"type": "Elu", "alpha": 1.0}]``.

    Raises:
        TypeError: ``model`` is not an imnn.nn model.
    """
    if not nn.is_model(model):
        raise TypeError("only imnn.nn models (built with imnn.nn.serial) can be described "
                        f"as tables, got {type(model).__name__}")
    return [layer.to_table() for layer in nn.layers_of(model)]


def model_from_tables(tables: list[dict], where: str = "model") -> nn.Serial:
    """The imnn.nn model described by ``model_to_tables``'s list of tables: each table's
    arguments checked against its layer class's ``table_arguments``, then built by the
    class's ``from_table``.

    Args:
        tables: a list of layer tables.
        where: how errors name the list (``where[i].key``).

    Returns:
        The model, an ``imnn.nn.Serial``.

    Raises:
        ValueError: an unknown layer type or argument, a missing argument or a
            wrong type, naming the offending entry.
    """
    if not isinstance(tables, list) or not tables:
        raise ValueError(f"{where} must be a non-empty list of layer tables such as "
                         '{type = "Dense", features = 128}')
    types = _table_types()
    layers = []
    for i, table in enumerate(tables):
        at = f"{where}[{i}]"
        if not isinstance(table, dict):
            raise ValueError(f"{at} must be a table such as {{type = \"Dense\", features = 128}}, "
                             f"got {type(table).__name__}")
        kind = table.get("type")
        if not isinstance(kind, str) or kind not in types:
            raise ValueError(f"{at}.type must be one of {', '.join(types)}, got {kind!r}")
        cls, arguments = types[kind]
        unknown = sorted(set(table) - set(arguments) - {"type"})
        if unknown:
            known = ", ".join(arguments) or "none"
            raise ValueError(f"{at}: unknown key {unknown[0]!r} for a {kind} layer "
                             f"(its keys: {known})")
        values = {}
        for name, (argument_kind, default) in arguments.items():
            if name in table:
                values[name] = _argument(f"{at}.{name}", table[name], argument_kind)
            elif default is nn.REQUIRED:
                raise ValueError(f"{at}: a {kind} layer needs {name!r}")
            else:
                values[name] = default
        try:
            layers.append(cls.from_table(kind, values))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{at}: {error}") from None
    return nn.serial(*layers)


def _argument(at, value, kind):
    if kind == "int" and not (isinstance(value, int) and not isinstance(value, bool)):
        raise ValueError(f"{at} must be an integer, got {type(value).__name__} {value!r}")
    if kind == "number" and (isinstance(value, bool) or not isinstance(value, (int, float))
                             or not math.isfinite(value)):
        raise ValueError(f"{at} must be a finite number, got {type(value).__name__} {value!r}")
    if kind == "str" and not isinstance(value, str):
        raise ValueError(f"{at} must be a string, got {type(value).__name__} {value!r}")
    if kind == "ints":
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                 for v in values):
            raise ValueError(f"{at} must be a positive integer or a list of positive integers, "
                             f"got {value!r}")
        return tuple(values)
    return float(value) if kind == "number" else value
