"""imnn.nn models as lists of JSON/TOML tables, one per layer: how an .imnn file
and a command-line config describe a model, e.g.
``[{"type": "Dense", "features": 128}, {"type": "Elu", "alpha": 1.0}]``."""
from __future__ import annotations

import math

from . import nn

# type -> (builder, {argument: (kind, default)}); kinds are checked by _argument.
_REQUIRED = object()
_LAYERS = {
    "Dense": (nn.Dense, {"features": ("int", _REQUIRED)}),
    "Conv": (nn.Conv, {"features": ("int", _REQUIRED), "kernel": ("ints", _REQUIRED),
                       "strides": ("ints", None), "padding": ("str", "SAME")}),
    "Reshape": (lambda shape: nn.Reshape(tuple(shape)), {"shape": ("ints", _REQUIRED)}),
    "Flatten": (lambda: nn.Flatten, {}),
    "Tanh": (lambda: nn.Tanh, {}),
    "Relu": (lambda: nn.Relu, {}),
    "Softplus": (lambda: nn.Softplus, {}),
    "Sigmoid": (lambda: nn.Sigmoid, {}),
    "Elu": (nn.Elu, {"alpha": ("number", 1.0)}),
    "LeakyRelu": (nn.LeakyRelu, {"negative_slope": ("number", 0.01)}),
}
_ACTIVATION_TYPES = {"tanh": "Tanh", "relu": "Relu", "softplus": "Softplus",
                     "sigmoid": "Sigmoid", "elu": "Elu", "leaky_relu": "LeakyRelu"}


def model_to_tables(model) -> list[dict]:
    """An imnn.nn model as a list of JSON/TOML tables, one per layer.

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
    tables = []
    for layer in nn.layers_of(model):
        if isinstance(layer, nn.Dense):
            tables.append({"type": "Dense", "features": layer.features})
        elif isinstance(layer, nn.Conv):
            tables.append({"type": "Conv", "features": layer.features,
                           "kernel": list(layer.kernel), "strides": list(layer.strides),
                           "padding": layer.padding})
        elif isinstance(layer, nn.Activation):
            table = {"type": _ACTIVATION_TYPES[layer.name]}
            if layer.name == "elu":
                table["alpha"] = layer.parameter
            elif layer.name == "leaky_relu":
                table["negative_slope"] = layer.parameter
            tables.append(table)
        elif isinstance(layer, nn.FlattenLayer):
            tables.append({"type": "Flatten"})
        else:
            tables.append({"type": "Reshape", "shape": list(layer.shape)})
    return tables


def model_from_tables(tables, where: str = "model") -> nn.Serial:
    """The imnn.nn model described by ``model_to_tables``'s list of tables.

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
    layers = []
    for i, table in enumerate(tables):
        at = f"{where}[{i}]"
        if not isinstance(table, dict):
            raise ValueError(f"{at} must be a table such as {{type = \"Dense\", features = 128}}, "
                             f"got {type(table).__name__}")
        kind = table.get("type")
        if kind not in _LAYERS:
            raise ValueError(f"{at}.type must be one of {', '.join(_LAYERS)}, got {kind!r}")
        builder, arguments = _LAYERS[kind]
        unknown = sorted(set(table) - set(arguments) - {"type"})
        if unknown:
            known = ", ".join(arguments) or "none"
            raise ValueError(f"{at}: unknown key {unknown[0]!r} for a {kind} layer "
                             f"(its keys: {known})")
        values = {}
        for name, (argument_kind, default) in arguments.items():
            if name in table:
                values[name] = _argument(f"{at}.{name}", table[name], argument_kind)
            elif default is _REQUIRED:
                raise ValueError(f"{at}: a {kind} layer needs {name!r}")
            else:
                values[name] = default
        try:
            layers.append(builder(**values))
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
