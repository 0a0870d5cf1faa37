"""From a resolved config to built objects: the model, the optimiser, the
simulator or the data arrays, and the IMNN (its class chosen by ``imnn.IMNN``).

Everything here runs before a run directory is touched, so a config that
cannot work is refused without leaving anything behind.
"""
from __future__ import annotations

import importlib
import sys
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from . import _optimiser
from ._config import simulators
from ._errors import CommandError, one_line
from ._schema import DATA_ARRAYS, keys_of


class Job(NamedTuple):
    """What a config describes, built: everything a fit needs but the IMNN.

    Attributes:
        config: the resolved config.
        model: the network (imnn.nn model or another model kind).
        optimiser: the optax optimiser.
        θ_fid: (n_params,) fiducial parameters.
        input_shape: the shape of one simulation.
        n_s, n_d: simulations per iteration, and with derivatives.
        simulator: the built-in simulator object, if any.
        simulate: ``simulator(key, θ)`` for simulator fits.
        arrays: ``fiducial``, ``derivative`` and the validation arrays, for data fits.
        δθ: (n_params,) finite-difference steps, for numerical-derivative data.
    """
    config: dict
    model: Any
    optimiser: Any
    θ_fid: np.ndarray
    input_shape: tuple
    n_s: int
    n_d: int
    simulator: Any = None
    simulate: Any = None
    arrays: dict | None = None
    δθ: np.ndarray | None = None


def configure_jax(x64: bool, devices: int | None) -> None:
    """Set precision and the number of (simulated) CPU devices before JAX starts
    its backends.

    Args:
        x64: switch on float64.
        devices: the number of CPU devices to simulate, or None to leave it.

    Raises:
        CommandError: JAX has already started with other settings.
    """
    import jax
    try:
        if x64:
            jax.config.update("jax_enable_x64", True)
        if devices is not None:
            jax.config.update("jax_num_cpu_devices", devices)
    except RuntimeError as error:
        raise CommandError(f"cannot configure JAX ({error})") from None


def import_function(name: str, key: str):
    """``module:function`` imported (the working directory first on the path, as
    ``python -m`` does).

    Args:
        name: ``"module:function"``.
        key: the config key that names it, for error messages.

    Returns:
        The function.

    Raises:
        CommandError: the module does not import (with its own error) or has no
            such function.
    """
    module_name, _, function = name.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - the user's module failed: say how
        raise CommandError(f"{key!r}: cannot import {module_name!r}: "
                           f"{one_line(error)}") from None
    found = getattr(module, function, None)
    if not callable(found):
        raise CommandError(f"{key!r}: {module_name} has no function {function!r}")
    return found


def build_model(config: dict):
    """The network a resolved config's ``model`` describes.

    Args:
        config: the resolved config.

    Returns:
        An imnn.nn model (from layer tables) or what ``module:function()`` returns.

    Raises:
        CommandError: the function cannot be imported or fails.
    """
    model = config["model"]
    if isinstance(model, str):
        function = import_function(model, "model")
        try:
            return function()
        except Exception as error:  # noqa: BLE001 - the user's function failed: say how
            raise CommandError(f"'model': {model}() failed: {one_line(error)}") from None
    from imnn.persistence import model_from_tables
    return model_from_tables(model)


def prepare(config: dict) -> Job:
    """Build the model, optimiser and simulator, or read the data arrays.

    Args:
        config: the resolved config (JAX configured for it).

    Returns:
        The Job.

    Raises:
        CommandError: anything the built objects refuse.
    """
    model = build_model(config)
    optimiser = _optimiser.build(config["optimiser"])
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


def _prepare_simulator(config: dict, model, optimiser) -> Job:
    import jax
    table = config["simulator"]
    name, backend = table["name"], config["backend"]
    built_in = simulators().get(name)
    if built_in is not None:
        arguments = {k: v for k, v in table.items() if k not in keys_of("simulator")}
        if "theta_fid" in table:
            arguments["θ_fid"] = table["theta_fid"]
        try:
            simulator = built_in(**arguments)
        except (TypeError, ValueError) as error:
            named = [k for k in arguments if k in str(error)]
            key = ("theta_fid" if named[0] == "θ_fid" else named[0]) if named else None
            where = f"'simulator.{key}'" if key else "[simulator]"
            raise CommandError(f"{where}: {name}: {one_line(error)}") from None
        simulate = simulator.simulate if backend == "jax" else simulator.simulate_numpy
        θ_fid, input_shape = np.asarray(simulator.θ_fid), simulator.input_shape
    else:
        simulator, simulate = None, import_function(name, "simulator.name")
        θ_fid = np.asarray(table["theta_fid"], np.float64)
        try:
            out = (jax.eval_shape(simulate, jax.random.PRNGKey(0), θ_fid) if backend == "jax"
                   else simulate(jax.random.PRNGKey(0), θ_fid))
        except Exception as error:  # noqa: BLE001 - the user's simulator failed: say so
            raise CommandError(f"the simulator {name}(key, θ_fid) failed: "
                               f"{one_line(error)}") from None
        input_shape = tuple(np.shape(out[0] if isinstance(out, tuple) else out))
    return Job(config, model, optimiser, θ_fid, input_shape, table["n_s"], table["n_d"],
               simulator=simulator, simulate=simulate)


