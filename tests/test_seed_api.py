"""The seed's public methods, against values computed here independently:
``get_summaries(w, key, validate)``, ``set_F_statistics(w, key, validate)``,
``get_summary(input, w, θ, derivative, gradient)`` and ``get_gradient(dΛ_dx, w,
key)`` on every class, in float64. The network is a stax pair whose ``apply``
the test calls itself (vmap, jacfwd); the loss is written here from its
formulas; the chain get_summaries -> jax.grad of that loss -> get_gradient must
give the fit's own gradient."""
import itertools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.example_libraries import stax

import imnn
from imnn._sources import simulation_keys

from conftest import INPUT_SHAPE, simulator, δθ, θ_FID

# One worker runs the module (make test: --dist loadgroup): each class is built once.
pytestmark = pytest.mark.xdist_group("seed_api")
N_S, N_D, P, S = 16, 8, 2, 2
N_DEVICES, N_PER_DEVICE = 2, 2
λ, ε = 10.0, 0.1
CLASSES = ["SimulatorIMNN", "AggregatedSimulatorIMNN", "GradientIMNN", "AggregatedGradientIMNN",
           "NumericalGradientIMNN", "AggregatedNumericalGradientIMNN", "DatasetGradientIMNN",
           "DatasetNumericalGradientIMNN"]
# The classes the seed gives get_summary and get_gradient (the others have them too).
AGGREGATED = [name for name in CLASSES if name.startswith(("Aggregated", "Dataset"))]
KEY = jax.random.PRNGKey(7)


