"""Every backend computes the same numbers: JAX (x64), NumPy and Numba agree on
statistics, the loss and its parts, and the weight gradient, for every
derivative kind, an MLP on vectors and a conv model on fields, with n_s > n_d."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import imnn
import imnn._runtime
from imnn.simulators import GaussianRandomField
from imnn.utils import value_and_jacfwd

from conftest import INPUT_SHAPE, exact_data, mlp, numerical_data, simulator, δθ, θ_FID

BACKENDS = ("jax", "numpy", "numba")
FIELD = GaussianRandomField(N=8)


def conv_model():
    return imnn.nn.serial(
        imnn.nn.Reshape((8, 8, 1)), imnn.nn.Conv(4, (3, 3), (1, 1), "SAME"), imnn.nn.Elu(),
        imnn.nn.Conv(4, (2, 2), (2, 2), "VALID"), imnn.nn.Tanh, imnn.nn.Flatten,
        imnn.nn.Dense(2))


def field_data(kind, n_s, n_d):
    keys = jax.random.split(jax.random.PRNGKey(7), n_s)
    θ = jnp.asarray(FIELD.θ_fid)
    if kind == "exact":
        d, dd = jax.vmap(value_and_jacfwd(FIELD.simulate, argnums=1), in_axes=(0, None))(keys, θ)
        return np.asarray(d), np.asarray(dd[:n_d])
    shifts = jnp.einsum("i,jk->ijk", jnp.array([-1.0, 1.0]), jnp.diag(jnp.asarray(δθ)) / 2)
    fid = jax.vmap(FIELD.simulate, in_axes=(0, None))(keys, θ)
    der = jax.vmap(lambda k: jax.vmap(jax.vmap(lambda s: FIELD.simulate(k, θ + s)))(shifts))(keys[:n_d])
    return np.asarray(fid), np.asarray(der)


def build(kind, problem, backend, n_s=24, n_d=12):
    common = dict(n_s=n_s, n_d=n_d, n_params=2, n_summaries=2, optimiser=optax.adam(1e-3),
                  key_or_state=jax.random.PRNGKey(3), backend=backend)
    if problem == "mlp":
        common.update(input_shape=INPUT_SHAPE, θ_fid=θ_FID, model=mlp(16, 2, imnn.nn.Softplus))
        sim, make = simulator, {"exact": exact_data, "numerical": numerical_data}
        data = make.get(kind, lambda *a: None)(jax.random.PRNGKey(1), n_s, n_d)
    else:
        common.update(input_shape=(8, 8), θ_fid=np.asarray(FIELD.θ_fid), model=conv_model())
        sim = FIELD.simulate
        data = field_data(kind, n_s, n_d) if kind != "simulator" else None
    if kind == "exact":
        return imnn.GradientIMNN(**common, fiducial=data[0], derivative=data[1])
    if kind == "numerical":
        return imnn.NumericalGradientIMNN(**common, fiducial=data[0], derivative=data[1], δθ=δθ)
    return imnn.SimulatorIMNN(**common, simulator=sim)


def flat(tree):
    return np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in jax.tree.leaves(tree)])


@pytest.mark.parametrize("problem", ["mlp", "conv"])
@pytest.mark.parametrize("kind", ["exact", "numerical", "simulator"])
def test_backends_agree(kind, problem, x64):
    results = {}
    for backend in BACKENDS:
        model = build(kind, problem, backend)
        parts, grads = model.loss_and_gradient(10.0, 0.1, rng=jax.random.PRNGKey(5))
        # μ, C, dμ_dθ, F (numerical classes' get_summaries return the perturbed outputs)
        stats = model.set_F_statistics(key=np.asarray(jax.random.PRNGKey(6)), validate=False)
        results[backend] = (parts, flat(grads), stats, model)
    reference_parts, reference_grad, reference_stats, reference = results["numpy"]
    assert np.all(np.isfinite(reference_grad)) and np.linalg.norm(reference_grad) > 0
    for backend in ("jax", "numba"):
        parts, grad, stats, model = results[backend]
        for name, value in parts._asdict().items():
            np.testing.assert_allclose(value, getattr(reference_parts, name), rtol=1e-8,
                                       err_msg=f"{backend} {name}")
        # Whole-vector comparison: the last bias gradient is zero up to rounding.
        assert np.linalg.norm(grad - reference_grad) <= 1e-8 * np.linalg.norm(reference_grad)
        for name in ("μ", "C", "dμ_dθ", "F"):
            np.testing.assert_allclose(getattr(stats, name), getattr(reference_stats, name),
                                       rtol=1e-8, atol=1e-12, err_msg=f"{backend} {name}")


def test_numba_fit_tracks_jax_iteration_by_iteration(x64):
    fits = {}
    for backend in ("jax", "numba"):
        fid, der = exact_data(jax.random.PRNGKey(1), 200, 200)
        vfid, vder = exact_data(jax.random.PRNGKey(2), 200, 200)
        model = imnn.GradientIMNN(200, 200, 2, 2, INPUT_SHAPE, θ_FID, mlp(32), optax.adam(1e-3),
                                  jax.random.PRNGKey(0), fid, der, vfid, vder, backend=backend)
        model.fit(10.0, 0.1, max_iterations=20, min_iterations=20)
        fits[backend] = model
    np.testing.assert_allclose(fits["numba"].history["detF"], fits["jax"].history["detF"],
                               rtol=1e-6)
    np.testing.assert_allclose(fits["numba"].history["val_detF"],
                               fits["jax"].history["val_detF"], rtol=1e-6)
    assert len(fits["numba"].history["detF"]) == 20


def test_numba_fit_improves_fisher_tenfold():
    fid, der = exact_data(jax.random.PRNGKey(1), 500, 500)
    vfid, vder = exact_data(jax.random.PRNGKey(2), 500, 500)
    model = imnn.GradientIMNN(500, 500, 2, 2, INPUT_SHAPE, θ_FID, mlp(64), optax.adam(3e-3),
                              jax.random.PRNGKey(0), fid, der, vfid, vder, backend="numba")
    model.fit(10.0, 0.1, max_iterations=150, min_iterations=150)
    start, best = model.history["val_detF"][0], model.history["max_detF"]
    assert best >= 10 * start, (start, best)
    assert np.linalg.det(model.F) == pytest.approx(best, rel=1e-8)


def test_cotangents_agree(x64):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 3)) @ rng.normal(size=(3, 3))
    dx = rng.normal(size=(15, 3, 2))
    cotangents = {}
    for backend in BACKENDS:
        runtime = imnn._runtime.make_backend(backend)
        parts, ct = runtime.loss_and_cotangents(runtime.asarray(x), runtime.asarray(dx), 10.0,
                                                imnn.get_α(10.0, 0.1))
        cotangents[backend] = (flat(ct), float(parts.Λ))
    for backend in ("jax", "numba"):
        np.testing.assert_allclose(cotangents[backend][0], cotangents["numpy"][0], rtol=1e-8,
                                   atol=1e-14)
        assert cotangents[backend][1] == pytest.approx(cotangents["numpy"][1], rel=1e-10)
