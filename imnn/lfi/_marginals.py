"""Marginal densities on a grid over the prior box: Gaussian (analytic) and histogram.

The grid of parameter i is ``g_i`` evenly spaced points from ``low[i]`` to ``high[i]``.
Histograms bin each sample to its nearest grid point: the cell of a point is the interval
between the midpoints to its neighbours, clipped to the prior box, so the two end cells
are half as wide. Every cell is half-open except the last, which also holds ``high``
(numpy.histogram's rule), so a sample exactly on the upper prior edge is counted.
"""
from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import NamedTuple

import numpy as np
import scipy.ndimage

from imnn._types import ArrayLike


class Marginals(NamedTuple):
    """Marginal densities of one or several posteriors on a grid over the prior box.

    Attributes:
        grid: tuple of p arrays; `grid[i]` (g_i,) the points of parameter i, from `low[i]`
            to `high[i]`.
        one_d: tuple of p arrays; `one_d[i]` (n_targets, g_i) the density of θ_i at
            `grid[i]`.
        two_d: dict `{(i, j): (n_targets, g_i, g_j)}` for i < j: the joint density of
            (θ_i, θ_j) at `(grid[i][a], grid[j][b])`.
    """
    grid: tuple[np.ndarray, ...]
    one_d: tuple[np.ndarray, ...]
    two_d: dict[tuple[int, int], np.ndarray]


def make_grid(low: ArrayLike, high: ArrayLike,
              gridsize: int | Sequence[int]) -> tuple[np.ndarray, ...]:
    """gridsize: int or one int per parameter (each >= 2) -> tuple of p arrays (g_i,)."""
    p = len(low)
    sizes = np.broadcast_to(np.asarray(gridsize), (p,)) if np.ndim(gridsize) == 0 else gridsize
    if len(sizes) != p or any(int(g) != g or g < 2 for g in sizes):
        raise ValueError(f"`gridsize` must be an int >= 2 or {p} of them (one per parameter); "
                         f"got {gridsize!r}")
    return tuple(np.linspace(lo, hi, int(g)) for lo, hi, g in zip(
        np.asarray(low, float), np.asarray(high, float), sizes))


def cell_edges(points: np.ndarray) -> np.ndarray:
    """(g,) grid points -> (g + 1,) edges of their cells: the box ends and the midpoints."""
    return np.concatenate([points[:1], (points[1:] + points[:-1]) / 2, points[-1:]])


def cell_widths(points: np.ndarray) -> np.ndarray:
    """(g,) grid points -> (g,) widths of their cells (the two end cells are half-width)."""
    return np.diff(cell_edges(points))


def gaussian_marginals(mean: np.ndarray, cov: np.ndarray,
                       grid: Sequence[np.ndarray]) -> Marginals:
    """Marginals of N(mean, cov) evaluated (not renormalised) at the grid points.

    mean (n_targets, p), cov (n_targets, p, p).
    """
    one_d = tuple(_normal_density(points[None, :, None], mean[:, None, i:i + 1],
                                  cov[:, None, i:i + 1, i:i + 1])
                  for i, points in enumerate(grid))
    two_d = {}
    for i, j in combinations(range(len(grid)), 2):
        pair = [i, j]
        points = np.stack(np.meshgrid(grid[i], grid[j], indexing="ij"), -1)  # (g_i, g_j, 2)
        two_d[i, j] = _normal_density(points[None], mean[:, None, None, pair],
                                      cov[:, None, None][..., pair, :][..., pair])
    return Marginals(tuple(grid), one_d, two_d)


def _normal_density(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Multivariate normal density; x, mean (..., k), cov (..., k, k) broadcast together."""
    δ = x - mean
    k = δ.shape[-1]
    mahalanobis = np.einsum("...i,...i->...", δ, np.linalg.solve(cov, δ[..., None])[..., 0])
    return np.exp(-mahalanobis / 2) / np.sqrt((2 * np.pi) ** k * np.linalg.det(cov))


def histogram_marginals(samples: Sequence[ArrayLike], grid: Sequence[np.ndarray],
                        weights: Sequence[ArrayLike] | None = None,
                        smoothing: float | None = None) -> Marginals:
    """Weighted histogram densities of samples on the grid, one set of samples per target.

    Samples outside the prior box are not counted; each marginal integrates to one over
    the box (or is zero where no sample falls in it).

    Args:
        samples: n_targets arrays (n_t, p) (counts may differ between targets).
        grid: tuple of p arrays (g_i,), the grid points of each parameter.
        weights: None (default: equal weights) or n_targets arrays (n_t,).
        smoothing: None (default), or the standard deviation, in grid cells, of a Gaussian
            kernel that smooths the binned probabilities (reflected at the prior edges).

    Returns:
        A `Marginals` on `grid`.
    """
    p = len(grid)
    weights = [None] * len(samples) if weights is None else weights
    one_d = [[] for _ in range(p)]
    two_d = {pair: [] for pair in combinations(range(p), 2)}
    for θ, w in zip(samples, weights):
        θ = np.asarray(θ, float).reshape(-1, p)
        w = np.ones(len(θ)) if w is None else np.asarray(w, float)
        bins, inside = zip(*(_bin(θ[:, i], points) for i, points in enumerate(grid)))
        for i in range(p):
            one_d[i].append(_density(bins[i], inside[i], w, (len(grid[i]),), smoothing,
                                     cell_widths(grid[i])))
        for i, j in two_d:
            g_i, g_j = len(grid[i]), len(grid[j])
            two_d[i, j].append(_density(
                bins[i] * g_j + bins[j], inside[i] & inside[j], w, (g_i, g_j), smoothing,
                np.outer(cell_widths(grid[i]), cell_widths(grid[j]))))
    return Marginals(tuple(grid), tuple(np.stack(m) for m in one_d),
                     {pair: np.stack(m) for pair, m in two_d.items()})


def _bin(x: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n,) values -> (n,) index of the cell holding each value, and (n,) inside the box."""
    edges = cell_edges(points)
    inside = (x >= edges[0]) & (x <= edges[-1])
    # side="right" makes cells half-open [e_k, e_k+1); the clip closes the last one at high.
    return np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(points) - 1), inside


def _density(flat_bins: np.ndarray, inside: np.ndarray, w: np.ndarray, shape: tuple[int, ...],
             smoothing: float | None, cell_area: np.ndarray) -> np.ndarray:
    mass = np.bincount(flat_bins[inside], weights=w[inside], minlength=int(np.prod(shape)))
    total = mass.sum()
    mass = (mass / total if total > 0 else mass).reshape(shape)
    if smoothing is not None:
        mass = scipy.ndimage.gaussian_filter(mass, smoothing, mode="reflect")
    return mass / cell_area
