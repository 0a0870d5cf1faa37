"""The ``imnn`` command line.

    imnn demo                    fit the mean/variance toy problem (no files needed)
    imnn fit CONFIG.toml         fit what a TOML file describes, into a run directory
    imnn fit --resume RUN        carry on an interrupted fit exactly where it stopped
    imnn estimate RUN DATA.npy   score-compressed estimates θ̂, one per simulation
    imnn info RUN                the run's IMNN, statistics and history
    imnn lfi RUN TARGET.npy      Gaussian-approximation posterior mean and std

A run directory holds ``config.toml`` (the configuration as run, overrides and
defaults included), ``checkpoint.imnn`` (weights, optimiser state, RNG key,
history and, once fitted, the statistics: ``imnn.load`` reads it),
``checkpoint.prev.imnn`` (the previous good checkpoint), and after the fit
``history.npz``, ``history.png`` and ``summary.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import inspect
import io
import json
import math
import os
import re
import signal
import sys
import threading
import time
import tomllib
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

EXIT_ERROR = 1
EXIT_USAGE = 2
CHECKPOINT, PREVIOUS = "checkpoint.imnn", "checkpoint.prev.imnn"


class CommandError(Exception):
    """A problem the user can fix: printed as one line on stderr, no traceback."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


# --- the configuration file ------------------------------------------------------------
# Kinds of values: a config is checked against these before anything runs, and
# every error names its key.

def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


