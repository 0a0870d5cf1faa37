"""Priors: the small contract the LFI classes need, a box prior, and the adaptation of
numpyro and TensorFlow-Probability-on-JAX distributions."""
from __future__ import annotations

from typing import Any, Protocol, final

import jax
import jax.numpy as jnp
import numpy as np

from imnn._types import Array, ArrayLike, Key


class Prior(Protocol):
    """What the LFI classes need from a prior over ``p`` parameters.

    low, high:       (p,) finite bounds; marginals are evaluated on a grid between them.
    sample(key, n):  -> (n, p) draws; JAX-traceable.
    log_prob(θ):     θ (n, p) -> (n,) log density, −inf outside the support; JAX-traceable.
    """
    low: Array
    high: Array

    def sample(self, key: Key, n: int) -> Array:
        """``n`` draws from the prior, shape (n, p); JAX-traceable."""
        ...

    def log_prob(self, θ: Array) -> Array:
        """The log density of each row of θ (n, p), shape (n,); −inf outside the support."""
        ...


@final
class Uniform:
    """The uniform prior on the box ``low <= θ <= high``.

    Args:
        low: (p,) finite lower bounds.
        high: (p,) finite upper bounds, each above its lower bound.

    Raises:
        ValueError: the bounds are not finite 1-D arrays of the same shape with low < high.

    Attributes:
        low: (p,) the lower bounds, a JAX array.
        high: (p,) the upper bounds, a JAX array.
    """

    def __init__(self, low: ArrayLike, high: ArrayLike) -> None:
        low, high = np.atleast_1d(np.asarray(low, float)), np.atleast_1d(np.asarray(high, float))
        if low.ndim != 1 or low.shape != high.shape:
            raise ValueError("Uniform: `low` and `high` must be 1-D arrays of the same "
                             f"shape (p,); got {low.shape} and {high.shape}")
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low < high)):
            raise ValueError(f"Uniform: need finite `low` < `high`; got low={low}, high={high}")
        self.low, self.high = jnp.asarray(low), jnp.asarray(high)

    def sample(self, key: Key, n: int) -> Array:
        """Uniform draws in the box.

        Args:
            key: a JAX PRNG key.
            n: the number of draws.

        Returns:
            (n, p) draws, ``jax.random.uniform(key, (n, p), minval=low, maxval=high)``.
        """
        return jax.random.uniform(key, (n, self.low.shape[0]), minval=self.low, maxval=self.high)

    def log_prob(self, θ: Array) -> Array:
        """The log density: −Σ log(high − low) inside the box (edges included), −inf outside.

        Args:
            θ: (n, p) parameters.

        Returns:
            (n,) log densities.
        """
        inside = jnp.all((θ >= self.low) & (θ <= self.high), axis=-1)
        return jnp.where(inside, -jnp.sum(jnp.log(self.high - self.low)), -jnp.inf)

    def __repr__(self) -> str:
        return f"Uniform(low={np.asarray(self.low)}, high={np.asarray(self.high)})"


@final
class _TFPPrior:
    """A TensorFlow-Probability-on-JAX distribution seen through the Prior contract.

    The distribution is either one event of shape (p,) (e.g. ``Blockwise``) or a batch of
    p scalar distributions (e.g. ``Uniform(low=[..], high=[..])``); log_prob sums the latter.
    """

    def __init__(self, distribution: Any, low: Array, high: Array) -> None:
        self.distribution, self.low, self.high = distribution, low, high

    def sample(self, key: Key, n: int) -> Array:
        return jnp.reshape(self.distribution.sample(sample_shape=(n,), seed=key),
                           (n, self.low.shape[0]))

    def log_prob(self, θ: Array) -> Array:
        log_prob = self.distribution.log_prob(θ)
        return jnp.sum(log_prob, axis=-1) if log_prob.ndim == θ.ndim else log_prob


