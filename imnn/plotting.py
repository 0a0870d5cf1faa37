"""Plots of a fit's history."""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._types import ArrayLike

PANELS = (("detF", r"$|{\bf F}|$", "linear"), ("detC", r"$|{\bf C}|$", "log"),
          ("detinvC", r"$|{\bf C}^{-1}|$", "log"), ("Λ2", r"$\Lambda_2$", "linear"),
          ("r", r"$r$", "linear"))


def plot_history(history: Mapping[str, ArrayLike], ax: ArrayLike | None = None,
                 expected_detF: float | None = None, colour: Any = "C0",
                 figsize: tuple[float, float] = (5, 15), label: str = "",
                 filename: str | os.PathLike | None = None, ncol: int = 1) -> np.ndarray:
    """Stacked panels: det F (with the expected value), det C and det C⁻¹ (log
    scale, line at 1), Λ2 and r; training solid, validation dotted.

    Args:
        history: a fit's history: ``{"detF", "detC", "detinvC", "Λ2", "r"}`` and the
            same names prefixed ``val_``, each (n_iterations,) (a validation entry may be
            empty).
        ax: None (default: a new figure) or the 5 axes of an earlier call, to draw over.
        expected_detF: None (default) or the expected det F, drawn as a dashed line.
        colour: the matplotlib colour of the lines (default ``"C0"``).
        figsize: the new figure's size in inches (default (5, 15)).
        label: prefix of the legend entries (default ``""``).
        filename: None (default) or a path the figure is saved to.
        ncol: columns of the legend (default 1).

    Returns:
        (5,) the axes, so that a second history can be drawn over them.

    Raises:
        ValueError: ``ax`` does not hold 5 axes.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(len(PANELS), 1, sharex=True, figsize=figsize)
    ax = np.asarray(ax).ravel()
    if ax.size != len(PANELS):
        raise ValueError(f"ax must hold {len(PANELS)} axes, got {ax.size}")
    for axis, (key, title, scale) in zip(ax, PANELS):
        train, validation = np.asarray(history[key]), np.asarray(history["val_" + key])
        axis.plot(np.arange(train.size), train, color=colour, linestyle="solid",
                  label=f"{label} training".strip())
        if validation.size:
            axis.plot(np.arange(validation.size), validation, color=colour, linestyle="dotted",
                      label=f"{label} validation".strip())
        if key == "detF" and expected_detF is not None:
            axis.axhline(expected_detF, color="black", linestyle="dashed", label="expected")
        if scale == "log":
            axis.set_yscale("log")
            axis.axhline(1, color="black", linestyle="dashed")
        axis.set_ylabel(title)
    ax[0].legend(frameon=False, ncol=ncol)
    ax[-1].set_xlabel("iteration")
    if filename is not None:
        ax[0].figure.savefig(filename, bbox_inches="tight")
    return ax
