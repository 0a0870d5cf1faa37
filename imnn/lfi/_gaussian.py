"""The Gaussian approximation to the posterior: N(θ̂, F⁻¹) on the prior's grid."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, final

import numpy as np

from imnn._types import ArrayLike
from imnn.lfi._marginals import gaussian_marginals, make_grid
from imnn.lfi._plot import plot_marginals
from imnn.lfi._priors import as_prior

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@final
class GaussianApproximation:
    """Marginals of N(θ̂, F⁻¹) evaluated on a grid over the prior box (not renormalised to
    the box: the values are the normal densities themselves).

    Args:
        parameter_estimates: θ̂ of one target, shape (p,), or of several, (n_targets, p).
        invF: the inverse Fisher matrix F⁻¹, (p, p) shared by all targets or
            (n_targets, p, p); symmetric positive definite.
        prior: a `Prior` (or what `imnn.lfi.as_prior` accepts); only its bounds `low`,
            `high` (p,) are used, for the grid.
        gridsize: grid points per parameter, an int or one int per parameter (each >= 2;
            default 100).

    Raises:
        ValueError: shapes that do not match the prior's p, or an `invF` that is not
            symmetric positive definite.
        TypeError: a prior that is not what `imnn.lfi.as_prior` accepts.

    Attributes:
        parameter_estimates: (n_targets, p).
        invF: (n_targets, p, p).
        grid: tuple of p arrays, `grid[i]` of shape (g_i,).
        marginals: a `Marginals` with `one_d[i]` of shape (n_targets, g_i) and
            `two_d[i, j]` of shape (n_targets, g_i, g_j).
    """

    def __init__(self, parameter_estimates: ArrayLike, invF: ArrayLike, prior: Any,
                 gridsize: int | Sequence[int] = 100) -> None:
        prior = as_prior(prior)
        p = prior.low.shape[0]
        θ̂ = np.asarray(parameter_estimates, float)
        θ̂ = θ̂[None] if θ̂.ndim == 1 else θ̂
        if θ̂.ndim != 2 or θ̂.shape[1] != p:
            raise ValueError(f"`parameter_estimates` must have shape ({p},) or (n_targets, {p}) "
                             f"for the {p} parameters of the prior; got "
                             f"{np.shape(parameter_estimates)}")
        n_targets = θ̂.shape[0]
        invF = np.asarray(invF, float)
        if invF.shape not in ((p, p), (n_targets, p, p)):
            raise ValueError(f"`invF` must have shape ({p}, {p}) or ({n_targets}, {p}, {p}) to "
                             f"match `parameter_estimates`; got {invF.shape}")
        invF = np.broadcast_to(invF, (n_targets, p, p))
        if not (np.allclose(invF, np.swapaxes(invF, -1, -2))
                and np.all(np.linalg.eigvalsh(invF) > 0)):
            raise ValueError("`invF` must be symmetric positive definite")
        self.parameter_estimates, self.invF = θ̂, invF
        self.grid = make_grid(prior.low, prior.high, gridsize)
        self.marginals = gaussian_marginals(θ̂, invF, self.grid)

    def marginal_plot(self, **kwargs: Any) -> tuple[Figure, np.ndarray]:
        """Corner plot of ``marginals``.

        Args:
            **kwargs: keyword arguments of ``imnn.lfi.plot_marginals`` (``known``,
                ``labels``, ``axes``, ...).

        Returns:
            (figure, axes), as ``imnn.lfi.plot_marginals``.
        """
        return plot_marginals(self.marginals, **kwargs)
