"""Saving a fitted IMNN and loading it back, on any backend, for any model kind.

``save(fitter, path)`` writes everything needed to evaluate the network and to
carry on fitting it; ``load(path)`` gives a :class:`FittedIMNN` that summarises,
estimates and compresses without the training data or the simulator, on the
backend of your choice (an imnn.nn model fitted on JAX evaluates on the NumPy
reference); ``restore(fitter, path)`` puts the saved state back into an IMNN
object built again with the same class, model, optimiser and data or simulator,
so that ``fitter.fit(..., resume=True)`` carries on an interrupted fit exactly.

The file (``.imnn``, see ``imnn._archive``) is a zip archive of a JSON manifest
and NumPy arrays, written atomically, every member covered by a SHA-256 and
nothing pickled. The manifest holds the format and version, the class name,
the constructor scalars (n_s, n_d, n_params, n_summaries, input_shape, …), the
model's kind (``"imnn.nn"``, ``"init_apply"``, …) and, for imnn.nn models, the
model as a list of layer tables; the key path of every weight leaf
(``jax.tree_util.keystr``) and of every optimiser-state leaf; the fit's
progress; user metadata. The arrays are θ_fid, δθ, the weights w / best_w /
final_w leaf by leaf, the optimiser-state leaves, the history and the
statistics F, invF, C, invC, μ, dμ_dθ.

Weights are restored into a target: the weights that the model given again
initialises (``network.init``), or the fitter's own weights for ``restore``;
the file must have the same leaves, by key path, shape and dtype kind (a
floating leaf takes the target's precision). imnn.nn models are rebuilt from
their tables, so they load without the model; every other kind needs it.
The optimiser state's structure comes likewise from the optimiser given again.

The reading side is ``imnn._saved`` (``read``, ``Saved``), the loaded object
``imnn._fitted`` (``FittedIMNN``); their names are re-exported here.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from jax import tree_util

from ._archive import (
    DamagedFileError,
    leftover_temporaries,
    remove_leftover_temporaries,
    write_archive,
    write_atomically,
)
from ._fitted import FittedIMNN
from ._leaves import first_difference, key_paths, like, unknown_path
from ._models import KINDS, model_kind
from ._saved import (
    FORMAT,
    READS,  # noqa: F401 - the versions read, at their earlier path
    STATISTICS,
    VERSION,
    WEIGHTS,
    Saved,
    read,
    weights_into,
)
from ._tables import model_from_tables, model_to_tables

if TYPE_CHECKING:
    from ._base import BaseIMNN

# --- writing ------------------------------------------------------------------------------

def save(fitter: BaseIMNN | FittedIMNN, path: str | os.PathLike,
         metadata: dict | None = None) -> Path:
    """Write a fit to an .imnn file, atomically.

    Args:
        fitter: an IMNN object (any class, any model kind) or a FittedIMNN.
        path: the file to write; it holds either the old file or the new one,
            whatever happens.
        metadata: anything JSON can hold, returned as ``FittedIMNN.metadata``.

    Returns:
        ``path`` as a Path.

    Raises:
        TypeError: ``metadata`` is not a JSON object, or a weight is not a
            numeric array.
    """
    path = Path(path)
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as error:
        raise TypeError(f"metadata must hold only what JSON can (dicts with string keys, "
                        f"lists, strings, numbers, booleans, None): {error}") from None
    kind = model_kind(fitter.model)
    weight_paths = key_paths(fitter.w)[0]
    arrays = {"θ_fid": fitter.θ_fid}
    if getattr(fitter, "δθ", None) is not None:
        arrays["δθ"] = fitter.δθ
    stored = {}  # weight name -> the name it is stored under (each object once)
    for name in WEIGHTS:
        w = getattr(fitter, name)
        stored[name] = next((other for other in stored if getattr(fitter, other) is w), name)
        if stored[name] == name:
            paths, leaves, _ = key_paths(w)
            if paths != weight_paths:
                raise ValueError(f"{name} and w have different structures")
            arrays.update({f"{name}/{k}": leaf for k, leaf in enumerate(leaves)})
    state_paths, state, _ = key_paths(getattr(fitter, "state", None))
    state_paths = getattr(fitter, "state_paths", state_paths)
    arrays.update({f"state/{k}": leaf for k, leaf in enumerate(state)})
    arrays.update({f"history/{key}": value for key, value in fitter.history.items()})
    arrays["max_logdetF"] = np.float64(fitter._max_logdetF)
    for name in STATISTICS:
        if getattr(fitter, name) is not None:
            arrays[f"statistics/{name}"] = getattr(fitter, name)
    manifest = {
        "format": FORMAT, "version": VERSION, "class": _class_name(fitter),
        "backend": fitter.backend,
        "n_s": fitter.n_s, "n_d": fitter.n_d, "n_params": fitter.n_params,
        "n_summaries": fitter.n_summaries, "input_shape": list(fitter.input_shape),
        "validate": bool(getattr(fitter, "validate", False)),
        "n_per_device": getattr(fitter, "n_per_device", None),
        "n_devices": len(fitter.devices) if getattr(fitter, "devices", None) else None,
        "model_kind": kind,
        "model": model_to_tables(fitter.model) if kind == "imnn.nn" else None,
        "model_type": _type_name(fitter.model, kind),
        "weight_paths": weight_paths, "weights": stored, "state_paths": state_paths,
        "fit_iteration": int(fitter.fit_iteration),
        "patience_counter": int(fitter.patience_counter),
        "metadata": metadata or {},
    }
    write_archive(path, manifest, arrays)
    return path


def _class_name(fitter) -> str:
    return fitter.class_name if isinstance(fitter, FittedIMNN) else type(fitter).__name__


def _type_name(model, kind) -> str | None:
    """The module's class or the function's name, for messages only (never imported)."""
    if kind in ("imnn.nn", "init_apply"):
        return None
    named = model.apply if kind == "function" else type(model)
    return f"{getattr(named, '__module__', '?')}.{getattr(named, '__qualname__', '?')}"


def load(path: str | os.PathLike, backend: str | None = None,
         model: Any = None) -> FittedIMNN:
    """A fit read from an .imnn file, ready to summarise, estimate and compress.

    Args:
        path: the file.
        backend: "jax", "numpy" or "numba" (default: the backend it was fitted
            on). On JAX the weights take the current precision (float64 only
            with jax_enable_x64).
        model: the model to load the weights into, of the same kind as the one
            saved (the same network, built again). Not needed for imnn.nn models,
            which the file describes; needed for every other kind.

    Returns:
        A FittedIMNN.

    Raises:
        FileNotFoundError: no file at ``path``.
        DamagedFileError: the file is damaged (see ``read``).
        ValueError: ``model`` is missing for a model kind that needs it, or does
            not fit the file (the message names the first differing leaf).
        TypeError: ``model`` is not a model.
    """
    return FittedIMNN(read(path), backend, model)


def restore(fitter: BaseIMNN, saved: str | os.PathLike | Saved) -> BaseIMNN:
    """Put a saved fit back into an IMNN object built again.

    Afterwards ``fitter.fit(..., resume=True)`` carries on the saved fit, and a
    plain ``fit`` continues it.

    Args:
        fitter: an IMNN object of the same class, model (any kind), optimiser,
            n_s, n_d, n_params, n_summaries, input_shape and θ_fid as the saved one.
        saved: a path to an .imnn file, or a ``Saved`` from ``read``.

    Returns:
        ``fitter``.

    Raises:
        DamagedFileError: the file is damaged.
        ValueError: the file does not fit ``fitter``; the message names what
            differs (a setting, or the first differing weight or state leaf).
    """
    saved = saved if isinstance(saved, Saved) else read(saved)
    m = saved.manifest
    mine = {"class": type(fitter).__name__, "n_s": fitter.n_s, "n_d": fitter.n_d,
            "n_params": fitter.n_params, "n_summaries": fitter.n_summaries,
            "input_shape": list(fitter.input_shape), "model_kind": model_kind(fitter.model)}
    if mine["model_kind"] == "imnn.nn":
        mine["model"] = model_to_tables(fitter.model)
    for key, value in mine.items():
        if m[key] != value:
            raise ValueError(f"cannot restore {saved.path} into this {type(fitter).__name__}: "
                             f"its {key} is {m[key]!r}, here it is {value!r}")
    if not np.array_equal(saved.arrays["θ_fid"], fitter.θ_fid):
        raise ValueError(f"cannot restore {saved.path}: it was fitted at θ_fid = "
                         f"{saved.arrays['θ_fid']}, this object has θ_fid = {fitter.θ_fid}")
    weights = weights_into(saved, fitter.w, fitter.runtime, "this object's model")
    template_paths, template, treedef = key_paths(fitter.optimiser.init(weights["final_w"]))
    leaves = saved.state_leaves()
    difference = first_difference(m["state_paths"], leaves, template_paths, template,
                                   by_path=not any(map(unknown_path, m["state_paths"])))
    if difference:
        raise ValueError(f"cannot restore {saved.path}: its optimiser state does not fit the "
                         f"optimiser of this object ({difference}); give the optimiser it "
                         "was fitted with")
    fitter.w, fitter.best_w, fitter.final_w = (weights[name] for name in WEIGHTS)
    fitter.state = tree_util.tree_unflatten(
        treedef, [like(a, t) for a, t in zip(leaves, template)])
    fitter.history = saved.history()
    fitter.fit_iteration, fitter.patience_counter = m["fit_iteration"], m["patience_counter"]
    fitter._max_logdetF = float(saved.arrays["max_logdetF"])
    for name in STATISTICS:
        setattr(fitter, name, saved.arrays.get(f"statistics/{name}"))
    return fitter


__all__ = ["save", "load", "restore", "read", "FittedIMNN", "Saved", "DamagedFileError",
           "KINDS", "model_to_tables", "model_from_tables", "model_kind", "write_atomically",
           "leftover_temporaries", "remove_leftover_temporaries"]
