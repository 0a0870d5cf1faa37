"""The checks an .imnn manifest passes before anything in it is used: every
entry present with its type, and the entries consistent with each other and
with the arrays (θ_fid, statistics and history shapes against n_params,
n_summaries and the fit's progress; an imnn.nn model's layers against its
weights). The first failure is a DamagedFileError naming the key or array."""
from __future__ import annotations

from . import nn
from ._archive import damaged
from ._models import KINDS
from ._tables import model_from_tables

_STATISTICS = {"F": ("p", "p"), "invF": ("p", "p"), "C": ("s", "s"), "invC": ("s", "s"),
               "μ": ("s",), "dμ_dθ": ("s", "p")}
_HISTORY = ("detF", "detC", "detinvC", "Λ2", "r")
_WEIGHTS = ("w", "best_w", "final_w")


def _int(value, minimum):
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _ints(value, minimum):
    return isinstance(value, list) and len(value) <= 32 and all(_int(n, minimum) for n in value)


def _strings(value):
    return isinstance(value, list) and all(isinstance(p, str) for p in value) and \
        len(set(value)) == len(value)


# key -> (test, what it must be)
_ENTRIES = {
    "class": (lambda v: isinstance(v, str) and v.isidentifier(), "a class name"),
    "backend": (lambda v: v in ("jax", "numpy", "numba"), '"jax", "numpy" or "numba"'),
    "n_s": (lambda v: _int(v, 2), "an integer of at least 2"),
    "n_d": (lambda v: _int(v, 1), "a positive integer"),
    "n_params": (lambda v: _int(v, 1), "a positive integer"),
    "n_summaries": (lambda v: _int(v, 1), "a positive integer"),
    "input_shape": (lambda v: _ints(v, 1) and len(v) > 0, "a list of positive integers"),
    "validate": (lambda v: isinstance(v, bool), "true or false"),
    "n_per_device": (lambda v: v is None or _int(v, 1), "null or a positive integer"),
    "n_devices": (lambda v: v is None or _int(v, 1), "null or a positive integer"),
    "model_kind": (lambda v: v in KINDS, "a model kind such as \"imnn.nn\""),
    "model": (lambda v: v is None or isinstance(v, list), "null or a list of layer tables"),
    "model_type": (lambda v: v is None or isinstance(v, str), "null or a string"),
    "weight_paths": (_strings, "a list of distinct key paths"),
    "weights": (lambda v: isinstance(v, dict) and set(v) == set(_WEIGHTS) and all(
        v[k] in _WEIGHTS and v[v[k]] == v[k] for k in _WEIGHTS),
        'a table {"w": …, "best_w": …, "final_w": …} of the names they are stored under'),
    "state_paths": (lambda v: isinstance(v, list) and all(isinstance(p, str) for p in v),
                    "a list of key paths"),
    "fit_iteration": (lambda v: _int(v, 0), "a non-negative integer"),
    "patience_counter": (lambda v: _int(v, 0), "a non-negative integer"),
    "metadata": (lambda v: isinstance(v, dict), "a table"),
}


def check(path, m: dict, arrays: dict) -> None:
    """Raise DamagedFileError naming the first entry of manifest ``m`` that is
    missing, of the wrong type, or inconsistent with the others or ``arrays``."""
    for key, (test, what) in _ENTRIES.items():
        if key not in m:
            raise damaged(path, f"manifest key {key!r} is missing")
        if not test(m[key]):
            raise damaged(path, f"manifest key {key!r} must be {what}, got {_short(m[key])}")
    p, s = m["n_params"], m["n_summaries"]
    if m["n_d"] > m["n_s"]:
        raise damaged(path, f"manifest key 'n_d' ({m['n_d']}) exceeds 'n_s' ({m['n_s']})")
    if m["patience_counter"] > m["fit_iteration"]:
        raise damaged(path, f"manifest key 'patience_counter' ({m['patience_counter']}) "
                            f"exceeds 'fit_iteration' ({m['fit_iteration']})")
    if (m["model_kind"] == "imnn.nn") != (m["model"] is not None):
        raise damaged(path, f"manifest key 'model' must hold the layer tables of an imnn.nn "
                            f"model and only of one (model_kind is {m['model_kind']!r})")

    expected = {"θ_fid", "max_logdetF"} | {f"history/{k}" for k in history_keys()}
    optional = {"δθ"} | {f"statistics/{name}" for name in _STATISTICS}
    n_leaves = len(m["weight_paths"])
    expected |= {f"{name}/{k}" for name in set(m["weights"].values()) for k in range(n_leaves)}
    expected |= {f"state/{k}" for k in range(len(m["state_paths"]))}
    for name in sorted(expected - set(arrays)):
        raise damaged(path, f"array {name!r} is missing (manifest key 'arrays')")
    for name in sorted(set(arrays) - expected - optional):
        raise damaged(path, f"array {name!r} is not one an .imnn file holds "
                            "(manifest key 'arrays')")

    sizes = {"p": p, "s": s}
    keys = {"p": "'n_params'", "s": "'n_summaries'"}
    shaped = {"θ_fid": ("p",), "δθ": ("p",), "max_logdetF": ()}
    shaped.update({f"statistics/{name}": axes for name, axes in _STATISTICS.items()})
    for name, axes in shaped.items():
        if name not in arrays:
            continue
        array, shape = arrays[name], tuple(sizes[a] for a in axes)
        if array.shape != shape:
            named = sorted({keys[a] for a in axes})
            because = (f" (manifest key{'s' if len(named) > 1 else ''} {' and '.join(named)})"
                       if named else "")
            raise damaged(path, f"array {name!r} has shape {array.shape}, the manifest gives "
                                f"{shape}{because}")
        if array.dtype.kind != "f":
            raise damaged(path, f"array {name!r} has dtype {array.dtype}, not a float")
    statistics = [f"statistics/{name}" in arrays for name in _STATISTICS]
    if any(statistics) and not all(statistics):
        missing = [n for n, there in zip(_STATISTICS, statistics) if not there]
        raise damaged(path, f"array 'statistics/{missing[0]}' is missing (the file has some "
                            "of the statistics F, invF, C, invC, μ, dμ_dθ but not all)")
    _check_history(path, m, arrays)
    if m["model_kind"] == "imnn.nn":
        _check_layers(path, m, arrays)


