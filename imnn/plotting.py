"""Plots of a fit's history."""
from __future__ import annotations

import numpy as np

PANELS = (("detF", r"$|{\bf F}|$", "linear"), ("detC", r"$|{\bf C}|$", "log"),
          ("detinvC", r"$|{\bf C}^{-1}|$", "log"), ("Λ2", r"$\Lambda_2$", "linear"),
          ("r", r"$r$", "linear"))


def plot_history(history, ax=None, expected_detF=None, colour="C0", figsize=(5, 15),
                 label="", filename=None, ncol=1):
    """Stacked panels: det F (with the expected value), det C and det C⁻¹ (log
    scale, line at 1), Λ2 and r; training solid, validation dotted. Returns the
    axes, so a second history can be drawn over them."""
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