KINDS = {
    "str": ("a string", lambda v: isinstance(v, str)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "int": ("an integer", _is_int),
    "positive int": ("a positive integer", lambda v: _is_int(v) and v > 0),
    "non-negative int": ("a non-negative integer", lambda v: _is_int(v) and v >= 0),
    "positive number": ("a positive number", lambda v: _is_number(v) and v > 0),
    "numbers": ("a list of numbers", lambda v: isinstance(v, list) and v != []
                and all(_is_number(x) for x in v)),
    "table": ("a table", lambda v: isinstance(v, dict)),
    "tables": ("a list of tables", lambda v: isinstance(v, list)
               and all(isinstance(x, dict) for x in v)),
}
BACKENDS = ("jax", "numpy", "numba")
TOP = {"output": "str", "seed": "int", "backend": "str", "x64": "bool",
       "checkpoint_every": "positive int", "devices": "positive int",
       "n_per_device": "positive int", "model": "tables", "simulator": "table",
       "data": "table", "optimiser": "table", "fit": "table"}
FIT = {"lambda": "positive number", "epsilon": "positive number", "patience": "positive int",
       "min_iterations": "non-negative int", "max_iterations": "positive int"}
FIT_DEFAULTS = {"lambda": 10.0, "epsilon": 0.1, "patience": 100, "min_iterations": 100,
                "max_iterations": 100000}
SIMULATOR = {"name": "str", "n_s": "positive int", "n_d": "positive int",
             "theta_fid": "numbers"}
DATA_ARRAYS = ("fiducial", "derivative", "validation_fiducial", "validation_derivative")
DATA = {"file": "str", **{name: "str" for name in DATA_ARRAYS}, "theta_fid": "numbers",
        "delta_theta": "numbers"}


def _simulators():
    from imnn.simulators import GaussianMeanVariance, GaussianRandomField, GaussianVariance
    return {s.name: s for s in (GaussianMeanVariance, GaussianVariance, GaussianRandomField)}


def _check(table: dict, schema: dict, where: str, extra: dict | None = None) -> None:
    """Every key of ``table`` known to ``schema`` (or ``extra``) and of its kind."""
    schema = {**schema, **(extra or {})}
    for key, value in table.items():
        name = f"{where}{key}"
        if key not in schema:
            scope = f" in [{where[:-1]}]" if where else ""
            raise CommandError(f"unknown key {name!r} (known keys{scope}: {', '.join(schema)})")
        description, test = KINDS[schema[key]]
        if not test(value):
            raise CommandError(f"{name!r} must be {description}, got {type(value).__name__} "
                               f"{value!r}")


def read_config(path: Path) -> dict:
    """Parse, check and complete a config file: the resolved config (every
    default filled in, paths absolute), as stored in the run directory."""
    if not path.is_file():
        raise CommandError(f"config file not found: {path}")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise CommandError(f"{path} is not valid TOML: {error}") from None
    return resolve_config(raw, path.parent.resolve(), default_output=f"runs/{path.stem}")


def resolve_config(raw: dict, base: Path, default_output: str = "runs/fit") -> dict:
    """Check a parsed config and fill in its defaults; pure (reads no arrays)."""
    _check(raw, TOP, "")
    config = {"output": str(Path(raw.get("output", default_output)).absolute()),
              "seed": raw.get("seed", 0), "backend": raw.get("backend", "jax"),
              "x64": raw.get("x64", False), "checkpoint_every": raw.get("checkpoint_every", 100)}
    if config["backend"] not in BACKENDS:
        raise CommandError(f"'backend' must be one of {', '.join(BACKENDS)}, got "
                           f"{config['backend']!r}")
    config.update({key: raw[key] for key in ("devices", "n_per_device") if key in raw})
    if "devices" in config and "n_per_device" not in config:
        raise CommandError("'devices' needs 'n_per_device': the Aggregated classes summarise "
                           "n_per_device simulations at a time on each of the devices")
    if "model" not in raw:
        raise CommandError("missing 'model': a list of layer tables such as "
                           '[{type = "Dense", features = 128}, {type = "Elu"}, ...]')
    from imnn.persistence import model_from_tables, model_to_tables
    try:
        config["model"] = model_to_tables(model_from_tables(raw["model"]))
    except ValueError as error:
        raise CommandError(str(error)) from None
    optimiser = dict(raw.get("optimiser", {"name": "adam", "learning_rate": 1e-3}))
    if not isinstance(optimiser.setdefault("name", "adam"), str):
        raise CommandError(f"'optimiser.name' must be a string (an optax optimiser such as "
                           f"\"adam\"), got {optimiser['name']!r}")
    config["optimiser"] = optimiser
    fit = raw.get("fit", {})
    _check(fit, FIT, "fit.")
    config["fit"] = {**FIT_DEFAULTS, **fit}
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


def _resolve_simulator(table: dict) -> dict:
    name = table.get("name")
    if not isinstance(name, str):
        raise CommandError("'simulator.name' is required: one of "
                           f"{', '.join(_simulators())} or 'module:function'")
    built_in = _simulators().get(name)
    arguments = {}
    if built_in is not None:
        arguments = {f.name: "positive int" for f in dataclasses.fields(built_in)
                     if f.name != "θ_fid"}
    elif ":" not in name:
        raise CommandError(f"'simulator.name' must be one of {', '.join(_simulators())} or "
                           f"'module:function', got {name!r}")
    _check(table, SIMULATOR, "simulator.", arguments)
    if "n_s" not in table:
        raise CommandError("'simulator.n_s' is required: the number of simulations per "
                           "iteration")
    if built_in is None and "theta_fid" not in table:
        raise CommandError(f"'simulator.theta_fid' is required for the simulator {name!r}")
    return {**table, "n_d": table.get("n_d", table["n_s"])}


def _resolve_data(table: dict, base: Path) -> dict:
    _check(table, DATA, "data.")
    if "theta_fid" not in table:
        raise CommandError("'data.theta_fid' is required: the fiducial parameters")
    files = [name for name in DATA_ARRAYS if name in table]
    if ("file" in table) == bool(files):
        raise CommandError("[data] needs either 'file' (an .npz holding arrays "
                           f"{', '.join(DATA_ARRAYS)}) or .npy files 'fiducial' and "
                           "'derivative' (and optionally the validation ones), one of the two")
    resolved = dict(table)
    for name in ["file"] + files:
        if name in table:
            path = (base / table[name]).resolve()
            if not path.is_file():
                raise CommandError(f"'data.{name}': file not found: {path}")
            resolved[name] = str(path)
    return resolved


class Job(NamedTuple):
    """What a config describes, built: everything a fit needs but the IMNN."""
    config: dict
    model: Any
    optimiser: Any
    θ_fid: np.ndarray
    input_shape: tuple
    n_s: int
    n_d: int
    simulator: Any = None        # the built-in simulator object, if any
    simulate: Any = None         # simulator(key, θ), for simulator fits
    arrays: dict | None = None   # fiducial, derivative, … for data fits
    δθ: np.ndarray | None = None


def configure_jax(x64: bool, devices: int | None) -> None:
    """Precision and the number of (simulated) CPU devices: set before JAX
    starts its backends."""
    import jax
    try:
        if x64:
            jax.config.update("jax_enable_x64", True)
        if devices is not None:
            jax.config.update("jax_num_cpu_devices", devices)
    except RuntimeError as error:
        raise CommandError(f"cannot configure JAX ({error})") from None


def prepare(config: dict) -> Job:
    """Build the model, optimiser and simulator, or read the data arrays."""
    from imnn.persistence import model_from_tables
    model = model_from_tables(config["model"])
    optimiser = _optimiser(config["optimiser"])
    if "simulator" in config:
        return _prepare_simulator(config, model, optimiser)
    table = config["data"]
    arrays = _read_arrays(table)
    θ_fid = np.asarray(table["theta_fid"], np.float64)
    fiducial, derivative = arrays["fiducial"], arrays["derivative"]
    if fiducial.ndim < 2 or derivative.ndim < 2:
        raise CommandError("data arrays need a leading simulation axis: fiducial "
                           f"{fiducial.shape}, derivative {derivative.shape}")
    δθ = np.asarray(table["delta_theta"], np.float64) if "delta_theta" in table else None
    return Job(config, model, optimiser, θ_fid, fiducial.shape[1:], fiducial.shape[0],
               derivative.shape[0], arrays=arrays, δθ=δθ)


def _prepare_simulator(config, model, optimiser) -> Job:
    import jax
    table = config["simulator"]
    name, backend = table["name"], config["backend"]
    built_in = _simulators().get(name)
    if built_in is not None:
        arguments = {k: v for k, v in table.items() if k not in SIMULATOR}
        if "theta_fid" in table:
            arguments["θ_fid"] = table["theta_fid"]
        try:
            simulator = built_in(**arguments)
        except ValueError as error:
            raise CommandError(f"[simulator] {name}: {error}") from None
        simulate = simulator.simulate if backend == "jax" else simulator.simulate_numpy
        θ_fid, input_shape = np.asarray(simulator.θ_fid), simulator.input_shape
    else:
        simulator, simulate = None, _import(name)
        θ_fid = np.asarray(table["theta_fid"], np.float64)
        try:
            out = (jax.eval_shape(simulate, jax.random.PRNGKey(0), θ_fid) if backend == "jax"
                   else simulate(jax.random.PRNGKey(0), θ_fid))
        except Exception as error:  # noqa: BLE001 - the user's simulator failed: say so
            raise CommandError(f"the simulator {name}(key, θ_fid) failed: "
                               f"{type(error).__name__}: {error}") from None
        input_shape = tuple(np.shape(out[0] if isinstance(out, tuple) else out))
    return Job(config, model, optimiser, θ_fid, input_shape, table["n_s"], table["n_d"],
               simulator=simulator, simulate=simulate)


def _import(name: str):
    module_name, _, function = name.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # as `python -m` would: modules next to you
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise CommandError(f"'simulator.name': cannot import {module_name!r}: {error}") from None
    simulate = getattr(module, function, None)
    if not callable(simulate):
        raise CommandError(f"'simulator.name': {module_name} has no function {function!r}")
    return simulate


def _optimiser(table: dict):
    import optax
    name = table["name"]
    factory = getattr(optax, name, None)
    if name.startswith("_") or not callable(factory):
        raise CommandError(f"'optimiser.name': optax has no optimiser {name!r}")
    arguments = {k: v for k, v in table.items() if k != "name"}
    parameters = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        for key in arguments:
            if key not in parameters:
                raise CommandError(f"unknown key 'optimiser.{key}': optax.{name} takes "
                                   f"{', '.join(parameters)}")
    try:
        optimiser = factory(**arguments)
    except (TypeError, ValueError) as error:
        raise CommandError(f"[optimiser] optax.{name}: {error}") from None
    if not all(callable(getattr(optimiser, name, None)) for name in ("init", "update")):
        raise CommandError(f"'optimiser.name': optax.{name} is not an optimiser")
    return optimiser


def _read_arrays(table: dict) -> dict:
    def load(path, what):
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise CommandError(f"'{what}': cannot read {path}: {error}") from None

    if "file" in table:
        with load(table["file"], "data.file") as archive:
            unknown = sorted(set(archive.files) - set(DATA_ARRAYS))
            if unknown:
                raise CommandError(f"'data.file' {table['file']} holds an unknown array "
                                   f"{unknown[0]!r} (known: {', '.join(DATA_ARRAYS)})")
            arrays = {name: archive[name] for name in archive.files}
    else:
        arrays = {name: load(table[name], f"data.{name}") for name in DATA_ARRAYS
                  if name in table}
    for name in ("fiducial", "derivative"):
        if name not in arrays:
            raise CommandError(f"[data] needs the array {name!r}")
    if ("validation_fiducial" in arrays) != ("validation_derivative" in arrays):
        raise CommandError("[data] needs both validation_fiducial and validation_derivative, "
                           "or neither")
    return arrays


def make_fitter(job: Job):
    """The IMNN class the config asks for, built and ready to fit."""
    import jax

    import imnn
    config = job.config
    try:
        shape = imnn.nn.output_shape(job.model, job.input_shape)
    except ValueError as error:
        raise CommandError(f"'model' does not take simulations of shape {job.input_shape}: "
                           f"{error}") from None
    if len(shape) != 1:
        raise CommandError(f"'model' must end in a 1-D summary, its output has shape {shape}")
    arguments = dict(n_s=job.n_s, n_d=job.n_d, n_params=len(job.θ_fid), n_summaries=shape[0],
                     input_shape=tuple(job.input_shape), θ_fid=job.θ_fid, model=job.model,
                     optimiser=job.optimiser, key_or_state=jax.random.PRNGKey(config["seed"]),
                     backend=config["backend"])
    aggregated = "n_per_device" in config
    if aggregated:
        devices = jax.devices()
        n = config.get("devices", len(devices))
        if n > len(devices):
            raise CommandError(f"'devices' = {n}, but JAX sees only {len(devices)} device(s)")
        arguments.update(host=devices[0], devices=devices[:n],
                         n_per_device=config["n_per_device"])
    if job.simulate is not None:
        cls = imnn.AggregatedSimulatorIMNN if aggregated else imnn.SimulatorIMNN
        arguments["simulator"] = job.simulate
    else:
        arguments.update(job.arrays)
        if job.δθ is not None:
            cls = imnn.AggregatedNumericalGradientIMNN if aggregated else imnn.NumericalGradientIMNN
            arguments["δθ"] = job.δθ
        else:
            cls = imnn.AggregatedGradientIMNN if aggregated else imnn.GradientIMNN
    try:
        return cls(**arguments)
    except (TypeError, ValueError) as error:
        raise CommandError(f"cannot build the {cls.__name__}: {error}") from None


# --- writing the config back ----------------------------------------------------------

def to_toml(config: dict) -> str:
    """A resolved config as TOML (tomllib.loads gives it back)."""
    lines = []
    for key, value in config.items():
        if key == "model":
            lines += ["model = ["] + [f"  {_toml_value(layer)}," for layer in value] + ["]"]
        elif not isinstance(value, dict):
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in config.items():
        if isinstance(value, dict):
            lines += ["", f"[{_toml_key(key)}]"]
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()]
    return "\n".join(lines) + "\n"


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # inf, nan and 1e-05 are TOML too
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}"
                               for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as TOML")


