"""imnn.utils.value_and_jacfwd / value_and_jacrev follow JAX's conventions."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imnn.utils import value_and_jacfwd, value_and_jacrev


def f(x, y):
    return jnp.stack([jnp.sin(x[0]) * y, x[1] ** 2 * y ** 2, x[0] * x[1]])


@pytest.mark.parametrize("transform, reference", [(value_and_jacfwd, jax.jacfwd),
                                                  (value_and_jacrev, jax.jacrev)])
@pytest.mark.parametrize("argnums", [0, 1, (0, 1)])
def test_value_and_jacobian_match_jax(transform, reference, argnums):
    x, y = jnp.array([0.3, -1.2]), jnp.array(0.7)
    value, jacobian = transform(f, argnums=argnums)(x, y)
    np.testing.assert_allclose(value, f(x, y), rtol=1e-6)
    expected = reference(f, argnums=argnums)(x, y)
    for got, want in zip(jax.tree.leaves(jacobian), jax.tree.leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
        assert got.shape == want.shape


@pytest.mark.parametrize("transform", [value_and_jacfwd, value_and_jacrev])
def test_has_aux_returns_value_jacobian_and_aux(transform):
    g = lambda x: (x ** 3, {"norm": jnp.sum(x ** 2)})
    x = jnp.array([1.0, 2.0])
    value, jacobian, aux = transform(g, has_aux=True)(x)
    np.testing.assert_allclose(value, x ** 3)
    np.testing.assert_allclose(jacobian, jnp.diag(3 * x ** 2))
    assert float(aux["norm"]) == 5.0


def test_seed_usage_under_vmap():
    # The seed's recipe: simulations and their θ-derivatives in one call.
    sim = lambda key, θ: θ[0] + jax.random.normal(key, (10,)) * jnp.sqrt(θ[1])
    keys = jax.random.split(jax.random.PRNGKey(0), 5)
    θ = jnp.array([0.5, 2.0])
    d, dd = jax.vmap(value_and_jacfwd(sim, argnums=1), in_axes=(0, None))(keys, θ)
    assert d.shape == (5, 10) and dd.shape == (5, 10, 2)
    z = (d - 0.5) / jnp.sqrt(2.0)
    np.testing.assert_allclose(dd[..., 0], 1.0, rtol=1e-6)
    np.testing.assert_allclose(dd[..., 1], z / (2 * jnp.sqrt(2.0)), rtol=1e-5, atol=1e-6)
