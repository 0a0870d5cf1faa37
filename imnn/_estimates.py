"""Summaries of new simulations, score-compressed estimates, the compressor for
imnn.lfi and the history plot: the ``Estimates`` mixin, shared by every IMNN
class (through ``BaseIMNN``) and by ``imnn.persistence.FittedIMNN``.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import jax
import numpy as np

from ._sources import out_of_range
from .contracts import Array, Exact, Network, Runtime, Weights


def _as_simulations(name, d, input_shape, dtype):
    """``d`` as a finite real array of shape input_shape or (n,) + input_shape,
    within the range of the working precision ``dtype``."""
    try:
        d = np.asarray(d)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{name} must be an array of shape {input_shape} or "
                         f"(n,)+{input_shape}; it could not be read as one: {error}") from None
    if not (np.issubdtype(d.dtype, np.floating) or np.issubdtype(d.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers, got dtype {d.dtype}")
    if d.shape[max(d.ndim - len(input_shape), 0):] != tuple(input_shape) or \
            d.ndim not in (len(input_shape), len(input_shape) + 1):
        raise ValueError(f"{name} must have shape {input_shape} or (n,)+{input_shape}, "
                         f"got {d.shape}")
    if not np.all(np.isfinite(d)):
        bad = int(d.size - np.count_nonzero(np.isfinite(d)))
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf): their "
                         "summaries and estimates would be NaN")
    problem = out_of_range(d, dtype)
    if problem:
        raise ValueError(f"{name} {problem}")
    return d


class Estimates:
    """Mixin: what a fitted network does with new simulations.

    Reads from the object: ``runtime`` (``dtype``, ``asarray``,
    ``batch_summaries``), ``network`` (``apply``), ``backend``, ``input_shape``,
    ``n_params``, ``θ_fid``, ``w``, the Fisher statistics ``F, invF, invC, μ,
    dμ_dθ`` (None until computed) and ``history``.
    """

    # What the object provides (declared here, set by BaseIMNN or FittedIMNN).
    runtime: Runtime
    network: Network
    backend: str
    input_shape: tuple[int, ...]
    n_params: int
    θ_fid: np.ndarray
    w: Weights
    F: np.ndarray | None
    invF: np.ndarray | None
    invC: np.ndarray | None
    μ: np.ndarray | None
    dμ_dθ: np.ndarray | None
    history: dict

    def summarise(self, d: Array, w: Weights | None = None) -> np.ndarray:
        """Network outputs of simulations.

        Args:
            d: one simulation (input_shape) or a batch (n,) + input_shape of
                finite real numbers.
            w: weights (default: ``self.w``).

        Returns:
            (s,) or (n, s) summaries.

        Raises:
            TypeError, ValueError: ``d`` not real, of neither shape, non-finite or beyond
                the backend's floating-point range.
        """
        w = self.w if w is None else w
        d = _as_simulations("d", d, self.input_shape, self.runtime.dtype)
        single = d.ndim == len(self.input_shape)
        batch = d[None] if single else d
        x = np.asarray(self.runtime.batch_summaries(
            self.network, w, Exact(self.n_params), self.runtime.asarray(batch), False).x)
        return x[0] if single else x

    def get_estimate(self, d: Array) -> np.ndarray:
        """Score-compressed estimates θ̂ = θ_fid + F⁻¹ dμ_dθᵀ C⁻¹ (x − μ).

        Args:
            d: one simulation (input_shape) or a batch (n,) + input_shape.

        Returns:
            (p,) or (n, p) estimates.

        Raises:
            RuntimeError: no Fisher statistics yet (call fit or set_F_statistics).
            TypeError, ValueError: ``d`` rejected as by ``summarise``.
        """
        if self.F is None:
            raise RuntimeError("no Fisher statistics yet: call fit or set_F_statistics first")
        x = self.summarise(d)
        return self.θ_fid + (x - self.μ) @ self.invC @ self.dμ_dθ @ self.invF

    def compressor(self) -> Callable[[Array], jax.Array]:
        """The score compressor as a JAX function, for imnn.lfi.

        The current weights and Fisher statistics are fixed inside it: later fits do not
        change a compressor already made.

        Returns:
            A JAX-traceable function ``d (n,) + input_shape -> θ̂ (n, p)``, θ̂ = θ_fid +
            F⁻¹ dμ_dθᵀ C⁻¹ (x − μ) (docs/design/behaviour.md#estimate).

        Raises:
            RuntimeError: no Fisher statistics yet (call fit or set_F_statistics).
            ValueError: the backend is not ``"jax"`` (use get_estimate on the reference
                backends).
        """
        if self.F is None:
            raise RuntimeError("no Fisher statistics yet: call fit or set_F_statistics first")
        if not self.runtime.traces:
            raise ValueError("compressor() builds a JAX function and needs backend='jax'; "
                             "use get_estimate on a reference backend")
        import jax.numpy as jnp
        apply, w = self.network.apply, self.w
        θ_fid, μ = jnp.asarray(self.θ_fid), jnp.asarray(self.μ)
        projection = jnp.asarray(self.invC @ self.dμ_dθ @ self.invF)

        def compress(d):
            x = jax.vmap(lambda one: apply(w, one))(jnp.asarray(d, projection.dtype))
            return θ_fid + (x - μ) @ projection
        return compress

    def plot(self, ax: Any = None, expected_detF: float | None = None, colour: str = "C0",
             figsize: tuple[float, float] = (5, 15), label: str = "",
             filename: str | os.PathLike | None = None, ncol: int = 1) -> np.ndarray:
        """Plot the fitting history in five stacked panels.

        The panels show det F (with ``expected_detF`` as a dashed line), det C and det C⁻¹
        (log scale, line at 1), Λ2 and r; training solid, validation dotted. Needs
        matplotlib.

        Args:
            ax: five matplotlib axes to draw on, e.g. those returned by an earlier call, so
                that a second history is drawn over the first (default None: a new figure).
            expected_detF: the expected det F, drawn as a dashed line (default None: none).
            colour: matplotlib colour of the lines (default "C0").
            figsize: figure size in inches when a new figure is made (default (5, 15)).
            label: prefix of the legend labels (default "").
            filename: if given, the figure is saved there (default None).
            ncol: number of columns of the legend (default 1).

        Returns:
            The array of the five axes.

        Raises:
            ValueError: ``ax`` does not hold five axes.
        """
        from .plotting import plot_history
        return plot_history(self.history, ax=ax, expected_detF=expected_detF, colour=colour,
                            figsize=figsize, label=label, filename=filename, ncol=ncol)
