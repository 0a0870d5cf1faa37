"""Writing a resolved config back as TOML (the standard library reads TOML but
does not write it; ``tomllib.loads(to_toml(config)) == config``)."""
from __future__ import annotations

import json
import re


def to_toml(config: dict) -> str:
    """A resolved config as TOML text.

    Args:
        config: top-level scalars, ``model`` (a list of tables or a string) and
            tables of scalars, lists and inline tables.

    Returns:
        The TOML text; ``tomllib.loads`` gives ``config`` back.

    Raises:
        TypeError: a value TOML cannot hold (None, an object).
    """
    lines = []
    for key, value in config.items():
        if key == "model" and isinstance(value, list):
            lines += ["model = ["] + [f"  {_value(layer)}," for layer in value] + ["]"]
        elif not isinstance(value, dict):
            lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in config.items():
        if isinstance(value, dict):
            lines += ["", f"[{_key(key)}]"]
            lines += [f"{_key(k)} = {_value(v)}" for k, v in value.items()]
    return "\n".join(lines) + "\n"


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # inf, nan and 1e-05 are TOML too
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as TOML")
