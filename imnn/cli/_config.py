"""Reading a config file, checking every value against the schema, filling in defaults.

``resolve_config`` is pure: it reads no arrays, imports no user module and
starts no JAX backend, so it can run before JAX is configured. Everything it
accepts is of the right type and in its domain; what only the built objects can
tell (a model that does not fit the data, say) is checked by ``_job.prepare``,
still before anything is written.
"""
from __future__ import annotations

import dataclasses
import math
import tomllib
from pathlib import Path

from . import _optimiser
from ._errors import CommandError
from ._schema import BACKENDS, DATA_ARRAYS, KINDS, REQUIRED, defaults_of, keys_of


def simulators() -> dict:
    """The built-in simulators by config name."""
    from imnn.simulators import GaussianMeanVariance, GaussianRandomField, GaussianVariance
    return {s.name: s for s in (GaussianMeanVariance, GaussianVariance, GaussianRandomField)}


def check_table(table: dict, schema: dict, where: str, extra: dict | None = None) -> None:
    """Every key of ``table`` known to ``schema`` (or ``extra``) and of its kind.

    Args:
        table: the parsed TOML table.
        schema: ``{key: kind}`` (kinds as in ``_schema.KINDS``).
        where: the table's prefix in error messages, ``"fit."`` or ``""``.
        extra: more ``{key: kind}`` this table accepts.

    Raises:
        CommandError: naming the first unknown key or value of the wrong kind.
    """
    schema = {**schema, **(extra or {})}
    for key, value in table.items():
        name = f"{where}{key}"
        if key not in schema:
            scope = f" in [{where[:-1]}]" if where else ""
            raise CommandError(f"unknown key {name!r} (known keys{scope}: {', '.join(schema)})")
        description, test = KINDS[schema[key]]
        if not test(value):
            raise CommandError(f"{name!r} must be {description}, got {describe(value)}")


def describe(value) -> str:
    """A value as error messages show it: its TOML-ish type and repr."""
    return f"{type(value).__name__} {value!r}"


def read_config(path: Path, max_iterations: int | None = None) -> dict:
    """Parse, check and complete a config file.

    Args:
        path: the TOML file.
        max_iterations: overrides ``fit.max_iterations`` (``--max-iterations``), before
            the default optimiser's schedule is laid over the iterations.

    Returns:
        The resolved config (every default filled in, paths absolute), as stored
        in the run directory's ``config.toml``.

    Raises:
        CommandError: the file is missing or unreadable, not TOML, or a value is wrong.
    """
    if not path.is_file():
        raise CommandError(f"config file not found: {path}")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise CommandError(f"{path} is not valid TOML: {error}") from None
    except OSError as error:
        raise CommandError(f"cannot read {path}: {error.strerror or error}") from None
    if max_iterations is not None and isinstance(raw.get("fit", {}), dict):
        raw.setdefault("fit", {})["max_iterations"] = max_iterations
    return resolve_config(raw, path.parent.resolve(), default_output=f"runs/{path.stem}")


def resolve_config(raw: dict, base: Path, default_output: str = "runs/fit") -> dict:
    """Check a parsed config and fill in its defaults; pure (reads no arrays).

    Args:
        raw: the parsed TOML.
        base: the folder relative data paths are taken from (the config's folder).
        default_output: the run directory when the config names none.

    Returns:
        The resolved config.

    Raises:
        CommandError: naming the first key whose value is wrong.
    """
    check_table(raw, keys_of(""), "")
    config = {**defaults_of(""), **{k: v for k, v in raw.items() if not isinstance(v, dict)
                                     and k != "model"}}
    config["output"] = str(Path(raw.get("output", default_output)).absolute())
    if config["backend"] not in BACKENDS:
        raise CommandError(f"'backend' must be one of {', '.join(BACKENDS)}, got "
                           f"{config['backend']!r}")
    if "devices" in config and "n_per_device" not in config:
        raise CommandError("'devices' needs 'n_per_device': the Aggregated classes summarise "
                           "n_per_device simulations at a time on each of the devices")
    config["model"] = _resolve_model(raw)
    fit = raw.get("fit", {})
    check_table(fit, keys_of("fit"), "fit.")
    config["fit"] = {**defaults_of("fit"), **fit}
    _check_regularisation(config["fit"]["lambda"], config["fit"]["epsilon"])
    # No [optimiser]: the measured default (imnn.optimisers.default_optimiser), Adam whose
    # rate decays along a cosine over the fit's iterations, written out as a schedule table.
    config["optimiser"] = _optimiser.resolve(raw.get("optimiser") or _default_optimiser(
        config["fit"]["max_iterations"]))
    sources = [name for name in ("simulator", "data") if name in raw]
    if not sources:
        raise CommandError("missing [simulator] or [data]: say where the simulations come "
                           "from (a built-in simulator name, 'module:function', or .npy/.npz "
                           "files)")
    if len(sources) == 2:
        raise CommandError("give [simulator] or [data], not both")
    if sources == ["simulator"]:
        config["simulator"] = _resolve_simulator(raw["simulator"])
    else:
        config["data"] = _resolve_data(raw["data"], base)
    return config