def _load(path: str, what: str):
    try:
        return np.load(path, allow_pickle=False)
    except Exception as error:  # noqa: BLE001 - unreadable or not NumPy: one line
        raise CommandError(f"{what!r}: cannot read {path}: {one_line(error)}") from None


def _read_arrays(table: dict) -> dict:
    if "file" in table:
        archive = _load(table["file"], "data.file")
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise CommandError(f"'data.file': {table['file']} is a single .npy array, not an "
                               f".npz archive of {', '.join(DATA_ARRAYS)}")
        with archive:
            unknown = sorted(set(archive.files) - set(DATA_ARRAYS))
            if unknown:
                raise CommandError(f"'data.file' {table['file']} holds an unknown array "
                                   f"{unknown[0]!r} (known: {', '.join(DATA_ARRAYS)})")
            arrays = {}
            for name in archive.files:
                try:
                    arrays[name] = archive[name]
                except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
                    raise CommandError(f"'data.file': cannot read the array {name!r} of "
                                       f"{table['file']} (truncated or damaged?): "
                                       f"{one_line(error)}") from None
    else:
        arrays = {name: _load(table[name], f"data.{name}") for name in DATA_ARRAYS
                  if name in table}
    for name in ("fiducial", "derivative"):
        if name not in arrays:
            raise CommandError(f"[data] needs the array {name!r}")
    if ("validation_fiducial" in arrays) != ("validation_derivative" in arrays):
        raise CommandError("[data] needs both validation_fiducial and validation_derivative, "
                           "or neither")
    for name, array in arrays.items():
        if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.number):
            raise CommandError(f"'data.{name}' must hold a numeric array, got "
                               f"{getattr(array, 'dtype', type(array).__name__)}")
    return arrays


def summary_shape(model, input_shape: tuple, backend: str) -> tuple:
    """The shape of the summaries ``model`` makes of one simulation.

    Args:
        model: an imnn.nn model or another kind the backend runs.
        input_shape: the shape of one simulation.
        backend: the backend's name.

    Returns:
        The output shape.
    """
    import imnn
    if imnn.nn.is_model(model):
        return imnn.nn.output_shape(model, input_shape)
    from imnn._runtime import make_backend
    return tuple(make_backend(backend).network(model, tuple(input_shape)).output_shape)


def make_fitter(job: Job):
    """The IMNN the job describes, its class chosen by ``imnn.IMNN``.

    Args:
        job: the prepared job.

    Returns:
        The IMNN object, ready to fit.

    Raises:
        CommandError: the model does not fit the simulations, or the class refuses
            its arguments.
    """
    import jax

    import imnn
    config = job.config
    try:
        shape = summary_shape(job.model, job.input_shape, config["backend"])
    except Exception as error:  # noqa: BLE001 - the user's model failed on the input shape
        raise CommandError(f"'model' cannot summarise simulations of shape {job.input_shape} "
                           f"on the {config['backend']} backend: {one_line(error)}") from None
    if len(shape) != 1:
        raise CommandError(f"'model' must end in a 1-D summary, its output has shape {shape}")
    arguments = dict(n_s=job.n_s, n_d=job.n_d, n_params=len(job.θ_fid), n_summaries=shape[0],
                     input_shape=tuple(job.input_shape), θ_fid=job.θ_fid, model=job.model,
                     optimiser=job.optimiser, key_or_state=jax.random.PRNGKey(config["seed"]),
                     backend=config["backend"])
    if "n_per_device" in config:
        devices = jax.devices()
        n = config.get("devices", len(devices))
        if n > len(devices):
            raise CommandError(f"'devices' = {n}, but JAX sees only {len(devices)} device(s)")
        arguments.update(host=devices[0], devices=devices[:n],
                         n_per_device=config["n_per_device"])
    if job.simulate is not None:
        arguments["simulator"] = job.simulate
    else:
        arguments.update(job.arrays)
        if job.δθ is not None:
            arguments["δθ"] = job.δθ
    try:
        return imnn.IMNN(**arguments)
    except (TypeError, ValueError) as error:
        raise CommandError(f"cannot build the IMNN: {error}") from None
    except Exception as error:  # noqa: BLE001 - e.g. the user's simulator, called to check it
        raise CommandError(f"cannot build the IMNN: {one_line(error)}") from None
