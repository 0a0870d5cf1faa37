"""Fisher statistics and the IMNN loss in JAX; cotangents by autodiff
(docs/design/behaviour.md#statistics-and-loss).

Everything goes through one Cholesky factor L of the covariance C and one
triangular solve of L against [∂μ/∂θ | I]: with A = L⁻¹ ∂μ/∂θ and L⁻¹,
F = AᵀA and C⁻¹ = (L⁻¹)ᵀL⁻¹, and ln|C⁻¹| = −ln|C|. The same quantities as
solving with C twice and factorising C⁻¹ again, in a graph (and a compiled
program, forward and backward) a third the size: the loss is traced and
compiled inside every fit step, for the training data and again for the
validation data.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from imnn.contracts import FisherStatistics, LossParts, Summaries


def _logdet(cholesky_lower):
    # NaN whenever the Cholesky factorisation failed (matrix not positive definite):
    # lax.linalg.cholesky then returns NaNs.
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(cholesky_lower)))


def _moments(x, dx_dθ):
    μ = jnp.mean(x, axis=0)
    centred = x - μ
    C = centred.T @ centred / (x.shape[0] - 1)
    return μ, C, jnp.mean(dx_dθ, axis=0)


def _inverse_and_projection(L, B):
    """(L⁻¹, L⁻¹ B) for a lower-triangular L (s, s) and B (s, p): one solve."""
    s = L.shape[0]
    solved = lax.linalg.triangular_solve(
        L, jnp.concatenate([jnp.eye(s, dtype=L.dtype), B], axis=1), left_side=True, lower=True)
    return solved[:, :s], solved[:, s:]


def _fisher(x, dx_dθ):
    μ, C, dμ_dθ = _moments(x, dx_dθ)
    L = lax.linalg.cholesky(C)
    invL, A = _inverse_and_projection(L, dμ_dθ)
    invC, F = invL.T @ invL, A.T @ A
    return μ, C, L, invC, dμ_dθ, F


def fisher_statistics(x, dx_dθ) -> FisherStatistics:
    """Gaussian Fisher statistics of summaries.

    Args:
        x: summaries, shape (n, s).
        dx_dθ: their derivatives, shape (n_d, s, p).

    Returns:
        FisherStatistics μ (s,), C (s, s), C⁻¹ (s, s), ∂μ/∂θ (s, p), F (p, p),
        F⁻¹ (p, p); NaN where C or F is not positive definite.
    """
    μ, C, _, invC, dμ_dθ, F = _fisher(x, dx_dθ)
    invL_F, _ = _inverse_and_projection(lax.linalg.cholesky(F), F[:, :0])
    return FisherStatistics(μ, C, invC, dμ_dθ, F, invL_F.T @ invL_F)


def loss(x, dx_dθ, λ, α) -> LossParts:
    """The IMNN loss Λ = −ln|F| + r(Λ2) Λ2 and its parts.

    Args:
        x: summaries, shape (n, s).
        dx_dθ: their derivatives, shape (n_d, s, p).
        λ: the regularisation strength (scalar).
        α: the regularisation rate (scalar).

    Returns:
        LossParts (Λ, ln|F|, ln|C|, ln|C⁻¹|, Λ2, r), scalars; ln|F| (and Λ) NaN
        where F is not positive definite, the log-determinants of C NaN where C is not.
    """
    _, C, L, invC, _, F = _fisher(x, dx_dθ)
    eye = jnp.eye(C.shape[0], dtype=C.dtype)
    logdetF = _logdet(lax.linalg.cholesky(F))
    logdetC = _logdet(L)
    Λ2 = jnp.linalg.norm(C - eye) + jnp.linalg.norm(invC - eye)
    r = λ * Λ2 / (Λ2 + jnp.exp(-α * Λ2))
    return LossParts(-logdetF + r * Λ2, logdetF, logdetC, -logdetC, Λ2, r)


def _loss_with_parts(summaries: Summaries, λ, α):
    parts = loss(summaries.x, summaries.dx_dθ, λ, α)
    return parts.Λ, parts


def loss_and_cotangents(x, dx_dθ, λ, α):
    """The loss parts and (dΛ/dx, dΛ/d(∂x/∂θ)), by reverse-mode autodiff.

    Args:
        x: summaries, shape (n, s).
        dx_dθ: their derivatives, shape (n_d, s, p).
        λ: the regularisation strength (scalar).
        α: the regularisation rate (scalar).

    Returns:
        (LossParts, Summaries of cotangents with the shapes of x and dx_dθ).
    """
    (_, parts), cotangents = jax.value_and_grad(_loss_with_parts, has_aux=True)(
        Summaries(x, dx_dθ), λ, α)
    return parts, cotangents
