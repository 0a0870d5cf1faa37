"""Saving a fitted IMNN and loading it back, on any backend.

``save(fitter, path)`` writes everything needed to evaluate the network and to
carry on fitting it; ``load(path)`` gives a :class:`FittedIMNN` that summarises
and estimates without the training data or the simulator, on the backend of
your choice (a model fitted on JAX evaluates on the NumPy reference);
``restore(fitter, path)`` puts the saved state back into an IMNN object built
again with the same class, model, optimiser and data or simulator, so that
``fitter.fit(..., resume=True)`` carries on an interrupted fit exactly.

The file (``.imnn``) is a zip archive, written atomically (a temporary file in
the same directory, fsync, ``os.replace``), so a crash never leaves a half
written file under the final name:

    manifest.json   format and version, class name, constructor scalars
                    (n_s, n_d, n_params, n_summaries, input_shape, …), the
                    imnn.nn model as a list of tables (``model_to_tables``), fit
                    progress, user metadata, and for every array its member
                    name, shape, dtype and SHA-256
    arrays/K.npy    one NumPy array each (no pickles): θ_fid, δθ, the weights
                    w / best_w / final_w, the optimiser-state leaves, the
                    history, the statistics F, invF, C, invC, μ, dμ_dθ

Every array is checked against its SHA-256 on reading; a truncated or
corrupted file raises :class:`DamagedFileError`.

Optimiser states are stored as their leaves only: ``restore`` rebuilds the
tree structure from ``fitter.optimiser.init(w)`` of the rebuilt object, so the
same optimiser must be given again.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile
import zipfile
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
from jax import tree_util

from . import nn
from .classes import _IMNN
from .runtime import make_backend

FORMAT = "imnn"
VERSION = 1
STATISTICS = ("F", "invF", "C", "invC", "μ", "dμ_dθ")
WEIGHTS = ("w", "best_w", "final_w")


class DamagedFileError(ValueError):
    """An .imnn file that is truncated, corrupted or not an .imnn file at all."""


# --- the model as a list of tables ------------------------------------------------

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
    """An imnn.nn model as a list of JSON/TOML tables, one per layer, e.g.
    ``[{"type": "Dense", "features": 128}, {"type": "Elu", "alpha": 1.0}]``."""
    if not nn.is_model(model):
        raise TypeError("only imnn.nn models (built with imnn.nn.serial) can be described "
                        f"as tables and saved, got {type(model).__name__}")
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

    Raises ValueError naming the offending entry (``where[i].key``) for an
    unknown layer type or argument, a missing argument or a wrong type."""
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
    if kind == "number" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ValueError(f"{at} must be a number, got {type(value).__name__} {value!r}")
    if kind == "str" and not isinstance(value, str):
        raise ValueError(f"{at} must be a string, got {type(value).__name__} {value!r}")
    if kind == "ints":
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise ValueError(f"{at} must be an integer or a list of integers, got {value!r}")
        return tuple(values)
    return float(value) if kind == "number" else value


# --- writing ------------------------------------------------------------------------

def save(fitter, path, metadata: dict | None = None) -> Path:
    """Write ``fitter`` (an IMNN object or a FittedIMNN) to ``path`` (an .imnn file).

    ``metadata``: anything JSON can hold, returned as ``FittedIMNN.metadata``.
    The write is atomic: ``path`` holds either the old file or the new one.
    Returns the path."""
    path = Path(path)
    model = model_to_tables(fitter.model)
    arrays = {"θ_fid": fitter.θ_fid}
    if getattr(fitter, "δθ", None) is not None:
        arrays["δθ"] = fitter.δθ
    stored = {}  # weight name -> the name it is stored under (each object once)
    for name in WEIGHTS:
        w = getattr(fitter, name)
        stored[name] = next((other for other in stored if getattr(fitter, other) is w), name)
        if stored[name] == name:
            for i, layer in enumerate(w):
                for j, leaf in enumerate(layer):
                    arrays[f"{name}/{i}/{j}"] = leaf
    state = tree_util.tree_leaves(getattr(fitter, "state", None))
    for i, leaf in enumerate(state):
        arrays[f"state/{i}"] = leaf
    for key, value in fitter.history.items():
        arrays[f"history/{key}"] = value
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
        "model": model,
        "weight_layers": [len(layer) for layer in fitter.w],
        "weights": stored,
        "state_leaves": len(state),
        "fit_iteration": int(fitter.fit_iteration),
        "patience_counter": int(fitter.patience_counter),
        "metadata": metadata or {},
        "arrays": {},
    }
    members = {}
    for k, (name, value) in enumerate(arrays.items()):
        buffer = io.BytesIO()
        value = np.asarray(value)
        np.lib.format.write_array(buffer, value, allow_pickle=False)
        member = f"arrays/{k}.npy"
        members[member] = buffer.getvalue()
        manifest["arrays"][name] = {"member": member, "shape": list(value.shape),
                                    "dtype": value.dtype.str,
                                    "sha256": hashlib.sha256(members[member]).hexdigest()}
    text = json.dumps(manifest, indent=1, ensure_ascii=False)

    def write(file):
        with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as archive:
            archive.writestr("manifest.json", text)
            for member, data in members.items():
                archive.writestr(member, data)

    write_atomically(path, write)
    return path


