"""The configuration file's keys: one table of every key's kind, default and meaning.

Everything else reads this table: the checks (``_config``), the defaults filled
into a resolved config, and the config reference in the documentation. A kind
is a description (used in error messages: "'fit.patience' must be a positive
integer") and a test of the value's type and domain.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

from imnn._runtime import BACKENDS  # the one registry of backend names


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(v) -> bool:
    return _is_number(v) and math.isfinite(v)


class Kind(NamedTuple):
    """A kind of config value: how errors describe it and how it is tested."""
    description: str
    test: Callable[[Any], bool]


# Seeds: PRNGKey(seed) initialises the network and PRNGKey(seed + 1) draws the
# simulations, so seed + 1 must still be a 64-bit signed integer.
MAX_SEED = 2 ** 63 - 2

KINDS = {
    "str": Kind("a string", lambda v: isinstance(v, str) and v != ""),
    "bool": Kind("true or false", lambda v: isinstance(v, bool)),
    "seed": Kind(f"an integer from 0 to 2**63 - 2 ({MAX_SEED})",
                 lambda v: _is_int(v) and 0 <= v <= MAX_SEED),
    "positive int": Kind("a positive integer", lambda v: _is_int(v) and v > 0),
    "non-negative int": Kind("a non-negative integer", lambda v: _is_int(v) and v >= 0),
    "positive number": Kind("a positive finite number", lambda v: _finite(v) and v > 0),
    "numbers": Kind("a non-empty list of finite numbers",
                    lambda v: isinstance(v, list) and v != [] and all(_finite(x) for x in v)),
    "positive numbers": Kind("a non-empty list of positive finite numbers",
                             lambda v: isinstance(v, list) and v != []
                             and all(_finite(x) and x > 0 for x in v)),
    "table": Kind("a table", lambda v: isinstance(v, dict)),
    "model": Kind("a list of layer tables or a 'module:function' string",
                  lambda v: (isinstance(v, list) and all(isinstance(x, dict) for x in v))
                  or (isinstance(v, str) and ":" in v)),
    "optimiser argument": Kind("a value optax accepts", lambda v: True),  # checked by _config
}

REQUIRED = "required"
TABLES = ("simulator", "data", "optimiser", "fit")
DATA_ARRAYS = ("fiducial", "derivative", "validation_fiducial", "validation_derivative")


class Key(NamedTuple):
    """One config key.

    Attributes:
        name: its dotted name, ``"fit.lambda"`` for ``lambda`` in ``[fit]``.
        kind: a name in ``KINDS``.
        default: the value filled in when the key is absent; ``REQUIRED`` when
            it must be given; ``None`` when absent means "not used"; a string
            in angle brackets describes a default computed from other keys.
        help: what it means, for the documentation.
    """
    name: str
    kind: str
    default: Any
    help: str


SCHEMA: tuple[Key, ...] = (
    Key("output", "str", "<runs/CONFIG-NAME>",
        "run directory, relative to the working directory"),
    Key("seed", "seed", 0, "PRNGKey(seed) initialises the network, PRNGKey(seed + 1) "
        "draws the simulations"),
    Key("backend", "str", "jax", f"one of {', '.join(BACKENDS)}"),
    Key("x64", "bool", False, "JAX in float64"),
    Key("checkpoint_every", "positive int", 100, "iterations between checkpoints"),
    Key("devices", "positive int", None, "with n_per_device: the Aggregated class over this "
        "many devices (default: all JAX sees)"),
    Key("n_per_device", "positive int", None, "simulations per device per batch; selects the "
        "Aggregated class"),
    Key("model", "model", REQUIRED, "imnn.nn layer tables in order, or 'module:function' "
        "returning a model"),
    Key("simulator", "table", None, "where simulations come from (or [data])"),
    Key("data", "table", None, "simulations in .npy/.npz files (or [simulator])"),
    Key("optimiser", "table", None, "an optax optimiser and its keyword arguments (absent: "
        "Adam along a cosine from 1e-2 to 1e-4 over fit.max_iterations)"),
    Key("fit", "table", None, "the fit's settings"),

    Key("simulator.name", "str", REQUIRED, "a built-in simulator or 'module:function' "
        "with signature simulator(key, θ) -> one simulation"),
    Key("simulator.n_s", "positive int", REQUIRED, "simulations per iteration"),
    Key("simulator.n_d", "positive int", "<n_s>", "of which with derivatives"),
    Key("simulator.theta_fid", "numbers", "<the built-in's>", "fiducial parameters "
        "(required for 'module:function')"),

    Key("data.file", "str", None, "an .npz holding fiducial, derivative and optionally "
        "validation_fiducial, validation_derivative"),
    Key("data.fiducial", "str", None, ".npy (n_s,) + input_shape"),
    Key("data.derivative", "str", None, ".npy (n_d, n_params) + input_shape, or "
        "(n_d, 2, n_params) + input_shape with delta_theta"),
    Key("data.validation_fiducial", "str", None, ".npy, as fiducial"),
    Key("data.validation_derivative", "str", None, ".npy, as derivative"),
    Key("data.theta_fid", "numbers", REQUIRED, "fiducial parameters"),
    Key("data.delta_theta", "positive numbers", None, "finite-difference steps: the "
        "derivatives are simulations at θ_fid ∓ δθ/2 (NumericalGradientIMNN)"),

    Key("optimiser.name", "str", "adam", "an optax optimiser"),
    Key("optimiser.learning_rate", "optimiser argument", 1e-3,
        "a positive number, or a schedule table {schedule = \"NAME\", ...}"),

    Key("fit.lambda", "positive number", 10.0, "λ, the regularisation strength"),
    Key("fit.epsilon", "positive number", 0.1, "ε, the covariance tolerance"),
    Key("fit.patience", "positive int", 100, "iterations without a new maximum of det F "
        "before stopping"),
    Key("fit.min_iterations", "non-negative int", 100, "iterations before early stopping "
        "may stop the fit"),
    Key("fit.max_iterations", "positive int", 100000, "the most iterations"),
    Key("fit.best", "bool", True, "keep the weights of the best det F (false: the last "
        "iteration's)"),
)

BY_NAME = {key.name: key for key in SCHEMA}


def keys_of(table: str) -> dict[str, str]:
    """``{key: kind}`` for the keys of one table (``""`` for the top level)."""
    prefix = f"{table}." if table else ""
    return {key.name[len(prefix):]: key.kind for key in SCHEMA
            if key.name.startswith(prefix) and "." not in key.name[len(prefix):]}


def defaults_of(table: str) -> dict[str, Any]:
    """The concrete defaults of one table's keys (computed and absent ones left out)."""
    prefix = f"{table}." if table else ""
    defaults = {}
    for name in keys_of(table):
        default = BY_NAME[prefix + name].default
        if default not in (REQUIRED, None) and not (isinstance(default, str)
                                                     and default.startswith("<")):
            defaults[name] = default
    return defaults


# Keys of [fit] (and checkpoint_every) that a resumed fit may take from an edited
# config.toml: they change when the fit stops or is saved, not what it computes.
RESUMABLE_CHANGES = ("checkpoint_every", "fit.patience", "fit.min_iterations",
                     "fit.max_iterations")
