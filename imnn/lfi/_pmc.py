"""ABC population Monte Carlo (Beaumont, Cornuet, Marin & Robert 2009)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, final

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from imnn._checks import positive_ints
from imnn._types import Array, ArrayLike, Compressor, Key, Simulator
from imnn.lfi._marginals import histogram_marginals, make_grid
from imnn.lfi._plot import plot_marginals, plot_scatter
from imnn.lfi._problem import Problem, draw_from_prior, make_problem, simulate

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class Round(NamedTuple):
    """One population of one target.

    Attributes:
        ϵ: its threshold.
        n_simulations: the simulations it took.
        acceptance_rate: the fraction of them accepted.
        completed: whether it was completed (else abandoned because the acceptance rate
            had certainly fallen below the criterion).
    """
    ϵ: float
    n_simulations: int
    acceptance_rate: float
    completed: bool


class Population(NamedTuple):
    """particles (N, p), summaries (N, s), distances (N,), weights (N,) summing to one;
    filled: how many of the N slots were filled; n_simulations, n_accepted: ints."""
    particles: Array
    summaries: Array
    distances: Array
    weights: Array
    filled: Array
    n_simulations: Array
    n_accepted: Array


def pmc_round(problem: Problem, key: Key, particles: Array, weights: Array, ϵ: float,
              target: Array, metric: Array, max_simulations: int,
              batch_size: int) -> Population:
    """One ABC-PMC population for one target, from the previous weighted population.

    particles (N, p), weights (N,), ϵ the new threshold, target (s,), metric (s, s).
    Proposals θ ~ Σ_j w_j N(θ_j, 2Σ), Σ the weighted covariance of the particles about
    their weighted mean, are drawn batch_size at a time, restricted to the prior's support
    (a draw outside is replaced by a fresh draw from the whole mixture, so the proposal
    density stays the mixture renormalised by one constant), simulated and accepted when
    their distance is <= ϵ. Stops when N are accepted or after max_simulations
    simulations, whichever comes first. Accepted θ get weights
    w ∝ prior(θ) / Σ_j w_j N(θ | θ_j, 2Σ).
    """
    n_points, p = particles.shape
    mean = weights @ particles
    centred = particles - mean
    chol = jnp.linalg.cholesky(2 * (centred.T * weights) @ centred)
    log_w = jnp.log(weights)
    cumulative = jnp.cumsum(weights)

    def from_mixture(key):
        key_pick, key_move = jax.random.split(key)
        # inverse-CDF choice of components (categorical's Gumbel trick needs batch × N noise)
        u = jax.random.uniform(key_pick, (batch_size,), maxval=cumulative[-1])
        j = jnp.minimum(jnp.searchsorted(cumulative, u, side="right"), n_points - 1)
        return particles[j] + jax.random.normal(key_move, (batch_size, p)) @ chol.T

    def in_support(θ):
        return jnp.isfinite(problem.prior.log_prob(θ))

    def redraw_outside(state):
        key, θ, inside = state
        key, sub = jax.random.split(key)
        fresh = from_mixture(sub)
        return key, jnp.where(inside[:, None], θ, fresh), inside | in_support(fresh)

    def propose(key):
        key, sub = jax.random.split(key)
        θ = from_mixture(sub)
        return jax.lax.while_loop(lambda state: ~jnp.all(state[2]), redraw_outside,
                                  (key, θ, in_support(θ)))[1]

    def simulate_batch(state):
        key, population = state
        key, key_propose, key_simulate = jax.random.split(key, 3)
        θ = propose(key_propose)
        summaries = simulate(problem, key_simulate, θ)
        distances = problem.distance(summaries, target, metric)
        accept = distances <= ϵ
        # accepted draws fill the next free slots; the rest (and any overflow) are dropped
        slot = jnp.where(accept, population.filled + jnp.cumsum(accept) - 1, n_points)
        return key, population._replace(
            particles=population.particles.at[slot].set(θ, mode="drop"),
            summaries=population.summaries.at[slot].set(summaries, mode="drop"),
            distances=population.distances.at[slot].set(distances, mode="drop"),
            filled=jnp.minimum(population.filled + accept.sum(), n_points),
            n_simulations=population.n_simulations + batch_size,
            n_accepted=population.n_accepted + accept.sum())

    def unfinished(state):
        population = state[1]
        return (population.filled < n_points) & (population.n_simulations < max_simulations)

    zero = jnp.zeros((), jnp.int32)
    empty = Population(jnp.zeros_like(particles), jnp.zeros((n_points, target.shape[0])),
                       jnp.full(n_points, jnp.inf), weights, zero, zero, zero)
    population = jax.lax.while_loop(unfinished, simulate_batch, (key, empty))[1]

    # log Σ_j w_j N(θ | θ_j, 2Σ), without the Gaussian's constant (it cancels on normalising)
    whiten = partial(jax.scipy.linalg.solve_triangular, chol, lower=True)
    u_old = whiten(particles.T).T

    def log_proposal(θ):
        u = whiten(θ)
        return jax.nn.logsumexp(log_w - jnp.sum((u - u_old) ** 2, axis=1) / 2)

    log_q = jax.lax.map(log_proposal, population.particles, batch_size=256)
    new_weights = jax.nn.softmax(problem.prior.log_prob(population.particles) - log_q)
    return population._replace(weights=new_weights)


@final
class PopulationMonteCarlo:
    """ABC population Monte Carlo: a sequence of importance-weighted ABC populations with
    shrinking thresholds ϵ (Beaumont et al. 2009).

    The arguments are those of `ApproximateBayesianComputation`, with the same meaning and
    the same checks.

    Args:
        target_data: the observed data, (n_targets,) + input_shape, or input_shape.
        prior: a `Prior` (as for `ApproximateBayesianComputation`).
        simulator: `simulator(key, θ (p,))` -> one simulation; JAX-traceable.
        compressor: `compressor(d (n,) + input_shape)` -> (n, s); JAX-traceable.
        F: None (default: Euclidean distance), (s, s) or (n_targets, s, s) Fisher matrix of
            the distance.
        gridsize: grid points per parameter for the marginals (an int or one per parameter,
            each >= 2; default 100).
        distance_measure: None (default) or
            `distance_measure(summaries (n, s), target (s,))` -> (n,); exclusive with `F`.

    Raises:
        ValueError: data, prior or matrices of the wrong shape, or both `F` and
            `distance_measure`.
        TypeError: a prior, simulator or compressor that is not what is described above.

    Attributes:
        parameters: (n_targets, N, p) the final population of each target (after a call).
        summaries: (n_targets, N, s) its compressed simulations.
        distances: (n_targets, N) their distances to the target.
        weights: (n_targets, N) importance weights, summing to one per target.
        ϵ: (n_targets,) threshold of the final populations (every distance is <= ϵ).
        n_simulations: (n_targets,) simulations used, initial prior draws included.
        history: per target, a list of `Round`, the initial rejection population first.
        marginals: a `Marginals` weighted histogram of the final populations.
    """

    def __init__(self, target_data: ArrayLike, prior: Any, simulator: Simulator,
                 compressor: Compressor, F: ArrayLike | None = None,
                 gridsize: int | Sequence[int] = 100,
                 distance_measure: Callable[[Array, Array], Array] | None = None) -> None:
        self.problem = make_problem(target_data, prior, simulator, compressor, F,
                                    distance_measure)
        self.grid = make_grid(self.problem.prior.low, self.problem.prior.high, gridsize)
        self._draw = jax.jit(partial(draw_from_prior, self.problem), static_argnums=1)
        self._round = jax.jit(partial(pmc_round, self.problem), static_argnames="batch_size")
        self.parameters = self.summaries = self.distances = self.weights = None
        self.ϵ = self.n_simulations = self.history = self.marginals = None

    @property
    def target_summaries(self) -> Array:
        """(n_targets, s) the compressed target data."""
        return self.problem.target_summaries

    def __call__(self, rng: Key, n_points: int, n_initial_points: int, percentile: float = 50.,
                 criterion: float = 0.1, max_iterations: int = 10, batch_size: int | None = None,
                 smoothing: float | None = None, progress: bool = True) -> PopulationMonteCarlo:
        """Run ABC-PMC for every target, from a fresh initial population.

        Args:
            rng: a JAX PRNG key.
            n_points: particles N in each population.
            n_initial_points: prior draws for the initial population (>= n_points): the
                n_points nearest to each target, equally weighted (drawn `batch_size` at a
                time, rounded up to whole batches).
            percentile: in (0, 100): each round's ϵ is this percentile of the current
                population's distances (default 50, the median, as in pyABC).
            criterion: in (0, 1] (default 0.1): stop once a round's acceptance rate
                (accepted / simulated) falls below it. A round that cannot reach it (N acceptances
                within N / criterion simulations) is abandoned, keeping the previous
                population.
            max_iterations: at most this many rounds after the initial population
                (default 10).
            batch_size: simulations per jitted batch (default None: n_points).
            smoothing: None (default) or the standard deviation, in grid cells, of a
                Gaussian smoothing of the marginals.
            progress: show a progress bar of the rounds, per target, on stderr (default
                True).

        Returns:
            self; see `parameters`, `weights` and `marginals`.

        Raises:
            ValueError: sizes that are not positive ints or with `n_points` outside
                [2, `n_initial_points`], or `percentile` or `criterion` out of range.
            TypeError: `progress` not a bool.
        """
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be a bool, got {type(progress).__name__}")
        batch_size = n_points if batch_size is None else batch_size
        positive_ints(n_points=n_points, n_initial_points=n_initial_points,
                            max_iterations=max_iterations, batch_size=batch_size)
        if n_points < 2 or n_initial_points < n_points:
            raise ValueError(f"need 2 <= `n_points` <= `n_initial_points`; got n_points="
                             f"{n_points}, n_initial_points={n_initial_points}")
        if not 0 < percentile < 100:
            raise ValueError(f"`percentile` must be in (0, 100); got {percentile}")
        if not 0 < criterion <= 1:
            raise ValueError(f"`criterion` must be in (0, 1]; got {criterion}")
        max_simulations = math.ceil(n_points / criterion)

        n_batches = math.ceil(n_initial_points / batch_size)
        rng, *keys = jax.random.split(rng, n_batches + 1)
        θ, summaries, distances = zip(*(self._draw(key, batch_size) for key in keys))
        θ, summaries, distances = (np.concatenate(θ), np.concatenate(summaries),
                                   np.concatenate(distances, axis=1))
        populations, self.history = [], []
        for t, (target, metric) in enumerate(zip(self.target_summaries, self.problem.metrics)):
            nearest = np.argsort(distances[t])[:n_points]
            population = Population(θ[nearest], summaries[nearest], distances[t, nearest],
                                    np.full(n_points, 1 / n_points, np.float32),
                                    n_points, n_batches * batch_size, n_points)
            history = [Round(float(population.distances.max()), n_batches * batch_size,
                             n_points / (n_batches * batch_size), True)]
            with tqdm(range(max_iterations), desc=f"PMC target {t}",
                      disable=not progress) as bar:
                for _ in bar:
                    ϵ = float(np.percentile(population.distances, percentile))
                    rng, key = jax.random.split(rng)
                    new = self._round(key, population.particles, population.weights, ϵ,
                                      target, metric, max_simulations, batch_size=batch_size)
                    rate = int(new.n_accepted) / int(new.n_simulations)
                    completed = int(new.filled) == n_points
                    history.append(Round(ϵ, int(new.n_simulations), rate, completed))
                    bar.set_postfix(ϵ=ϵ, acceptance=rate)
                    if completed:
                        population = new
                    if rate < criterion:
                        break
            populations.append(population)
            self.history.append(history)
        self.parameters, self.summaries, self.distances, self.weights = (
            np.stack([np.asarray(getattr(population, name)) for population in populations])
            for name in ("particles", "summaries", "distances", "weights"))
        self.ϵ = np.array([[r.ϵ for r in h if r.completed][-1] for h in self.history])
        self.n_simulations = np.array([sum(r.n_simulations for r in h) for h in self.history])
        self.marginals = histogram_marginals(self.parameters, self.grid, self.weights,
                                             smoothing=smoothing)
        return self

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
        """Pairwise scatter of the final particles, one colour per target.

        Args:
            **kwargs: keyword arguments of ``imnn.lfi.plot_scatter``.

        Returns:
            (figure, axes), as ``imnn.lfi.plot_scatter``.
        """
        return plot_scatter(list(self.parameters), **kwargs)

    def scatter_summaries(self, **kwargs: Any) -> tuple[Figure, np.ndarray]:
        """Pairwise scatter of the final particles' summaries, the target summaries marked.

        Args:
            **kwargs: keyword arguments of ``imnn.lfi.plot_scatter`` (``known`` defaults to
                the target summaries).

        Returns:
            (figure, axes), as ``imnn.lfi.plot_scatter``.
        """
        return plot_scatter(list(self.summaries),
                            **{"known": np.asarray(self.target_summaries), **kwargs})