# --- checkpoints ------------------------------------------------------------------------

class Checkpoints:
    """``RUN/checkpoint.imnn`` and the previous good one, ``RUN/checkpoint.prev.imnn``.

    Each is written atomically by imnn.save. Before a new checkpoint replaces
    the current one, the current one is verified and, if it is of an earlier
    iteration, kept as the previous: a damaged file never replaces a good one."""

    def __init__(self, run: Path):
        self.run = run
        self.current, self.previous = run / CHECKPOINT, run / PREVIOUS

    def write(self, fitter, metadata: dict) -> None:
        from imnn import persistence
        if self.current.exists():
            try:
                if persistence.read(self.current).manifest["fit_iteration"] < \
                        fitter.fit_iteration:
                    os.replace(self.current, self.previous)
            except persistence.DamagedFileError:
                pass
        persistence.save(fitter, self.current, metadata)

    def latest(self):
        """The newest checkpoint that reads back intact; says so on stderr when
        it has to fall back to the previous one."""
        from imnn import persistence
        damaged = []
        for path in (self.current, self.previous):
            try:
                saved = persistence.read(path)
            except FileNotFoundError:
                continue
            except persistence.DamagedFileError as error:
                print(f"imnn: {error}", file=sys.stderr)
                damaged.append(path)
                continue
            if damaged:
                print(f"imnn: using the previous good checkpoint {path} (iteration "
                      f"{saved.manifest['fit_iteration']})", file=sys.stderr)
            return saved
        if damaged:
            raise CommandError(f"{self.run} has no intact checkpoint: "
                               f"{', '.join(map(str, damaged))} damaged", EXIT_ERROR)
        raise CommandError(f"{self.run} is not a run directory: no {CHECKPOINT} in it",
                           EXIT_ERROR)


