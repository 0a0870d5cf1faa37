"""Reading an .imnn file: its format constants, ``Saved`` (the verified
contents) and ``read``, and ``weights_into``, which puts saved weights into the
structure and precision of a target. ``imnn.persistence`` describes the file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
from jax import tree_util

from ._archive import read_archive
from ._leaves import dtype_of, first_difference, key_paths
from ._manifest import check, history_keys, upgrade_v1

FORMAT = "imnn"
VERSION = 2
READS = (1, 2)
STATISTICS = ("F", "invF", "C", "invC", "μ", "dμ_dθ")
WEIGHTS = ("w", "best_w", "final_w")


# --- reading ------------------------------------------------------------------------------

class Saved(NamedTuple):
    """The verified contents of an .imnn file.

    Attributes:
        path: where it was read from.
        manifest: the manifest (a version 1 file's in the version 2 form).
        arrays: name -> NumPy array.
    """
    path: Path
    manifest: dict
    arrays: dict

    @property
    def metadata(self) -> dict:
        """The ``metadata`` given to ``save`` (covered by the manifest's checksum)."""
        return self.manifest["metadata"]

    @property
    def model_kind(self) -> str:
        """The kind of model saved: one of ``KINDS``."""
        return self.manifest["model_kind"]

    def weight_leaves(self, name: str) -> list[np.ndarray]:
        """The leaves of one set of stored weights.

        Args:
            name: which weights: "w", "best_w" or "final_w".

        Returns:
            Their leaves, in the order of ``manifest["weight_paths"]``.
        """
        stored = self.manifest["weights"][name]
        return [self.arrays[f"{stored}/{k}"] for k in range(len(self.manifest["weight_paths"]))]

    def state_leaves(self) -> list[np.ndarray]:
        """The optimiser state's leaves, in the order of ``manifest["state_paths"]``."""
        return [self.arrays[f"state/{k}"] for k in range(len(self.manifest["state_paths"]))]

    def history(self) -> dict:
        """The fit's history as IMNN objects hold it."""
        history = {key: self.arrays[f"history/{key}"] for key in history_keys()}
        history["max_detF"] = float(history["max_detF"])
        return history


def read(path: str | os.PathLike) -> Saved:
    """Read an .imnn file and check all of it before any of it is used.

    Reading imports nothing named in the file and runs none of its content.

    Args:
        path: the file.

    Returns:
        The manifest and arrays, checked: every member against its checksum and
        size, the manifest's entries against each other and against the arrays
        (shapes of θ_fid, statistics and history; imnn.nn weights against the
        model's layer tables).

    Raises:
        FileNotFoundError: no file at ``path``.
        DamagedFileError: the file is truncated, corrupted, inconsistent or not
            an .imnn file; the message names the first member or key at fault.
    """
    path = Path(path)
    manifest, arrays = read_archive(path, READS, FORMAT)
    if manifest["version"] == 1:
        manifest, arrays = upgrade_v1(path, manifest, arrays)
    check(path, manifest, arrays)
    return Saved(path, manifest, arrays)


def weights_into(saved, target, runtime, what) -> dict:
    """{"w", "best_w", "final_w"}: the saved weights in the structure and
    precision of ``target``, placed by ``runtime``; names saved as one object
    stay one object. ValueError naming the first leaf where file and target differ."""
    target_paths, target_leaves, treedef = key_paths(target)
    m = saved.manifest
    difference = first_difference(m["weight_paths"], saved.weight_leaves("w"), target_paths,
                                   target_leaves)
    if difference:
        raise ValueError(f"the weights in {saved.path} (model kind {m['model_kind']}"
                         f"{', ' + m['model_type'] if m['model_type'] else ''}) do not fit "
                         f"{what}: {difference}")
    placed = {}
    for name in set(m["weights"].values()):
        leaves = [np.asarray(a, dtype_of(t)) for a, t in zip(saved.weight_leaves(name),
                                                          target_leaves)]
        placed[name] = runtime.replicate(tree_util.tree_unflatten(treedef, leaves))
    return {name: placed[m["weights"][name]] for name in WEIGHTS}