def write_atomically(path, write) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync it, then
    rename it over ``path`` (and fsync the directory, so the rename is durable)."""
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                             suffix=".tmp")
    try:
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _umask() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _class_name(fitter) -> str:
    return fitter.class_name if isinstance(fitter, FittedIMNN) else type(fitter).__name__


# --- reading ------------------------------------------------------------------------

class Saved(NamedTuple):
    """The verified contents of an .imnn file: its manifest and arrays by name."""
    path: Path
    manifest: dict
    arrays: dict

    @property
    def metadata(self) -> dict:
        return self.manifest["metadata"]

    def weights(self, place) -> dict:
        """{"w", "best_w", "final_w"}: weights as lists of per-layer tuples, put
        on a backend by ``place``; names saved as one object stay one object."""
        stored = self.manifest["weights"]
        placed = {name: place([tuple(self.arrays[f"{name}/{i}/{j}"] for j in range(n))
                               for i, n in enumerate(self.manifest["weight_layers"])])
                  for name in set(stored.values())}
        return {name: placed[stored[name]] for name in WEIGHTS}

    def history(self) -> dict:
        history = {key[len("history/"):]: value for key, value in self.arrays.items()
                   if key.startswith("history/")}
        history["max_detF"] = float(history["max_detF"])
        return history


def read(path) -> Saved:
    """Read and verify an .imnn file. Raises FileNotFoundError, or
    DamagedFileError when it is truncated, corrupted or not an .imnn file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such .imnn file: {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            manifest = json.loads(archive.read("manifest.json").decode("utf-8"))
            if manifest.get("format") != FORMAT:
                raise DamagedFileError(f"{path} is not an .imnn file")
            if manifest.get("version") != VERSION:
                raise DamagedFileError(f"{path} has format version {manifest.get('version')}, "
                                       f"this imnn reads version {VERSION}")
            arrays = {}
            for name, entry in manifest["arrays"].items():
                data = archive.read(entry["member"])
                if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                    raise DamagedFileError(f"{path} is damaged: array {name!r} does not match "
                                           "its checksum")
                arrays[name] = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    except DamagedFileError:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError, OSError) as error:
        raise DamagedFileError(f"{path} is damaged (truncated or corrupted): "
                               f"{type(error).__name__}: {error}") from None
    return Saved(path, manifest, arrays)


def load(path, backend: str | None = None) -> FittedIMNN:
    """A FittedIMNN read from ``path``, evaluated on ``backend`` ("jax",
    "numpy" or "numba"; default: the backend it was fitted on). On JAX the
    weights take the current precision (float64 only with jax_enable_x64)."""
    return FittedIMNN(read(path), backend)