@final
class _NumpyroPrior:
    """A numpyro distribution seen through the Prior contract.

    The distribution is either one event of shape (p,) (e.g. ``Uniform(low, high).to_event(1)``)
    or a batch of p scalar distributions (e.g. ``Uniform(low=[..], high=[..])``); log_prob sums
    the latter. ``sample(key, n)`` is ``distribution.sample(key, (n,))``: the key goes to
    numpyro as it is, so a numpyro ``Uniform(low, high)`` draws exactly what
    ``imnn.lfi.Uniform(low, high)`` draws for the same key (both are
    ``jax.random.uniform(key, (n, p), minval=low, maxval=high)``). log_prob is −inf outside the
    distribution's support, as the Prior contract asks, without evaluating numpyro's log_prob
    there (which would warn about out-of-support values).
    """

    def __init__(self, distribution: Any, low: Array, high: Array) -> None:
        self.distribution, self.low, self.high = distribution, low, high

    def sample(self, key: Key, n: int) -> Array:
        return jnp.reshape(self.distribution.sample(key, (n,)), (n, self.low.shape[0]))

    def log_prob(self, θ: Array) -> Array:
        inside = jnp.reshape(self.distribution.support(θ), (θ.shape[0], -1)).all(axis=1)
        # Outside the support numpyro's log_prob is evaluated at the box's centre instead,
        # and replaced by −inf below.
        safe = jnp.where(inside[:, None], θ, (self.low + self.high) / 2)
        log_prob = self.distribution.log_prob(safe)
        log_prob = jnp.sum(log_prob, axis=-1) if log_prob.ndim == θ.ndim else log_prob
        return jnp.where(inside, log_prob, -jnp.inf)


def _is_numpyro_distribution(prior: Any) -> bool:
    # Checked by the defining module, so that numpyro is never imported here.
    return any(cls.__module__.split(".")[0] == "numpyro" for cls in type(prior).__mro__)


def _is_tfp_distribution(prior: Any) -> bool:
    # TFP distributions call their sampling key `seed` and carry event and batch shapes.
    return hasattr(prior, "event_shape") and hasattr(prior, "batch_shape")


def as_prior(prior: Any) -> Prior:
    """Checks ``prior`` against the Prior contract, adapting numpyro and TFP distributions.

    Args:
        prior: an ``imnn.lfi.Uniform``, any object with ``sample(key, n) -> (n, p)``,
            ``log_prob(θ (n, p)) -> (n,)`` and bounds ``low``, ``high`` of shape (p,), a numpyro
            distribution, or a TensorFlow-Probability-on-JAX distribution. Distributions are
            one event of shape (p,) or a batch of p scalar distributions; those without
            ``low``/``high`` attributes (all but Uniform) need them set to the range of interest.

    Returns:
        ``prior`` itself when it follows the contract, else an adapter of the numpyro or
        TensorFlow-Probability distribution that does.

    Raises:
        TypeError: ``prior`` cannot be sampled or evaluated as documented.
        ValueError: it lacks finite bounds ``low < high`` of shape (p,).
    """
    if not (hasattr(prior, "sample") and hasattr(prior, "log_prob")):
        raise TypeError("`prior` must provide sample(key, n) -> (n, p) and log_prob(θ) -> (n,) "
                        "(e.g. imnn.lfi.Uniform) or be a numpyro or TensorFlow-Probability "
                        "distribution; "
                        f"got {type(prior).__name__}")
    try:
        low, high = (np.atleast_1d(np.asarray(getattr(prior, name), float))
                     for name in ("low", "high"))
    except (AttributeError, TypeError, ValueError) as error:
        raise ValueError(_needs_bounds(prior)) from error
    if (low.ndim != 1 or low.shape != high.shape or not np.all(np.isfinite(low))
            or not np.all(np.isfinite(high)) or not np.all(low < high)):
        raise ValueError(_needs_bounds(prior) + f" Got low={low}, high={high}.")
    if _is_numpyro_distribution(prior):
        prior = _NumpyroPrior(prior, jnp.asarray(low), jnp.asarray(high))
    elif _is_tfp_distribution(prior):
        prior = _TFPPrior(prior, jnp.asarray(low), jnp.asarray(high))
    p = low.shape[0]
    θ = jax.eval_shape(lambda key: prior.sample(key, 3), jax.random.PRNGKey(0))
    log_prob = jax.eval_shape(prior.log_prob, jax.ShapeDtypeStruct((3, p), jnp.float32))
    if θ.shape != (3, p) or log_prob.shape != (3,):
        raise TypeError(f"`prior`: sample(key, 3) must have shape (3, {p}) and log_prob of that "
                        f"shape (3,), matching low/high of shape ({p},); got {θ.shape} and "
                        f"{log_prob.shape}")
    return prior


def _needs_bounds(prior: Any) -> str:
    return (f"`prior` ({type(prior).__name__}) needs finite bounds `low` < `high`, arrays of shape "
            "(p,): the marginals are evaluated on a grid between them. For an unbounded "
            "distribution set them to the range of interest (prior.low = ..., prior.high = ...).")
