"""Fisher statistics, the IMNN loss and its cotangents, by hand in float64
(docs/design/behaviour.md#statistics-and-loss).

Notation: x (n_s, s) summaries, D = ∂x/∂θ (n_d, s, p), Y = x − μ, M = dμ/dθ (s, p),
C = YᵀY/(n_s − 1), F = Mᵀ C⁻¹ M, A = C − I, B = C⁻¹ − I,
Λ2 = ‖A‖ + ‖B‖ (Frobenius), r = λΛ2/(Λ2 + e^{−αΛ2}), Λ = −ln|F| + r Λ2.

Cotangents (matrix calculus; C, C⁻¹, F⁻¹ symmetric):
    ∂(−ln|F|)/∂M = −2 C⁻¹M F⁻¹,    ∂(−ln|F|)/∂C = C⁻¹M F⁻¹ MᵀC⁻¹
    ∂Λ2/∂C = A/‖A‖ − C⁻¹ B C⁻¹/‖B‖
    dΛ/dΛ2 = r + Λ2 r'(Λ2),  r' = λ e^{−αΛ2}(1 + αΛ2)/(Λ2 + e^{−αΛ2})²
    dΛ/dx_i = 2 Y_i G_C/(n_s − 1)  (the path through μ vanishes since Σ_i Y_i = 0)
    dΛ/dD_i = G_M / n_d
A C or F that is not positive definite makes every derived quantity NaN.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.linalg import cho_solve, solve_triangular

from imnn.contracts import FisherStatistics, LossParts, Summaries


class _Gaussian(NamedTuple):
    """Everything the loss and its cotangents share."""
    Y: np.ndarray        # (n_s, s) centred summaries
    stats: FisherStatistics
    invC_M: np.ndarray   # (s, p) C⁻¹ dμ/dθ
    logdetC: np.float64
    logdetinvC: np.float64
    logdetF: np.float64


def _cholesky(A):
    """Lower Cholesky factor, or None when A is not (numerically) positive definite."""
    if not np.all(np.isfinite(A)):
        return None
    try:
        return np.linalg.cholesky(A)
    except np.linalg.LinAlgError:
        return None


def _logdet(L):
    return 2.0 * np.sum(np.log(np.diag(L))) if L is not None else np.float64(np.nan)


def _inverse(L, n):
    """A⁻¹ from its Cholesky factor (symmetrised against round-off); NaN without one."""
    if L is None:
        return np.full((n, n), np.nan)
    inverse = cho_solve((L, True), np.eye(n))
    return 0.5 * (inverse + inverse.T)


def _gaussian(x, dx_dθ) -> _Gaussian:
    x = np.asarray(x, dtype=np.float64)
    D = np.asarray(dx_dθ, dtype=np.float64)
    if x.ndim != 2 or D.ndim != 3 or D.shape[1] != x.shape[1]:
        raise ValueError(f"expected x (n_s, s) and dx_dθ (n_d, s, p), got {x.shape} and {D.shape}")
    if x.shape[0] < 2 or D.shape[0] < 1:
        raise ValueError(f"need n_s ≥ 2 and n_d ≥ 1, got n_s={x.shape[0]}, n_d={D.shape[0]}")
    s, p = D.shape[1:]
    μ = x.mean(axis=0)
    Y = x - μ
    C = Y.T @ Y / (x.shape[0] - 1)
    M = D.mean(axis=0)
    L = _cholesky(C)
    invC = _inverse(L, s)
    if L is None:
        invC_M, F = np.full((s, p), np.nan), np.full((p, p), np.nan)
    else:
        invC_M = cho_solve((L, True), M)
        Z = solve_triangular(L, M, lower=True)  # F = ZᵀZ is symmetric by construction
        F = Z.T @ Z
    LF = _cholesky(F)
    stats = FisherStatistics(μ=μ, C=C, invC=invC, dμ_dθ=M, F=F, invF=_inverse(LF, p))
    return _Gaussian(Y, stats, invC_M, _logdet(L), _logdet(_cholesky(invC)), _logdet(LF))


def fisher_statistics(x, dx_dθ) -> FisherStatistics:
    """x (n_s, s), dx_dθ (n_d, s, p) -> FisherStatistics (μ, C, invC, dμ_dθ, F, invF)."""
    return _gaussian(x, dx_dθ).stats


def _regulariser(g: _Gaussian, λ: float, α: float):
    """(Λ2, r, ‖A‖, ‖B‖, A, B)."""
    s = g.stats.C.shape[0]
    A, B = g.stats.C - np.eye(s), g.stats.invC - np.eye(s)
    norm_A, norm_B = np.linalg.norm(A), np.linalg.norm(B)
    Λ2 = norm_A + norm_B
    r = λ * Λ2 / (Λ2 + np.exp(-α * Λ2))
    return Λ2, r, norm_A, norm_B, A, B


def _parts(g: _Gaussian, Λ2, r) -> LossParts:
    return LossParts(Λ=-g.logdetF + r * Λ2, logdetF=g.logdetF, logdetC=g.logdetC,
                     logdetinvC=g.logdetinvC, Λ2=Λ2, r=r)


def loss(x, dx_dθ, λ: float, α: float) -> LossParts:
    """x (n_s, s), dx_dθ (n_d, s, p) -> LossParts (scalars); Λ is NaN if F is not PD."""
    g = _gaussian(x, dx_dθ)
    Λ2, r, *_ = _regulariser(g, λ, α)
    return _parts(g, Λ2, r)


def loss_and_cotangents(x, dx_dθ, λ: float, α: float) -> tuple[LossParts, Summaries]:
    """The loss and Summaries(dΛ/dx (n_s, s), dΛ/d(∂x/∂θ) (n_d, s, p))."""
    g = _gaussian(x, dx_dθ)
    Λ2, r, norm_A, norm_B, A, B = _regulariser(g, λ, α)
    invC, invF = g.stats.invC, g.stats.invF
    n_s, n_d = g.Y.shape[0], np.shape(dx_dθ)[0]

    decay = np.exp(-α * Λ2)
    dΛ_dΛ2 = r + Λ2 * λ * decay * (1.0 + α * Λ2) / (Λ2 + decay) ** 2
    # a zero norm has no gradient direction: take the zero subgradient
    dΛ2_dC = ((A / norm_A if norm_A > 0 else 0.0)
              - (invC @ B @ invC / norm_B if norm_B > 0 else 0.0))
    G_C = g.invC_M @ invF @ g.invC_M.T + dΛ_dΛ2 * dΛ2_dC
    G_M = -2.0 * g.invC_M @ invF

    dΛ_dx = 2.0 / (n_s - 1) * g.Y @ G_C
    dΛ_dD = np.broadcast_to(G_M / n_d, (n_d,) + G_M.shape).copy()
    return _parts(g, Λ2, r), Summaries(dΛ_dx, dΛ_dD)
