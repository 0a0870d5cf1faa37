"""Fisher statistics and the IMNN loss in JAX; cotangents by autodiff
(docs/design/behaviour.md#statistics-and-loss)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_factor, cho_solve

from imnn.contracts import FisherStatistics, LossParts, Summaries


def _logdet_pd(cholesky_lower):
    # NaN whenever the Cholesky factorisation failed (matrix not positive definite).
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(cholesky_lower)))


def _moments(x, dx_dθ):
    μ = jnp.mean(x, axis=0)
    centred = x - μ
    C = centred.T @ centred / (x.shape[0] - 1)
    return μ, C, jnp.mean(dx_dθ, axis=0)


def fisher_statistics(x, dx_dθ) -> FisherStatistics:
    μ, C, dμ_dθ = _moments(x, dx_dθ)
    cC = cho_factor(C, lower=True)
    invC = cho_solve(cC, jnp.eye(C.shape[0], dtype=C.dtype))
    F = dμ_dθ.T @ cho_solve(cC, dμ_dθ)
    F = 0.5 * (F + F.T)
    invF = cho_solve(cho_factor(F, lower=True), jnp.eye(F.shape[0], dtype=F.dtype))
    return FisherStatistics(μ, C, invC, dμ_dθ, F, invF)


def loss(x, dx_dθ, λ, α) -> LossParts:
    _, C, dμ_dθ = _moments(x, dx_dθ)
    eye = jnp.eye(C.shape[0], dtype=C.dtype)
    cC = cho_factor(C, lower=True)
    invC = cho_solve(cC, eye)
    F = dμ_dθ.T @ cho_solve(cC, dμ_dθ)
    F = 0.5 * (F + F.T)
    logdetF = _logdet_pd(jnp.linalg.cholesky(F))
    logdetC = _logdet_pd(cC[0])
    logdetinvC = _logdet_pd(jnp.linalg.cholesky(invC))
    Λ2 = jnp.linalg.norm(C - eye) + jnp.linalg.norm(invC - eye)
    r = λ * Λ2 / (Λ2 + jnp.exp(-α * Λ2))
    return LossParts(-logdetF + r * Λ2, logdetF, logdetC, logdetinvC, Λ2, r)


def _loss_with_parts(summaries: Summaries, λ, α):
    parts = loss(summaries.x, summaries.dx_dθ, λ, α)
    return parts.Λ, parts


def loss_and_cotangents(x, dx_dθ, λ, α):
    """The loss parts and (dΛ/dx, dΛ/d(∂x/∂θ)), by reverse-mode autodiff."""
    (_, parts), cotangents = jax.value_and_grad(_loss_with_parts, has_aux=True)(
        Summaries(x, dx_dθ), λ, α)
    return parts, cotangents