@pytest.fixture(scope="module", autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module")
def network():
    return stax.serial(stax.Dense(8), stax.Tanh, stax.Dense(S))


def gaussian_data(seed):
    """10 draws of N(θ0, θ1) at θ_fid = (0, 1), made in NumPy: fiducial (n_s, 10) and
    exact ∂d/∂θ (n_d, 10, 2) = (1, z/2); seed-matched numerical derivative
    (n_d, 2, 2, 10) at θ_fid ∓ δθ/2 in each parameter."""
    z = np.random.default_rng(seed).normal(size=(N_S,) + INPUT_SHAPE)
    fiducial = θ_FID[0] + z * np.sqrt(θ_FID[1])
    exact = np.stack([np.ones_like(z[:N_D]), z[:N_D] / (2 * np.sqrt(θ_FID[1]))], axis=-1)
    numerical = np.empty((N_D, 2, P) + INPUT_SHAPE)
    for side, sign in enumerate((-1.0, 1.0)):
        for α in range(P):
            θ = θ_FID + sign * δθ / 2 * np.eye(P)[α]
            numerical[:, side, α] = θ[0] + z[:N_D] * np.sqrt(θ[1])
    return (fiducial, exact), (fiducial, numerical)


@pytest.fixture(scope="module")
def data():
    (fid, der), (nfid, nder) = gaussian_data(1)
    (vfid, vder), (vnfid, vnder) = gaussian_data(2)
    return {"exact": (fid, der), "exact_val": (vfid, vder),
            "numerical": (nfid, nder), "numerical_val": (vnfid, vnder)}


def per_device(array):
    """Device j's batches: chunk j of n_devices equal contiguous chunks."""
    return array.reshape((N_DEVICES, -1, N_PER_DEVICE) + array.shape[1:])


def cycles(*arrays):
    """One repeating iterator per device over that device's batches."""
    chunks = [per_device(a) for a in arrays]
    return [itertools.cycle([tuple(c[j][b] for c in chunks) if len(chunks) > 1 else chunks[0][j][b]
                             for b in range(chunks[0].shape[1])]) for j in range(N_DEVICES)]


def build(name, network, data, validation=True):
    base = dict(n_s=N_S, n_d=N_D, n_params=P, n_summaries=S, input_shape=INPUT_SHAPE,
                θ_fid=θ_FID, model=network, optimiser=optax.adam(1e-3),
                key_or_state=jax.random.PRNGKey(0))
    aggregation = dict(host=jax.devices()[0], devices=jax.devices()[:N_DEVICES],
                       n_per_device=N_PER_DEVICE)
    fid, der = data["exact"]
    vfid, vder = data["exact_val"]
    nfid, nder = data["numerical"]
    vnfid, vnder = data["numerical_val"]
    val = dict(validation_fiducial=vfid, validation_derivative=vder) if validation else {}
    nval = dict(validation_fiducial=vnfid, validation_derivative=vnder) if validation else {}
    if name == "SimulatorIMNN":
        return imnn.SimulatorIMNN(**base, simulator=simulator)
    if name == "AggregatedSimulatorIMNN":
        return imnn.AggregatedSimulatorIMNN(**base, simulator=simulator, **aggregation)
    if name == "GradientIMNN":
        return imnn.GradientIMNN(**base, fiducial=fid, derivative=der, **val)
    if name == "AggregatedGradientIMNN":
        return imnn.AggregatedGradientIMNN(**base, fiducial=fid, derivative=der, **aggregation,
                                           **val)
    if name == "NumericalGradientIMNN":
        return imnn.NumericalGradientIMNN(**base, fiducial=nfid, derivative=nder, δθ=δθ, **nval)
    if name == "AggregatedNumericalGradientIMNN":
        return imnn.AggregatedNumericalGradientIMNN(**base, fiducial=nfid, derivative=nder,
                                                    δθ=δθ, **aggregation, **nval)
    if name == "DatasetGradientIMNN":
        extra = dict(validation_main=cycles(vfid[:N_D], vder),
                     validation_remaining=cycles(vfid[N_D:])) if validation else {}
        return imnn.DatasetGradientIMNN(**base, main=cycles(fid[:N_D], der),
                                        remaining=cycles(fid[N_D:]), **aggregation, **extra)
    flat = (-1,) + INPUT_SHAPE
    extra = dict(validation_fiducial=cycles(vnfid),
                 validation_derivative=cycles(vnder.reshape(flat))) if validation else {}
    return imnn.DatasetNumericalGradientIMNN(**base, fiducial=cycles(nfid),
                                             derivative=cycles(nder.reshape(flat)), δθ=δθ,
                                             **aggregation, **extra)


@pytest.fixture(scope="module")
def models():
    """Each class built once for the module, on first use."""
    return {}


def model_of(name, models, network, data):
    if name not in models:
        models[name] = build(name, network, data)
    return models[name]


# --- what the test computes itself ---------------------------------------------------

@partial(jax.jit, static_argnums=0)
def summaries(apply, w, d):
    return jax.vmap(lambda one: apply(w, one))(d)


@partial(jax.jit, static_argnums=0)
def chain_rule(apply, w, d, dd_dθ):
    """(n, s, p): jacfwd of the network in d, contracted with ∂d/∂θ."""
    def one(d, dd):
        return jnp.tensordot(jax.jacfwd(lambda d: apply(w, d))(d), dd, axes=d.ndim)
    return jax.vmap(one)(d, dd_dθ)


@partial(jax.jit, static_argnums=0)
def through_simulator(apply, w, keys, θ):
    x = jax.vmap(lambda k: apply(w, simulator(k, θ)))(keys)
    dx = jax.vmap(lambda k: jax.jacfwd(lambda t: apply(w, simulator(k, t)))(θ))(keys)
    return x, dx


def finite_differences(x_mp):
    """(n_d, 2, p, s) outputs of the perturbed simulations -> ∂x/∂θ (n_d, s, p)."""
    return jnp.swapaxes((x_mp[:, 1] - x_mp[:, 0]) / jnp.asarray(δθ)[:, None], 1, 2)


def expected(name, apply, w, data, key, validate):
    """(x, second) as get_summaries returns them: second is ∂x/∂θ (n_d, s, p), or
    the perturbed outputs (n_d, 2, p, s) for the numerical classes."""
    if "Simulator" in name:
        keys = simulation_keys(np.asarray(key), 0, N_S)
        x, dx = through_simulator(apply, w, keys, jnp.asarray(θ_FID))
        return x, dx[:N_D]
    if "Numerical" in name:
        fid, der = data["numerical_val" if validate else "numerical"]
        x_mp = summaries(apply, w, der.reshape((-1,) + INPUT_SHAPE)).reshape((N_D, 2, P, S))
        return summaries(apply, w, fid), x_mp
    fid, der = data["exact_val" if validate else "exact"]
    return summaries(apply, w, fid), chain_rule(apply, w, fid[:N_D], der)


@jax.jit
def loss(x, dx_dθ):
    """The IMNN loss from its formulas."""
    n, s = x.shape
    c = x - x.mean(0)
    C = c.T @ c / (n - 1)
    invC = jnp.linalg.inv(C)
    dμ = dx_dθ.mean(0)
    F = dμ.T @ invC @ dμ
    Λ2 = jnp.linalg.norm(C - jnp.eye(s)) + jnp.linalg.norm(invC - jnp.eye(s))
    α = -np.log(ε * (λ - 1.0) + ε ** 2 / (1.0 + ε)) / ε
    r = λ * Λ2 / (Λ2 + jnp.exp(-α * Λ2))
    return -jnp.linalg.slogdet(F)[1] + r * Λ2


loss_gradient = jax.jit(jax.grad(loss, (0, 1)))
numerical_loss_gradient = jax.jit(jax.grad(lambda x, x_mp: loss(x, finite_differences(x_mp)),
                                           (0, 1)))


def assert_close(got, want, rtol=1e-10):
    """Equal to rtol relative to the largest value of ``want`` (a gradient's
    exactly-zero leaves, such as the last bias's, are rounding noise)."""
    got, want = jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)
    assert len(got) == len(want)
    scale = max(float(np.max(np.abs(np.asarray(e)))) for e in want)
    for g, e in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=rtol, atol=rtol * scale)