def history_keys() -> tuple[str, ...]:
    """The keys of an IMNN's history."""
    return _HISTORY + tuple("val_" + key for key in _HISTORY) + ("max_detF",)


def _check_history(path, m, arrays):
    if arrays["history/max_detF"].shape != ():
        raise damaged(path, f"array 'history/max_detF' has shape "
                            f"{arrays['history/max_detF'].shape}, not a scalar")
    lengths = {}
    for key in history_keys()[:-1]:
        array = arrays[f"history/{key}"]
        if array.ndim != 1 or array.dtype.kind != "f":
            raise damaged(path, f"array 'history/{key}' must be a 1-D float array, got shape "
                                f"{array.shape} and dtype {array.dtype}")
        lengths[key] = len(array)
    for prefix in ("", "val_"):
        group = {prefix + key: lengths[prefix + key] for key in _HISTORY}
        if len(set(group.values())) > 1:
            raise damaged(path, f"the {prefix or 'training '}history arrays differ in length: "
                                f"{group}")
    n, n_val = lengths["detF"], lengths["val_detF"]
    if n_val not in (0, n):
        raise damaged(path, f"array 'history/val_detF' has {n_val} entries, the training "
                            f"history {n}")
    if m["fit_iteration"] > n:
        raise damaged(path, f"manifest key 'fit_iteration' ({m['fit_iteration']}) exceeds the "
                            f"{n} iterations in the history")


def _check_layers(path, m, arrays):
    """The imnn.nn model in the manifest against the input shape, n_summaries
    and the stored weights, before any weight is allocated."""
    try:
        model = model_from_tables(m["model"], "manifest key 'model'")
    except ValueError as error:
        raise damaged(path, str(error)) from None
    shape = tuple(m["input_shape"])
    expected = []  # (key path, shape, layer index, table)
    for i, (layer, table) in enumerate(zip(nn.layers_of(model), m["model"])):
        try:
            out = layer.output_shape(shape)
        except ValueError as error:
            raise damaged(path, f"manifest key 'model' layer {i} ({table}) does not take the "
                                f"output {shape} of the layers before it (manifest key "
                                f"'input_shape' is {list(m['input_shape'])}): {error}") from None
        expected += [(f"[{i}][{j}]", weight_shape, i, table)
                     for j, weight_shape in enumerate(layer.weight_shapes(shape))]
        shape = out
    if shape != (m["n_summaries"],):
        raise damaged(path, f"manifest key 'model' gives summaries of shape {shape}, manifest "
                            f"key 'n_summaries' is {m['n_summaries']}")
    paths = m["weight_paths"]
    if paths != [p for p, *_ in expected]:
        raise damaged(path, f"manifest key 'weight_paths' {_short(paths)} does not match the "
                            f"layers of manifest key 'model' {[p for p, *_ in expected]}")
    stored = set(m["weights"].values())
    for k, (key_path, kernel, i, table) in enumerate(expected):
        for name in [n for n in _WEIGHTS if n in stored]:
            array = arrays[f"{name}/{k}"]
            if array.shape != kernel:
                raise damaged(path, f"array '{name}/{k}' (weight {key_path} of layer {i}, "
                                    f"{table}) has shape {array.shape}, manifest keys 'model' "
                                    f"and 'input_shape' give {kernel}")
            if array.dtype.kind != "f":
                raise damaged(path, f"array '{name}/{k}' (weight {key_path} of layer {i}) has "
                                    f"dtype {array.dtype}, not a float")


def upgrade_v1(path, manifest, arrays):
    """A version 1 file (imnn.nn models only, weights stored as ``w/i/j``) in
    the version 2 form."""
    layers = manifest.get("weight_layers")
    n_state = manifest.get("state_leaves")
    if not (isinstance(layers, list) and all(isinstance(n, int) and not isinstance(n, bool)
                                             and 0 <= n <= 2 for n in layers)):
        raise damaged(path, f"manifest key 'weight_layers' must be a list of per-layer leaf "
                            f"counts, got {layers!r}")
    if isinstance(n_state, bool) or not isinstance(n_state, int) or n_state < 0:
        raise damaged(path, f"manifest key 'state_leaves' must be a count, got {n_state!r}")
    positions = [(i, j) for i, n in enumerate(layers) for j in range(n)]
    renamed = {}
    for name, value in arrays.items():
        parts = name.split("/")
        if parts[0] in _WEIGHTS and len(parts) == 3:
            try:
                name = f"{parts[0]}/{positions.index((int(parts[1]), int(parts[2])))}"
            except ValueError:
                raise damaged(path, f"array {name!r} is not one of weight_layers "
                                    f"{layers}") from None
        renamed[name] = value
    manifest = {k: v for k, v in manifest.items() if k not in ("weight_layers", "state_leaves")}
    manifest.update(model_kind="imnn.nn", model_type=None,
                    weight_paths=[f"[{i}][{j}]" for i, j in positions],
                    state_paths=[f"<leaf {k}>" for k in range(n_state)])
    return manifest, renamed


def _short(value, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


__all__ = ["check", "history_keys", "upgrade_v1"]