def restore(fitter, saved):
    """Put a saved state (a path or a ``Saved``) into ``fitter``, an IMNN object
    built again with the same class, model, optimiser and data or simulator.
    Afterwards ``fitter.fit(..., resume=True)`` carries on the saved fit, and a
    plain ``fit`` continues it. Returns ``fitter``."""
    saved = saved if isinstance(saved, Saved) else read(saved)
    m = saved.manifest
    mine = {"class": type(fitter).__name__, "n_s": fitter.n_s, "n_d": fitter.n_d,
            "n_params": fitter.n_params, "n_summaries": fitter.n_summaries,
            "input_shape": list(fitter.input_shape), "model": model_to_tables(fitter.model)}
    for key, value in mine.items():
        if m[key] != value:
            raise ValueError(f"cannot restore {saved.path} into this {type(fitter).__name__}: "
                             f"its {key} is {m[key]!r}, here it is {value!r}")
    if not np.array_equal(saved.arrays["θ_fid"], fitter.θ_fid):
        raise ValueError(f"cannot restore {saved.path}: it was fitted at θ_fid = "
                         f"{saved.arrays['θ_fid']}, this object has θ_fid = {fitter.θ_fid}")
    weights = saved.weights(fitter.runtime.replicate)
    template, treedef = tree_util.tree_flatten(fitter.optimiser.init(weights["final_w"]))
    leaves = [saved.arrays[f"state/{i}"] for i in range(m["state_leaves"])]
    if len(leaves) != len(template) or any(
            np.shape(a) != np.shape(t) for a, t in zip(leaves, template)):
        raise ValueError(f"cannot restore {saved.path}: its optimiser state does not fit the "
                         "optimiser of this object (give the optimiser it was fitted with)")
    fitter.w, fitter.best_w, fitter.final_w = (weights[name] for name in WEIGHTS)
    fitter.state = tree_util.tree_unflatten(
        treedef, [_like(a, t) for a, t in zip(leaves, template)])
    fitter.history = saved.history()
    fitter.fit_iteration, fitter.patience_counter = m["fit_iteration"], m["patience_counter"]
    fitter._max_logdetF = float(saved.arrays["max_logdetF"])
    for name in STATISTICS:
        setattr(fitter, name, saved.arrays.get(f"statistics/{name}"))
    return fitter


def _like(array, template):
    """``array`` as the same kind of leaf as ``template``: the fit loop wants
    the dtypes and placement the optimiser's own init gives (an array committed
    to a device where it was, so the compiled step is not compiled again)."""
    if isinstance(template, jax.Array):
        array = np.asarray(array, template.dtype)
        return (jax.device_put(array, template.sharding) if template.committed
                else jax.numpy.asarray(array))
    if isinstance(template, np.ndarray | np.generic):
        return np.asarray(array, template.dtype)
    if isinstance(template, int | float):
        return type(template)(array.item())
    return array


# --- a fitted network, for evaluation -------------------------------------------------

class FittedIMNN:
    """A fitted IMNN read from a file: it summarises and estimates without the
    training data or the simulator.

    Attributes: ``class_name`` (the class it was fitted with), ``backend``,
    ``model`` (imnn.nn), ``input_shape``, ``n_s, n_d, n_params, n_summaries``,
    ``θ_fid`` (p,), ``w, best_w, final_w``, ``history``, ``F, invF`` (p, p),
    ``C, invC`` (s, s), ``μ`` (s,), ``dμ_dθ`` (s, p) (None when the file has no
    statistics), ``fit_iteration``, ``patience_counter``, ``metadata``.
    Methods as the IMNN classes: ``summarise(d, w=None)``, ``get_estimate(d)``,
    ``plot(...)``. ``save(fitted, path)`` writes it again.
    """

    summarise = _IMNN.summarise
    get_estimate = _IMNN.get_estimate
    plot = _IMNN.plot

    def __init__(self, saved: Saved, backend: str | None = None):
        m = saved.manifest
        self.class_name, self.metadata = m["class"], m["metadata"]
        self.n_s, self.n_d, self.n_params, self.n_summaries = (
            m["n_s"], m["n_d"], m["n_params"], m["n_summaries"])
        self.input_shape = tuple(m["input_shape"])
        self.θ_fid = saved.arrays["θ_fid"]
        self.δθ = saved.arrays.get("δθ")
        self.model = model_from_tables(m["model"], f"{saved.path}: model")
        self.runtime = make_backend(backend or m["backend"])
        self.backend = self.runtime.name
        self.network = self.runtime.network(self.model, self.input_shape)
        weights = saved.weights(self.runtime.replicate)
        self.w, self.best_w, self.final_w = (weights[name] for name in WEIGHTS)
        self.state = [saved.arrays[f"state/{i}"] for i in range(m["state_leaves"])]
        self.history = saved.history()
        self.fit_iteration, self.patience_counter = m["fit_iteration"], m["patience_counter"]
        self._max_logdetF = float(saved.arrays["max_logdetF"])
        for name in STATISTICS:
            setattr(self, name, saved.arrays.get(f"statistics/{name}"))

    @property
    def max_detF(self) -> float:
        return math.exp(self._max_logdetF) if math.isfinite(self._max_logdetF) else 0.0

    def __repr__(self):
        return (f"FittedIMNN({self.class_name}, backend={self.backend!r}, "
                f"input_shape={self.input_shape}, n_params={self.n_params}, "
                f"{self.fit_iteration} iterations)")


__all__ = ["save", "load", "restore", "read", "FittedIMNN", "Saved", "DamagedFileError",
           "model_to_tables", "model_from_tables", "write_atomically"]