# --- the tests ---------------------------------------------------------------------

@pytest.mark.parametrize("name", AGGREGATED)
def test_summaries_then_loss_gradient_then_get_gradient_is_the_fit_gradient(
        name, models, network, data):
    model = model_of(name, models, network, data)
    apply = network[1]
    w = model.w
    key = KEY if "Simulator" in name else None
    got = model.get_summaries(w, key=key, validate=False)
    want = expected(name, apply, w, data, KEY, validate=False)
    assert_close(tuple(got), want)
    numerical = "Numerical" in name
    dΛ_dx = (numerical_loss_gradient if numerical else loss_gradient)(*got)
    gradient = model.get_gradient(dΛ_dx, w, key=key)
    parts, fit_gradient = model.loss_and_gradient(λ, ε, w, rng=key)
    assert float(parts.Λ) == pytest.approx(float(loss(*((got[0], finite_differences(got[1]))
                                                         if numerical else got))), rel=1e-10)
    assert_close(gradient, fit_gradient)
    assert jax.tree_util.tree_structure(gradient) == jax.tree_util.tree_structure(w)


@pytest.mark.parametrize("name", CLASSES)
def test_validate_chooses_the_data(name, models, network, data):
    model = model_of(name, models, network, data)
    apply, w = network[1], model.w
    key = KEY if "Simulator" in name else None
    if "Simulator" not in name:
        assert_close(tuple(model.get_summaries(w, validate=True)),
                     expected(name, apply, w, data, None, validate=True))
    model.set_F_statistics(w=w, key=key, validate=True)
    assert model.w is w
    x, second = expected(name, apply, w, data, KEY, validate="Simulator" not in name)
    dx = finite_differences(second) if "Numerical" in name else second
    C = np.cov(np.asarray(x), rowvar=False)
    dμ = np.asarray(dx).mean(0)
    assert_close((model.μ, model.C, model.dμ_dθ, model.F),
                 (np.asarray(x).mean(0), C, dμ, dμ.T @ np.linalg.inv(C) @ dμ), rtol=1e-9)
    if "Simulator" not in name:
        model.set_F_statistics(w=w, validate=False)     # the training data
        x, second = expected(name, apply, w, data, None, validate=False)
        assert_close(model.C, np.cov(np.asarray(x), rowvar=False))