def _saved_model(run: Path):
    """A run directory's latest good checkpoint, or an .imnn file itself."""
    from imnn import persistence
    if run.is_dir():
        return Checkpoints(run).latest()
    try:
        return persistence.read(run)
    except FileNotFoundError:
        raise CommandError(f"no run directory or .imnn file at {run}", EXIT_ERROR) from None
    except persistence.DamagedFileError as error:
        raise CommandError(str(error), EXIT_ERROR) from None


# --- signals: stop at the end of the running chunk of iterations -------------------------

class StopRequest:
    """SIGINT (Ctrl-C) and SIGTERM handlers for the main thread.

    The first signal asks the fit to stop: the fit's callback raises
    KeyboardInterrupt at the end of the chunk of iterations running, once those
    are committed, so the interrupted fit keeps them and a checkpoint can be
    written. A second signal raises KeyboardInterrupt at once."""

    def __init__(self):
        self.signal = None

    def __call__(self, signum, frame):
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {s: signal.signal(s, self) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)

    def check(self):
        if self.signal is not None:
            raise KeyboardInterrupt


# --- running a fit into a run directory ---------------------------------------------------

def run_fit(job: Job, run: Path, command: str, saved=None, quiet=False) -> int:
    """Fit (or, given a saved checkpoint, resume) into the run directory ``run``."""
    import jax

    from imnn import persistence
    config = job.config
    run.mkdir(parents=True, exist_ok=True)
    persistence.write_atomically(run / "config.toml",
                                 lambda file: file.write(to_toml(config).encode()))
    checkpoints = Checkpoints(run)
    fitter = make_fitter(job)
    seconds = 0.0
    rng = (np.asarray(jax.random.PRNGKey(config["seed"] + 1)) if job.simulate is not None
           else None)
    if saved is not None:
        persistence.restore(fitter, saved)
        seconds = saved.metadata.get("seconds", 0.0)
        if saved.metadata.get("rng") is not None:
            rng = np.asarray(saved.metadata["rng"], np.uint32)
    fit = config["fit"]
    start = time.perf_counter()

    def metadata(status):
        return {"config": config, "status": status,
                "seconds": seconds + time.perf_counter() - start,
                "rng": None if rng is None else rng.tolist()}

    every = config["checkpoint_every"]
    last_checkpoint = [fitter.fit_iteration]
    stop = StopRequest()

    def callback(fitter):
        if fitter.fit_iteration - last_checkpoint[0] >= every:
            checkpoints.write(fitter, metadata("running"))
            last_checkpoint[0] = fitter.fit_iteration
        stop.check()

    start_iteration = fitter.fit_iteration
    print(f"{command}: {_describe(fitter)}, backend={fitter.backend}, n_s={fitter.n_s}, "
          + (f"resuming at iteration {start_iteration} of " if saved is not None else "")
          + f"up to {fit['max_iterations']} iterations")
    with stop.installed():
        if saved is None:
            checkpoints.write(fitter, metadata("running"))
        with warnings.catch_warnings(record=True) as caught, (
                contextlib.redirect_stderr(io.StringIO()) if quiet else contextlib.nullcontext()):
            warnings.simplefilter("always")
            fitter.fit(fit["lambda"], fit["epsilon"], rng=rng, patience=fit["patience"],
                       min_iterations=fit["min_iterations"],
                       max_iterations=fit["max_iterations"],
                       # chunks of iterations: progress, checkpoints and stops at their ends
                       print_rate=min(every, 100 if quiet else 10),
                       resume=saved is not None, callback=callback)
        for warning in caught:
            if not (stop.signal is not None and "interrupted" in str(warning.message)):
                print(f"imnn: warning: {warning.message}", file=sys.stderr)
        if stop.signal is not None:
            return _interrupted(fitter, checkpoints, metadata, stop.signal)
        checkpoints.write(fitter, metadata("finished"))
    return _report(job, fitter, run, seconds + time.perf_counter() - start,
                   fitter.fit_iteration - start_iteration)