def _resolve_model(raw: dict):
    if "model" not in raw:
        raise CommandError("missing 'model': a list of layer tables such as "
                           '[{type = "Dense", features = 128}, {type = "Elu"}, ...], or '
                           "'module:function' returning a model")
    model = raw["model"]
    if isinstance(model, str):
        _module_function(model, "model")
        return model
    from imnn.persistence import model_from_tables, model_to_tables
    try:
        return model_to_tables(model_from_tables(model))
    except (ValueError, TypeError) as error:
        message = str(error)
        raise CommandError(message if message.startswith("model") else
                           f"'model': {message}") from None


def _module_function(name: str, key: str) -> None:
    module, _, function = name.partition(":")
    if not (module and function and all(part.isidentifier() for part in module.split("."))
            and function.isidentifier()):
        raise CommandError(f"{key!r} must be 'module:function' (a module on the path and a "
                           f"function in it), got {name!r}")


def _check_regularisation(λ: float, ε: float) -> None:
    # The regularisation rate α(λ, ε) = −ln(ε(λ − 1) + ε²/(1 + ε)) / ε needs a
    # positive argument; checked here so that the fit cannot fail on it later.
    try:
        argument = ε * (λ - 1.0) + ε * (ε / (1.0 + ε))
    except OverflowError:
        argument = math.inf
    if not (argument > 0 and math.isfinite(argument)):
        raise CommandError(f"'fit.lambda' = {λ} and 'fit.epsilon' = {ε} admit no "
                           f"regularisation rate: ε(λ − 1) + ε²/(1 + ε) = {argument:.4g} must "
                           "be positive and finite (choose lambda > 1 − ε/(1 + ε), e.g. the "
                           "defaults lambda = 10, epsilon = 0.1)")


def _resolve_simulator(table: dict) -> dict:
    name = table.get("name")
    if not isinstance(name, str):
        raise CommandError("'simulator.name' is required: one of "
                           f"{', '.join(simulators())} or 'module:function'")
    built_in = simulators().get(name)
    arguments = {}
    if built_in is not None:
        arguments = {f.name: "positive int" for f in dataclasses.fields(built_in)
                     if f.name != "θ_fid"}
    elif ":" not in name:
        raise CommandError(f"'simulator.name' must be one of {', '.join(simulators())} or "
                           f"'module:function', got {name!r}")
    else:
        _module_function(name, "simulator.name")
    check_table(table, keys_of("simulator"), "simulator.", arguments)
    for key in ("n_s",) + (() if built_in is not None else ("theta_fid",)):
        if key not in table:
            what = ("the number of simulations per iteration" if key == "n_s"
                    else f"the fiducial parameters of the simulator {name!r}")
            raise CommandError(f"'simulator.{key}' is required: {what}")
    n_d = table.get("n_d", table["n_s"])
    if n_d > table["n_s"]:
        raise CommandError(f"'simulator.n_d' = {n_d} must not exceed 'simulator.n_s' = "
                           f"{table['n_s']} (the derivatives are taken at n_d of the n_s "
                           "fiducial seeds)")
    return {**table, "n_d": n_d}


def _resolve_data(table: dict, base: Path) -> dict:
    check_table(table, keys_of("data"), "data.")
    if "theta_fid" not in table:
        raise CommandError("'data.theta_fid' is required: the fiducial parameters")
    if "delta_theta" in table and len(table["delta_theta"]) != len(table["theta_fid"]):
        raise CommandError(f"'data.delta_theta' needs one step per parameter: "
                           f"{len(table['theta_fid'])} values like theta_fid, got "
                           f"{len(table['delta_theta'])}")
    files = [name for name in DATA_ARRAYS if name in table]
    if ("file" in table) == bool(files):
        raise CommandError("[data] needs either 'file' (an .npz holding arrays "
                           f"{', '.join(DATA_ARRAYS)}) or .npy files 'fiducial' and "
                           "'derivative' (and optionally the validation ones), one of the two")
    for pair in (("fiducial", "derivative"), ("validation_fiducial", "validation_derivative")):
        given = [name for name in pair if name in table]
        if len(given) == 1:
            missing = pair[1 - pair.index(given[0])]
            raise CommandError(f"'data.{given[0]}' needs 'data.{missing}' too")
    resolved = dict(table)
    for name in ["file"] + files:
        if name in table:
            path = (base / table[name]).resolve()
            if not path.is_file():
                raise CommandError(f"'data.{name}': file not found: {path}")
            resolved[name] = str(path)
    return resolved


__all__ = ["read_config", "resolve_config", "check_table", "simulators", "REQUIRED"]


def _default_optimiser(max_iterations: int) -> dict:
    """The ``[optimiser]`` table of :func:`imnn.optimisers.default_optimiser`."""
    from imnn.optimisers import DEMO_RECIPE
    recipe = dataclasses.replace(DEMO_RECIPE, max_iterations=max_iterations)
    return recipe.optimiser_table()
