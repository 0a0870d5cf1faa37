"""Rejection approximate Bayesian computation."""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, final

import jax
import numpy as np
from tqdm.auto import tqdm

from imnn._checks import positive_ints
from imnn._types import Array, ArrayLike, Compressor, Key, Simulator
from imnn.lfi._marginals import histogram_marginals, make_grid
from imnn.lfi._plot import plot_marginals, plot_scatter
from imnn.lfi._problem import draw_from_prior, make_problem

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class Samples(NamedTuple):
    """Simulations for one target.

    Attributes:
        parameters: (n, p) the parameters drawn from the prior.
        summaries: (n, s) the compressed simulations.
        distances: (n,) their distances to the target's summaries.
    """
    parameters: Array
    summaries: Array
    distances: Array


@final
class ApproximateBayesianComputation:
    """Rejection ABC: keep prior draws whose compressed simulation lies within ϵ of a target.

    Args:
        target_data: the observed data, (n_targets,) + input_shape, or input_shape for one
            target; input_shape is the shape of `simulator(key, θ)`.
        prior: `imnn.lfi.Uniform` or any object with `sample(key, n)`, `log_prob(θ)` and
            finite `low`/`high` of shape (p,), or a numpyro or TensorFlow-Probability-on-JAX
            distribution with `low`/`high` (see `imnn.lfi.as_prior`).
        simulator: `simulator(key, θ (p,))` -> one simulation of shape input_shape;
            JAX-traceable.
        compressor: `compressor(d (n,) + input_shape)` -> (n, s); JAX-traceable, e.g. a
            fitted IMNN's `compressor()`.
        gridsize: grid points per parameter between `prior.low` and `prior.high` for the
            marginals: an int or one int per parameter, each >= 2 (default 100).
        F: None (default: Euclidean distance), (s, s) or (n_targets, s, s): the Fisher
            matrix of the distance sqrt((x − x_t)ᵀ F (x − x_t)); symmetric positive definite.
        distance_measure: None (default) or a JAX-traceable
            `distance_measure(summaries (n, s), target (s,))` -> (n,); exclusive with `F`.

    Raises:
        ValueError: data, prior or matrices of the wrong shape, or both `F` and
            `distance_measure`.
        TypeError: a prior, simulator or compressor that is not what is described above.

    Attributes:
        parameters: (N, p) every parameter drawn so far.
        summaries: (N, s) their compressed simulations.
        distances: (n_targets, N) their distances to each target.
        ϵ: (n_targets,) the threshold of the last call.
        accepted: one `Samples` per target, those with `distances <= ϵ`.
        rejected: one `Samples` per target, the others.
        marginals: a `Marginals` histogram of the accepted parameters (set by each call).
        grid: tuple of p arrays (g_i,).
        target_summaries: (n_targets, s).
    """

    def __init__(self, target_data: ArrayLike, prior: Any, simulator: Simulator,
                 compressor: Compressor, gridsize: int | Sequence[int] = 100,
                 F: ArrayLike | None = None,
                 distance_measure: Callable[[Array, Array], Array] | None = None) -> None:
        self.problem = make_problem(target_data, prior, simulator, compressor, F,
                                    distance_measure)
        self.grid = make_grid(self.problem.prior.low, self.problem.prior.high, gridsize)
        self._draw = jax.jit(partial(draw_from_prior, self.problem), static_argnums=1)
        self._clear()

    @property
    def target_summaries(self) -> Array:
        """(n_targets, s) the compressed target data."""
        return self.problem.target_summaries

    def _clear(self) -> None:
        n_targets, s = self.target_summaries.shape
        self.parameters = np.zeros((0, self.problem.prior.low.shape[0]))
        self.summaries = np.zeros((0, s))
        self.distances = np.zeros((n_targets, 0))
        self.ϵ = np.full(n_targets, np.nan)
        self.marginals = None

    def __call__(self, ϵ: ArrayLike, rng: Key, n_samples: int, min_accepted: int | None = None,
                 max_iterations: int = 10, smoothing: float | None = None,
                 replace: bool = False, progress: bool = True
                 ) -> ApproximateBayesianComputation:
        """Simulate in batches of ``n_samples`` prior draws until enough are accepted.

        Args:
            ε: float or (n_targets,) (also written ϵ): a simulation is accepted for a
                target when its distance to the target is <= ϵ.
            rng: a JAX PRNG key.
            n_samples: draws per jitted batch (simulated and compressed at once), >= 1.
            min_accepted: None (default) or int >= 1: keep drawing batches until every
                target has at least this many accepted samples (counting earlier calls'
                samples unless `replace`); None draws exactly one batch.
            max_iterations: at most this many batches in this call, >= 1 (default 10;
                warns if `min_accepted` is not reached).
            smoothing: None (default) or the standard deviation, in grid cells, of a
                Gaussian smoothing of the marginals.
            replace: discard the simulations of earlier calls (default False). Otherwise
                they are kept and judged against the new ϵ (all are prior draws, so this is
                still valid).
            progress: show a progress bar of the batches on stderr (default True).

        Returns:
            self; see `accepted` and `marginals`.

        Raises:
            ValueError: ϵ not positive or of the wrong shape, or a size that is not a
                positive int.
            TypeError: `progress` not a bool.
        """
        n_targets = self.target_summaries.shape[0]
        ϵ = np.asarray(ϵ, float)
        if ϵ.shape not in ((), (n_targets,)) or not np.all(ϵ > 0):
            raise ValueError(f"`ϵ` must be positive: a float or {n_targets} (one per target); "
                             f"got {ϵ}")
        ϵ = np.broadcast_to(ϵ, (n_targets,))
        positive_ints(n_samples=n_samples, max_iterations=max_iterations)
        if min_accepted is not None:
            positive_ints(min_accepted=min_accepted)
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be a bool, got {type(progress).__name__}")
        if replace:
            self._clear()
        self.ϵ = ϵ
        with tqdm(total=max_iterations, desc="ABC batches", disable=not progress) as bar:
            for _ in range(max_iterations):
                if min_accepted is not None and np.all(self.n_accepted >= min_accepted):
                    break
                rng, key = jax.random.split(rng)
                θ, summaries, distances = map(np.asarray, self._draw(key, n_samples))
                self.parameters = np.concatenate([self.parameters, θ])
                self.summaries = np.concatenate([self.summaries, summaries])
                self.distances = np.concatenate([self.distances, distances], axis=1)
                bar.update()
                bar.set_postfix(accepted=self.n_accepted.tolist())
                if min_accepted is None:
                    break
            else:  # only reached with min_accepted set: one batch otherwise breaks
                if np.any(self.n_accepted < min_accepted):
                    warnings.warn(f"ABC: {self.n_accepted.tolist()} samples accepted after "
                                  f"{max_iterations} batches, fewer than min_accepted="
                                  f"{min_accepted}; raise max_iterations or ϵ", stacklevel=2)
        self.marginals = histogram_marginals(
            [accepted.parameters for accepted in self.accepted], self.grid, smoothing=smoothing)
        return self

    @property
    def n_simulations(self) -> int:
        """The number of simulations drawn so far (N)."""
        return len(self.parameters)

    @property
    def n_accepted(self) -> np.ndarray:
        """(n_targets,) number of simulations within ϵ of each target."""
        return np.sum(self.distances <= self.ϵ[:, None], axis=1)

    @property
    def accepted(self) -> list[Samples]:
        """One `Samples` per target: the simulations within ϵ of it."""
        return self._split(True)

    @property
    def rejected(self) -> list[Samples]:
        """One `Samples` per target: the simulations farther than ϵ from it."""
        return self._split(False)

    def _split(self, accepted: bool) -> list[Samples]:
        masks = (self.distances <= self.ϵ[:, None]) == accepted
        return [Samples(self.parameters[m], self.summaries[m], d[m])
                for m, d in zip(masks, self.distances)]

    def marginal_plot(self, **kwargs: Any) -> tuple[Figure, np.ndarray]:
        """Corner plot of ``marginals``.

        Args:
            **kwargs: keyword arguments of ``imnn.lfi.plot_marginals`` (``known``,
                ``labels``, ``axes``, ...).

        Returns:
            (figure, axes), as ``imnn.lfi.plot_marginals``.

        Raises:
            ValueError: no call has made marginals yet.
        """
        return plot_marginals(self.marginals, **kwargs)

    def scatter_plot(self, **kwargs: Any) -> tuple[Figure, np.ndarray]:
        """Pairwise scatter of the accepted parameters, one colour per target.

        Args:
            **kwargs: keyword arguments of ``imnn.lfi.plot_scatter``.

        Returns:
            (figure, axes), as ``imnn.lfi.plot_scatter``.
        """
        return plot_scatter([a.parameters for a in self.accepted], **kwargs)

    def scatter_summaries(self, **kwargs: Any) -> tuple[Figure, np.ndarray]:
        """Pairwise scatter of the accepted summaries, the target summaries marked.

        Args:
            **kwargs: keyword arguments of ``imnn.lfi.plot_scatter`` (``known`` defaults to
                the target summaries).

        Returns:
            (figure, axes), as ``imnn.lfi.plot_scatter``.
        """
        return plot_scatter([a.summaries for a in self.accepted],
                            **{"known": np.asarray(self.target_summaries), **kwargs})
