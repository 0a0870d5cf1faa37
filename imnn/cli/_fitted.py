"""A fitted IMNN read back from a run directory or .imnn file, and simulations
read from .npy files, for ``estimate`` and ``lfi``."""
from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np

from ._errors import EXIT_ERROR, CommandError
from ._job import build_model
from ._rundir import CONFIG, saved_model


def load_fitted(run: Path, backend: str | None = None, model: str | None = None):
    """A FittedIMNN for a run directory or .imnn file, on JAX at the precision it
    was fitted in.

    A model other than imnn.nn layers is not described by the file: it is built
    again by the ``module:function`` that ``model`` names, or, for a run
    directory, that ``RUN/config.toml`` names. A name stored in the checkpoint
    itself is never imported.

    Args:
        run: a run directory or an .imnn file.
        backend: evaluate on this backend (default: the one it was fitted on).
        model: ``module:function`` returning the model (for other model kinds).

    Returns:
        A ``persistence.FittedIMNN`` with statistics.

    Raises:
        CommandError: no checkpoint, a damaged one, one without statistics, or a
            model that cannot be built or does not fit the file.
    """
    from imnn.persistence import FittedIMNN
    saved = saved_model(run)
    backend = backend or saved.manifest["backend"]
    dtypes = {entry["dtype"] for name, entry in saved.manifest["arrays"].items()
              if name.startswith(("w/", "best_w/", "final_w/"))}
    if backend == "jax" and np.dtype("float64").str in dtypes:
        import jax
        jax.config.update("jax_enable_x64", True)
    built = None
    kind = saved.manifest.get("model_kind", "imnn.nn")
    if model is not None or kind != "imnn.nn":
        name = model or _configured_model(run)
        if name is None:
            raise CommandError(f"{saved.path} holds a model of kind {kind}, which the file does "
                               "not describe: name the function that builds it with --model "
                               "module:function")
        built = build_model({"model": name})
    try:
        fitted = FittedIMNN(saved, backend, built)
    except (TypeError, ValueError) as error:
        raise CommandError(str(error), EXIT_ERROR) from None
    if fitted.F is None:
        raise CommandError(f"{saved.path} has no Fisher statistics yet (the fit has not run)",
                           EXIT_ERROR)
    return fitted


def _configured_model(run: Path) -> str | None:
    """The ``module:function`` model RUN/config.toml names, if any."""
    path = run / CONFIG
    if not (run.is_dir() and path.is_file()):
        return None
    try:
        model = tomllib.loads(path.read_text()).get("model")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as error:
        raise CommandError(f"cannot read {path}: {error}") from None
    return model if isinstance(model, str) else None


def read_simulations(path: Path, fitted, allow_nan: bool = False) -> np.ndarray:
    """One simulation or a batch from an .npy file, checked against the network's
    input shape.

    Args:
        path: the .npy file.
        fitted: the FittedIMNN (its ``input_shape``).
        allow_nan: accept NaN and infinite values (their estimates are NaN).

    Returns:
        The array, ``input_shape`` or ``(n,) + input_shape``.

    Raises:
        CommandError: missing, unreadable, not numeric, non-finite (unless
            ``allow_nan``), or of the wrong shape.
    """
    try:
        d = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CommandError(f"no such file: {path}", EXIT_ERROR) from None
    except Exception as error:  # noqa: BLE001 - not a readable .npy: one line
        raise CommandError(f"cannot read {path} as a .npy array: {error}", EXIT_ERROR) from None
    shape = fitted.input_shape
    if not isinstance(d, np.ndarray) or d.shape[-len(shape):] != shape or d.ndim > len(shape) + 1:
        raise CommandError(f"{path} must hold one simulation {shape} or a batch (n,)+{shape}, "
                           f"got {getattr(d, 'shape', type(d).__name__)}", EXIT_ERROR)
    if not np.issubdtype(d.dtype, np.number) or np.issubdtype(d.dtype, np.complexfloating):
        raise CommandError(f"{path} must hold real numbers, got dtype {d.dtype}", EXIT_ERROR)
    bad = np.size(d) - np.count_nonzero(np.isfinite(d))
    if bad and not allow_nan:
        raise CommandError(f"{path} holds {bad} NaN or infinite value(s) of {np.size(d)}: their "
                           "estimates would be NaN (--allow-nan to estimate anyway)", EXIT_ERROR)
    return d