def _interrupted(fitter, checkpoints, metadata, signum) -> int:
    name = signal.Signals(signum).name
    if len(fitter.history["detF"]) == fitter.fit_iteration:
        checkpoints.write(fitter, metadata("interrupted"))
        where = f"checkpoint written at iteration {fitter.fit_iteration}"
    else:  # stopped inside an update: keep the last periodic checkpoint
        where = "kept the last checkpoint"
    print(f"imnn: {name}: stopped the fit; {where}. Carry on with: imnn fit --resume "
          f"{checkpoints.run}", file=sys.stderr)
    return 128 + signum


def _describe(fitter) -> str:
    name = type(fitter).__name__
    if getattr(fitter, "devices", None):
        return f"{name} over {len(fitter.devices)} device(s), n_per_device={fitter.n_per_device}"
    return name


def _report(job: Job, fitter, run: Path, seconds: float, n_run: int) -> int:
    """Print how much information the fit reached and write the outputs."""
    reached = float(np.linalg.det(fitter.F))
    analytic = job.simulator.fisher() if job.simulator is not None else None
    expected = None if analytic is None else float(np.linalg.det(analytic))
    if job.simulate is not None:
        on = f"on {fitter.n_s} fresh simulations"
    else:
        on = f"on the {'validation' if fitter.validate else 'training'} data"
    line = f"Fisher information reached: det F = {_number(reached)}"
    if analytic is not None:
        line += f" of the analytic {expected:.6g} ({100 * reached / expected:.1f} %)"
    print(f"{line}, {on}")
    F = np.array2string(fitter.F, precision=3)
    if analytic is None:
        print(f"F = {F}")
    elif np.count_nonzero(analytic - np.diag(np.diag(analytic))) == 0:
        print(f"F = {F}   analytic diag({', '.join(f'{v:.6g}' for v in np.diag(analytic))})")
    else:
        print(f"F = {F}\nanalytic F = {np.array2string(analytic, precision=3)}")
    n_it = fitter.fit_iteration
    print(f"{n_it} iterations in {seconds:.1f} s"
          + (f" ({1e3 * seconds / n_run:.2f} ms per iteration)" if n_run else ""))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    axes = fitter.plot(expected_detF=expected, filename=run / "history.png")
    plt.close(axes[0].figure)
    np.savez(run / "history.npz", **{k: np.asarray(v) for k, v in fitter.history.items()})
    summary = {"class": type(fitter).__name__, "backend": fitter.backend,
               "x64": job.config["x64"], "n_s": fitter.n_s, "n_d": fitter.n_d,
               "iterations": n_it, "seconds": seconds, "detF": reached,
               "max_detF": float(fitter.history["max_detF"]),
               "analytic_detF": expected,
               "fraction": None if expected is None else reached / expected,
               "F": fitter.F.tolist(), "θ_fid": np.asarray(fitter.θ_fid).tolist(),
               "statistics": {name: np.asarray(getattr(fitter, name)).tolist()
                              for name in ("F", "invF", "C", "invC", "μ", "dμ_dθ")},
               "checkpoint": str(run / CHECKPOINT)}
    (run / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    print(f"wrote {run}/: config.toml, {CHECKPOINT}, history.png, history.npz, summary.json")
    return 0


def _number(x: float) -> str:
    return f"{x:.2f}" if 0.01 <= abs(x) < 1e6 else f"{x:.4g}"


# --- commands ---------------------------------------------------------------------------

def demo(args) -> int:
    config = {"output": str(args.output.absolute()), "seed": args.seed,
              "backend": args.backend, "x64": False, "checkpoint_every": 100,
              "model": [{"type": "Dense", "features": 128}, {"type": "Elu"},
                        {"type": "Dense", "features": 128}, {"type": "Elu"},
                        {"type": "Dense", "features": 2}],
              "optimiser": {"name": "adam", "learning_rate": 1e-3},
              "fit": {"patience": args.patience, "max_iterations": args.max_iterations
                      or (5000 if args.backend == "jax" else 300)},
              "simulator": {"name": "gaussian_mean_variance", "n": 10, "n_s": args.n_s}}
    configure_jax(False, args.devices)
    if args.aggregated:
        import jax
        n_devices = len(jax.devices())
        if args.n_s % n_devices:
            raise CommandError(f"--n-s {args.n_s} must be a multiple of the {n_devices} devices")
        per_device = args.n_s // n_devices
        # Default: four batches per pass (the largest divisor no bigger than a quarter).
        config["n_per_device"] = args.n_per_device or max(
            k for k in range(1, per_device + 1)
            if per_device % k == 0 and 4 * k <= max(per_device, 4))
    config = resolve_config(config, Path.cwd())
    for name in (CHECKPOINT, PREVIOUS):  # the demo starts afresh every time
        (args.output / name).unlink(missing_ok=True)
    return run_fit(prepare(config), args.output, "imnn demo", quiet=args.quiet)


def fit(args) -> int:
    if (args.config is None) == (args.resume is None):
        raise CommandError("give a CONFIG.toml to fit, or --resume RUN to carry on a run")
    if args.resume is not None:
        if args.output is not None:
            raise CommandError("--output does not go with --resume: the run stays in RUN")
        saved = Checkpoints(args.resume).latest()
        if "config" not in saved.metadata:
            raise CommandError(f"{saved.path} was not written by imnn fit: it has no config "
                               "to resume from (use imnn.persistence.restore in Python)")
        config = saved.metadata["config"]
        run = args.resume
    else:
        config, saved = read_config(args.config), None
        if args.output is not None:
            config["output"] = str(args.output.absolute())
        run = Path(config["output"])
        if (run / CHECKPOINT).exists():
            raise CommandError(f"{run} already holds a fit: carry it on with "
                               f"`imnn fit --resume {run}`, or choose another output")
    if args.max_iterations is not None:
        config["fit"]["max_iterations"] = args.max_iterations
    configure_jax(config["x64"], config.get("devices") if config["backend"] == "jax" else None)
    return run_fit(prepare(config), run, "imnn fit", saved, args.quiet)


def _load_fitted(run: Path, backend=None):
    """A FittedIMNN for a run directory or .imnn file, on JAX at the precision
    it was fitted in."""
    from imnn.persistence import FittedIMNN
    saved = _saved_model(run)
    backend = backend or saved.manifest["backend"]
    dtypes = {entry["dtype"] for name, entry in saved.manifest["arrays"].items()
              if name.startswith(("w/", "best_w/", "final_w/"))}
    if backend == "jax" and np.dtype("float64").str in dtypes:
        import jax
        jax.config.update("jax_enable_x64", True)
    fitted = FittedIMNN(saved, backend)
    if fitted.F is None:
        raise CommandError(f"{saved.path} has no Fisher statistics yet (the fit has not run)",
                           EXIT_ERROR)
    return fitted


def _read_simulations(path: Path, fitted) -> np.ndarray:
    try:
        d = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CommandError(f"no such file: {path}", EXIT_ERROR) from None
    except (OSError, ValueError) as error:
        raise CommandError(f"cannot read {path} as a .npy array: {error}", EXIT_ERROR) from None
    shape = fitted.input_shape
    if not isinstance(d, np.ndarray) or d.shape[-len(shape):] != shape or d.ndim > len(shape) + 1:
        raise CommandError(f"{path} must hold one simulation {shape} or a batch (n,)+{shape}, "
                           f"got {getattr(d, 'shape', type(d).__name__)}", EXIT_ERROR)
    return d


def estimate(args) -> int:
    fitted = _load_fitted(args.run, args.backend)
    θ̂ = np.asarray(fitted.get_estimate(_read_simulations(args.data, fitted)), np.float64)
    for row in np.atleast_2d(θ̂):
        print(" ".join(f"{v:.10g}" for v in row))
    if args.output is not None:
        np.save(args.output, θ̂)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def info(args) -> int:
    saved = _saved_model(args.run)
    m, history, arrays = saved.manifest, saved.history(), saved.arrays
    meta = saved.metadata
    lines = [f"file: {saved.path}"]
    if "status" in meta:
        lines.append(f"status: {meta['status']}, {m['fit_iteration']} iterations in "
                     f"{meta.get('seconds', 0.0):.1f} s")
        config = meta["config"]
        fit = config["fit"]
        lines.append(f"fit: λ={fit['lambda']}, ε={fit['epsilon']}, patience={fit['patience']} "
                     f"(counter {m['patience_counter']}), min_iterations={fit['min_iterations']}, "
                     f"max_iterations={fit['max_iterations']}, seed={config['seed']}, "
                     f"x64={config['x64']}")
        source = config.get("simulator", config.get("data"))
        lines.append(("simulator: " if "simulator" in config else "data: ")
                     + ", ".join(f"{k}={v}" for k, v in source.items()))
    lines.append(f"class: {m['class']}, backend {m['backend']}, n_s={m['n_s']}, n_d={m['n_d']}, "
                 f"n_params={m['n_params']}, n_summaries={m['n_summaries']}, "
                 f"input_shape={tuple(m['input_shape'])}")
    lines.append("model: " + " → ".join(
        layer["type"] + "(" + ", ".join(f"{k}={v}" for k, v in layer.items() if k != "type") + ")"
        for layer in m["model"]))
    lines.append(f"θ_fid: {arrays['θ_fid'].tolist()}")
    n = len(history["detF"])
    if n:
        best = int(np.nanargmax(np.where(np.isfinite(history["detF"]), history["detF"], -np.inf)))
        lines.append(f"history: {n} iterations; det F {history['detF'][0]:.4g} → "
                     f"{history['detF'][-1]:.4g} (training max {history['detF'][best]:.4g} at "
                     f"iteration {best}); max_detF (stopping criterion) {history['max_detF']:.4g}")
        last = ", ".join(f"{k} {history[k][-1]:.4g}" for k in ("detC", "detinvC", "Λ2", "r"))
        lines.append(f"last iteration: {last}")
        validation = history["val_detF"]
        if len(validation):
            lines.append(f"validation: det F {validation[0]:.4g} → {validation[-1]:.4g} "
                         f"(max {np.nanmax(validation):.4g})")
    else:
        lines.append("history: no iterations yet")
    if "statistics/F" in arrays:
        F = arrays["statistics/F"]
        lines.append(f"det F = {np.linalg.det(F):.6g} (statistics at the returned weights)")
        lines.append(f"F = {np.array2string(F, precision=4)}".replace("\n", "\n    "))
        σ = np.sqrt(np.diag(arrays["statistics/invF"]))
        lines.append(f"Fisher errors √diag(F⁻¹): {np.array2string(σ, precision=4)}")
    else:
        lines.append("statistics: none yet (the fit has not finished a chunk of iterations)")
    print("\n".join(lines))
    return 0


def lfi(args) -> int:
    from imnn.lfi import GaussianApproximation, Uniform
    fitted = _load_fitted(args.run)
    θ̂ = np.atleast_2d(np.asarray(fitted.get_estimate(_read_simulations(args.target, fitted)),
                                np.float64))
    σ = np.sqrt(np.diag(fitted.invF))
    p = fitted.n_params
    low = np.min(θ̂, 0) - 5 * σ if args.low is None else np.asarray(args.low, float)
    high = np.max(θ̂, 0) + 5 * σ if args.high is None else np.asarray(args.high, float)
    if low.shape != (p,) or high.shape != (p,):
        raise CommandError(f"--low and --high need {p} values, one per parameter")
    try:
        posterior = GaussianApproximation(θ̂, fitted.invF, Uniform(low, high), args.gridsize)
    except ValueError as error:
        raise CommandError(str(error), EXIT_ERROR) from None
    print(f"Gaussian approximation N(θ̂, F⁻¹) on the prior box low={low.tolist()}, "
          f"high={high.tolist()}")
    print("target  parameter  θ̂  mean  std")
    for t in range(θ̂.shape[0]):
        for i, grid in enumerate(posterior.grid):
            density = posterior.marginals.one_d[i][t]
            mass = np.trapezoid(density, grid)
            mean = np.trapezoid(grid * density, grid) / mass
            std = math.sqrt(np.trapezoid((grid - mean) ** 2 * density, grid) / mass)
            print(f"{t}  θ_{i}  {θ̂[t, i]:.6g}  {mean:.6g}  {std:.6g}")
    return 0


# --- the parser -----------------------------------------------------------------------------

def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imnn", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="fit the mean/variance toy problem (no files needed)")
    p.add_argument("--backend", choices=BACKENDS, default="jax")
    p.add_argument("--devices", type=_positive, default=None,
                   help="simulate this many CPU devices (with --aggregated: shard over them)")
    p.add_argument("--aggregated", action="store_true",
                   help="use AggregatedSimulatorIMNN (two-pass gradients over devices)")
    p.add_argument("--n-per-device", type=_positive, default=None,
                   help="simulations per device per batch (aggregated; default n_s / devices / 4)")
    p.add_argument("--n-s", type=_positive, default=1000, help="simulations per iteration")
    p.add_argument("--max-iterations", type=_positive, default=None)
    p.add_argument("--patience", type=_positive, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, default=Path("runs/demo"),
                   help="run directory (created)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=demo)

    p = sub.add_parser("fit", help="fit what a TOML config describes, or resume a run")
    p.add_argument("config", type=Path, nargs="?", help="the config file (TOML)")
    p.add_argument("--resume", type=Path, metavar="RUN",
                   help="carry on the interrupted fit in run directory RUN")
    p.add_argument("--output", type=Path, help="run directory (default: the config's output)")
    p.add_argument("--max-iterations", type=_positive, help="override fit.max_iterations")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=fit)

    p = sub.add_parser("estimate", help="θ̂ for each simulation in a .npy file")
    p.add_argument("run", type=Path, help="run directory or .imnn file")
    p.add_argument("data", type=Path, help=".npy: one simulation or a batch (n,)+input_shape")
    p.add_argument("--output", type=Path, help="also write the estimates to this .npy file")
    p.add_argument("--backend", choices=BACKENDS, help="evaluate on this backend "
                   "(default: the one it was fitted on)")
    p.set_defaults(handler=estimate)

    p = sub.add_parser("info", help="what a run is and how its fit went")
    p.add_argument("run", type=Path, help="run directory or .imnn file")
    p.set_defaults(handler=info)

    p = sub.add_parser("lfi", help="Gaussian-approximation posterior of target data")
    p.add_argument("run", type=Path, help="run directory or .imnn file")
    p.add_argument("target", type=Path, help=".npy: one target simulation or several")
    p.add_argument("--low", type=float, nargs="+", help="prior box (default θ̂ − 5σ)")
    p.add_argument("--high", type=float, nargs="+", help="prior box (default θ̂ + 5σ)")
    p.add_argument("--gridsize", type=_positive, default=200)
    p.set_defaults(handler=lfi)
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.handler(args)
    except CommandError as error:
        print(f"imnn {args.command}: error: {error}", file=sys.stderr)
        return error.code
    except KeyboardInterrupt:
        print(f"imnn {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `imnn info RUN | head`: the reader has gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