def test_set_F_statistics_without_validation_set_uses_training_data(network, data):
    model = build("GradientIMNN", network, data, validation=False)
    model.set_F_statistics(validate=True)
    x, _ = expected("GradientIMNN", network[1], model.w, data, None, validate=False)
    assert_close(model.C, np.cov(np.asarray(x), rowvar=False))
    with pytest.raises(ValueError, match=r"validate=True\) needs a validation set"):
        model.get_summaries(validate=True)


@pytest.mark.parametrize("name", AGGREGATED)
def test_get_summary_of_one_example(name, models, network, data):
    model = model_of(name, models, network, data)
    apply, w = network[1], model.w
    rng = np.random.default_rng(0)
    ct, ct2 = rng.normal(size=S), rng.normal(size=(S, P))
    if "Simulator" in name:
        θ = jnp.array([0.3, 1.7])
        example = jax.random.PRNGKey(11)
        x = apply(w, simulator(example, θ))
        dx = jax.jacfwd(lambda t: apply(w, simulator(example, t)))(θ)

        def derivative_of(w):
            return jax.jacfwd(lambda t: apply(w, simulator(example, t)))(θ)
        plain, pair = example, example
    else:
        θ = None
        fid, der = data["exact"]
        d, dd = fid[3], der[3]
        x = apply(w, d)

        def derivative_of(w):
            return jnp.tensordot(jax.jacfwd(lambda d: apply(w, d))(d), dd, axes=1)
        dx = derivative_of(w)
        plain, pair = d, (d, dd)

    def forward(w):
        return apply(w, simulator(example, θ)) if "Simulator" in name else apply(w, d)

    assert_close(model.get_summary(plain, w, θ), x)
    assert_close(model.get_summary((ct, plain), w, θ, gradient=True),
                 jax.grad(lambda w: jnp.dot(ct, forward(w)))(w))
    if "Numerical" in name:
        with pytest.raises(ValueError, match="derivative must be False"):
            model.get_summary(pair, w, θ, derivative=True)
        return
    assert_close(model.get_summary(pair, w, θ, derivative=True), (x, dx))
    assert_close(model.get_summary(((ct, ct2), pair), w, θ, derivative=True, gradient=True),
                 jax.grad(lambda w: jnp.dot(ct, forward(w)) + jnp.sum(ct2 * derivative_of(w)))(w))


def test_seed_batching_attributes(models, network, data):
    exact = model_of("DatasetGradientIMNN", models, network, data)
    assert (exact.n_remaining, exact.n_iterations, exact.n_remaining_iterations) == (8, 2, 2)
    assert exact.batch_shape == exact.remaining_batch_shape == (2, 2, 2)
    numerical = model_of("AggregatedNumericalGradientIMNN", models, network, data)
    assert (numerical.fiducial_iterations, numerical.derivative_iterations) == (4, 8)
    assert numerical.derivative_output_shape == (N_D, 2, P, S)
    assert numerical.fiducial_batch_shape == (2, 4, 2)
    assert numerical.derivative_batch_shape == (2, 8, 2)


def test_factory_takes_the_shared_arguments_by_position(network, data):
    fid, der = data["exact"]
    shared = (N_S, N_D, P, S, INPUT_SHAPE, θ_FID, network, optax.adam(1e-3),
              jax.random.PRNGKey(0))
    model = imnn.IMNN(*shared, fiducial=fid, derivative=der)
    assert type(model) is imnn.GradientIMNN and model.n_s == N_S and model.n_d == N_D
    with pytest.raises(TypeError, match=r"IMNN got multiple values for n_s"):
        imnn.IMNN(*shared, n_s=N_S, fiducial=fid, derivative=der)
