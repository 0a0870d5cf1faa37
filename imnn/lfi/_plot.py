"""Corner plots of marginals and pairwise scatters of samples (matplotlib)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np

from imnn._types import ArrayLike
from imnn.lfi._marginals import Marginals, cell_widths

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def plot_marginals(marginals: Marginals | None, known: ArrayLike | None = None,
                   labels: Sequence[str] | None = None,
                   target_labels: Sequence[str] | None = None,
                   colours: Sequence[Any] | None = None,
                   levels: Sequence[float] = (0.68, 0.95), axes: ArrayLike | None = None,
                   figsize: tuple[float, float] | None = None) -> tuple[Figure, np.ndarray]:
    """Corner plot: 1-D marginals on the diagonal, credible contours below it.

    Args:
        marginals: a `Marginals` of n_targets posteriors, overlaid in colours C0, C1, …
            (None, from an ABC or PMC not yet run, is refused).
        known: None (default), (p,) true values (marked in black) or (n_targets, p) (marked
            in the targets' colours).
        labels: p axis labels (default None: θ_0, θ_1, …).
        target_labels: n_targets legend labels (default None: no legend).
        colours: n_targets matplotlib colours (default None: C0, C1, …).
        levels: probability masses of the contours (default (0.68, 0.95): 68 % solid, 95 %
            dashed; each the smallest region of grid cells holding that mass).
        axes: None (default: a new figure) or a (p, p) array of axes from an earlier call,
            to overplot.
        figsize: the new figure's size (when `axes` is None; default None: 2.5 p × 2.5 p
            inches).

    Returns:
        (figure, axes); axes is a (p, p) object array with None above the diagonal.

    Raises:
        ValueError: no marginals yet, or `axes` of the wrong shape.
    """
    if marginals is None:
        raise ValueError("no marginals to plot yet: run the ABC or PMC first")
    p = len(marginals.grid)
    figure, axes = _corner_axes(p, axes, figsize, labels)
    colours = _colours(colours, marginals.one_d[0].shape[0])
    target_labels = target_labels or [None] * len(colours)
    linestyles = ["solid", "dashed", "dotted"][:len(levels)][::-1]
    for t, (colour, label) in enumerate(zip(colours, target_labels)):
        for i in range(p):
            axes[i, i].plot(marginals.grid[i], marginals.one_d[i][t], color=colour, label=label)
            axes[i, i].set_xlim(marginals.grid[i][[0, -1]])
            for j in range(i):
                density = marginals.two_d[j, i][t]
                heights = credible_levels(density, cell_widths(marginals.grid[j]),
                                          cell_widths(marginals.grid[i]), levels)[::-1]
                if np.all(np.diff(heights) > 0):  # a posterior narrower than a cell has none
                    axes[i, j].contour(marginals.grid[j], marginals.grid[i], density.T,
                                       levels=heights, colors=colour, linestyles=linestyles)
                axes[i, j].set_xlim(marginals.grid[j][[0, -1]])
                axes[i, j].set_ylim(marginals.grid[i][[0, -1]])
    _finish(axes, known, colours, target_labels)
    return figure, axes


def credible_levels(density: np.ndarray, widths_i: np.ndarray, widths_j: np.ndarray,
                    masses: Sequence[float] = (0.68, 0.95)) -> np.ndarray:
    """Density heights enclosing the given probability masses in the highest-density cells.

    density (g_i, g_j) on a grid with cell widths (g_i,), (g_j,) -> one height per mass.
    """
    order = np.argsort(density, axis=None)[::-1]
    mass = (density * np.outer(widths_i, widths_j)).ravel()[order]
    cumulative = np.cumsum(mass) / np.sum(mass)
    index = np.minimum(np.searchsorted(cumulative, masses), len(order) - 1)
    return density.ravel()[order][index]


def plot_scatter(points: ArrayLike | Sequence[ArrayLike], known: ArrayLike | None = None,
                 labels: Sequence[str] | None = None,
                 target_labels: Sequence[str] | None = None,
                 colours: Sequence[Any] | None = None, axes: ArrayLike | None = None,
                 figsize: tuple[float, float] | None = None) -> tuple[Figure, np.ndarray]:
    """Pairwise scatter of samples with 1-D histograms on the diagonal.

    Args:
        points: (n, k) or one (n_t, k) array per target, overlaid in colours C0, C1, …
        known: None (default), (k,) or (n_targets, k) values to mark.
        labels: k axis labels (default None: θ_0, θ_1, …).
        target_labels: legend labels, one per array of `points` (default None: no legend).
        colours: matplotlib colours, one per array of `points` (default None: C0, C1, …).
        axes: None (default: a new figure) or a (k, k) array of axes from an earlier call,
            to overplot.
        figsize: the new figure's size (when `axes` is None; default None: 2.5 k × 2.5 k
            inches).

    Returns:
        (figure, axes): axes a (k, k) object array, None above the diagonal.

    Raises:
        ValueError: `axes` of the wrong shape.
    """
    points = [np.asarray(points)] if np.ndim(points[0]) == 1 else [np.asarray(x) for x in points]
    k = points[0].shape[1]
    figure, axes = _corner_axes(k, axes, figsize, labels)
    colours = _colours(colours, len(points))
    target_labels = target_labels or [None] * len(colours)
    for x, colour, label in zip(points, colours, target_labels):
        for i in range(k):
            axes[i, i].hist(x[:, i], bins=30, density=True, histtype="step", color=colour,
                            label=label)
            for j in range(i):
                axes[i, j].scatter(x[:, j], x[:, i], s=2, alpha=0.5, color=colour)
    _finish(axes, known, colours, target_labels)
    return figure, axes


def _corner_axes(p: int, axes: ArrayLike | None, figsize: tuple[float, float] | None,
                 labels: Sequence[str] | None) -> tuple[Figure, np.ndarray]:
    if axes is not None:
        axes = np.asarray(axes, dtype=object)
        if axes.shape != (p, p):
            raise ValueError(f"`axes` must be the ({p}, {p}) array of an earlier plot; got "
                             f"shape {axes.shape}")
        return axes[0, 0].figure, axes
    figure, grid = plt.subplots(p, p, figsize=figsize or (2.5 * p, 2.5 * p), squeeze=False)
    axes = np.empty((p, p), dtype=object)
    labels = labels or [rf"$\theta_{{{i}}}$" for i in range(p)]
    for i in range(p):
        for j in range(p):
            if j > i:
                grid[i, j].remove()
                continue
            axes[i, j] = grid[i, j]
            if i == p - 1:
                axes[i, j].set_xlabel(labels[j])
            if j == 0 and i > 0:
                axes[i, j].set_ylabel(labels[i])
            if i < p - 1:
                axes[i, j].tick_params(labelbottom=False)
            if 0 < j:
                axes[i, j].tick_params(labelleft=False)
    figure.subplots_adjust(wspace=0.05, hspace=0.05)
    return figure, axes


def _colours(colours: Sequence[Any] | None, n_targets: int) -> list[Any]:
    return list(colours) if colours is not None else [f"C{t}" for t in range(n_targets)]


def _finish(axes: np.ndarray, known: ArrayLike | None, colours: Sequence[Any],
            target_labels: Sequence[str | None]) -> None:
    """Marks known values (one row, or one per target) and adds a legend if labelled."""
    if known is not None:
        known = np.atleast_2d(np.asarray(known, float))
        known_colours = ["black"] if len(known) == 1 else colours
        for values, colour in zip(known, known_colours):
            for i in range(len(values)):
                axes[i, i].axvline(values[i], color=colour, linestyle="dotted")
                for j in range(i):
                    axes[i, j].axvline(values[j], color=colour, linestyle="dotted")
                    axes[i, j].axhline(values[i], color=colour, linestyle="dotted")
    if any(label is not None for label in target_labels):
        axes[0, 0].legend(frameon=False)
