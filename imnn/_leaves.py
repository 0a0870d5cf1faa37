"""Weights and optimiser states leaf by leaf: key paths, and the first leaf at
which a saved pytree and a target differ."""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax import tree_util


def key_paths(tree) -> tuple[list[str], list, Any]:
    """(key paths as strings, leaves, treedef) of a pytree."""
    flat, treedef = tree_util.tree_flatten_with_path(tree)
    return [tree_util.keystr(p) for p, _ in flat], [leaf for _, leaf in flat], treedef


def unknown_path(path: str) -> bool:
    """Version 1 files did not keep the state's key paths: "<leaf k>" stands in."""
    return path.startswith("<leaf ")


def first_difference(paths, leaves, target_paths, target, by_path=True) -> str | None:
    """The first leaf, in tree order, at which (paths, leaves) and
    (target_paths, target) differ, in words, or None. A floating leaf may
    differ in precision only."""
    for k in range(max(len(leaves), len(target))):
        mine = paths[k] if k < len(paths) else None
        theirs = target_paths[k] if k < len(target_paths) else None
        if by_path and mine != theirs:
            if theirs is not None and theirs not in paths:
                return f"leaf {theirs} is in the model but not in the file"
            if mine is not None and mine not in target_paths:
                return f"leaf {mine} is in the file but not in the model"
            return f"leaf {k} is {mine} in the file but {theirs} in the model"
        if k >= len(leaves) or k >= len(target):
            return f"the file has {len(leaves)} leaves, the model {len(target)}"
        a, t = leaves[k], target[k]
        if np.shape(a) != np.shape(t):
            return f"leaf {theirs} has shape {np.shape(a)} in the file, {np.shape(t)} in the model"
        a_dtype, t_dtype = dtype_of(a), dtype_of(t)
        if a_dtype != t_dtype and not (a_dtype.kind == t_dtype.kind == "f"):
            return f"leaf {theirs} has dtype {a_dtype} in the file, {t_dtype} in the model"
    return None


def dtype_of(leaf) -> np.dtype:
    return np.dtype(getattr(leaf, "dtype", None) or np.asarray(leaf).dtype)


def like(array, template):
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
