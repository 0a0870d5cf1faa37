"""Fisher statistics, the loss and its parts, α on the JAX backend
(docs/design/behaviour.md#statistics-and-loss)."""
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imnn import get_α
from imnn.backends.jax import JaxBackend
from imnn.utils import value_and_jacfwd

from conftest import simulator, θ_FID


def sufficient_summaries(n):
    """The optimal summaries (sample mean, sample second moment) and ∂x/∂θ."""
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    f = lambda k, θ: (lambda d: jnp.stack([d.mean(), (d ** 2).mean()]))(simulator(k, θ))
    return jax.vmap(value_and_jacfwd(f, argnums=1), in_axes=(0, None))(keys, jnp.asarray(θ_FID))


def test_fisher_of_sufficient_summaries_is_analytic(x64):
    x, dx = sufficient_summaries(200_000)
    stats = JaxBackend().fisher_statistics(x, dx)
    # F = diag(10, 5) with sampling error ~ 1/sqrt(n) relative.
    np.testing.assert_allclose(stats.F, np.diag([10.0, 5.0]), atol=0.06)
    np.testing.assert_allclose(stats.F @ stats.invF, np.eye(2), atol=1e-10)
    np.testing.assert_allclose(stats.C @ stats.invC, np.eye(2), atol=1e-10)
    np.testing.assert_allclose(stats.C, np.cov(np.asarray(x).T, ddof=1), rtol=1e-10)


def test_loss_parts_match_the_formulas(x64):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 3)) @ rng.normal(size=(3, 3))
    dx = rng.normal(size=(20, 3, 2))
    λ, α = 10.0, get_α(10.0, 0.1)
    parts = JaxBackend().loss(jnp.asarray(x), jnp.asarray(dx), λ, α)
    C = np.cov(x.T, ddof=1)
    invC = np.linalg.inv(C)
    dμ = dx.mean(0)
    F = dμ.T @ invC @ dμ
    Λ2 = np.linalg.norm(C - np.eye(3)) + np.linalg.norm(invC - np.eye(3))
    r = λ * Λ2 / (Λ2 + np.exp(-α * Λ2))
    np.testing.assert_allclose(parts.logdetF, np.linalg.slogdet(F)[1], rtol=1e-12)
    np.testing.assert_allclose(parts.logdetC, np.linalg.slogdet(C)[1], rtol=1e-12)
    np.testing.assert_allclose(parts.logdetinvC, -np.linalg.slogdet(C)[1], rtol=1e-10)
    np.testing.assert_allclose(parts.Λ2, Λ2, rtol=1e-12)
    np.testing.assert_allclose(parts.r, r, rtol=1e-12)
    np.testing.assert_allclose(parts.Λ, -np.linalg.slogdet(F)[1] + r * Λ2, rtol=1e-12)


def test_cotangents_are_the_gradient_of_the_loss(x64):
    rng = np.random.default_rng(2)
    x, dx = jnp.asarray(rng.normal(size=(30, 2))), jnp.asarray(rng.normal(size=(10, 2, 2)))
    backend = JaxBackend()
    _, ct = backend.loss_and_cotangents(x, dx, 10.0, 0.5)
    h, e = 1e-6, np.zeros((30, 2))
    e[3, 1] = h
    numeric = (backend.loss(x + e, dx, 10.0, 0.5).Λ - backend.loss(x - e, dx, 10.0, 0.5).Λ) / (2 * h)
    np.testing.assert_allclose(ct.x[3, 1], numeric, rtol=1e-6)


def test_non_positive_definite_fisher_gives_nan(x64):
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(30, 2)))
    dx = jnp.zeros((10, 2, 2)).at[:, :, 0].set(1.0)  # rank-1 dμ/dθ: singular F
    parts = JaxBackend().loss(x, dx, 10.0, 0.5)
    assert not np.isfinite(parts.logdetF) and not np.isfinite(parts.Λ)


@pytest.mark.parametrize("λ, ε", [(10.0, 0.1), (10.0, 0.01), (3.0, 0.2)])
def test_alpha_sets_the_strength_at_epsilon(λ, ε):
    # r(Λ2) = λΛ2/(Λ2 + exp(−αΛ2)) equals λ/(λ + ε/(1+ε)) at Λ2 = ε.
    α = get_α(λ, ε)
    assert λ * ε / (ε + math.exp(-α * ε)) == pytest.approx(λ / (λ + ε / (1 + ε)), rel=1e-12)


@pytest.mark.parametrize("λ, ε, expected", [(10.0, 0.1, 0.9531), (10.0, 0.01, 240.68)])
def test_alpha_values(λ, ε, expected):
    assert get_α(λ, ε) == pytest.approx(expected, abs=1e-2 if expected > 100 else 1e-4)


def test_alpha_domain_error_names_lambda_and_epsilon():
    with pytest.raises(ValueError, match="λ=0.5 and ε=0.01"):
        get_α(0.5, 0.01)
    with pytest.raises(ValueError, match="λ"):
        get_α(-1.0, 0.1)
    with pytest.raises(TypeError, match="ε"):
        get_α(10.0, "0.1")


def test_alpha_warns_when_negative():
    with pytest.warns(RuntimeWarning, match="negative"):
        get_α(100.0, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_α(10.0, 0.1)
