"""Aggregation (docs/design/behaviour.md#aggregation): the aggregated two-pass gradient
equals the full-batch gradient and does not depend on the number of devices or on
n_per_device."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import imnn
from imnn.backends.jax import statistics

from conftest import INPUT_SHAPE, exact_data, mlp, numerical_data, simulator, δθ, θ_FID

N_S, N_D = 48, 24


@functools.lru_cache  # numpy arrays, made once (also for use inside jax.jit)
def data(kind):
    if kind == "exact":
        return exact_data(jax.random.PRNGKey(1), N_S, N_D)
    if kind == "numerical":
        return numerical_data(jax.random.PRNGKey(1), N_S, N_D)
    return None


nn = imnn.nn
CONV_NETS = {  # on the 10 draws: 1-D, and 2-D on a 5×2 image; strides, SAME and VALID
    "conv-1d": nn.serial(nn.Reshape((10, 1)), nn.Conv(3, (3,), (2,), "SAME"), nn.Tanh,
                         nn.Conv(2, (2,), None, "VALID"), nn.Elu(), nn.Flatten, nn.Dense(2)),
    "conv-2d": nn.serial(nn.Reshape((5, 2, 1)), nn.Conv(3, (3, 2), (2, 1), "SAME"), nn.Tanh,
                         nn.Conv(4, (2, 2), None, "VALID"), nn.Softplus, nn.Flatten,
                         nn.Dense(2)),
}


def build(kind, devices=None, n_per_device=None, backend="jax", model=None):
    model = mlp(16, 2, imnn.nn.Tanh) if model is None else model
    args = (N_S, N_D, 2, 2, INPUT_SHAPE, θ_FID, model, optax.adam(1e-3),
            jax.random.PRNGKey(0))
    d = data(kind)
    agg = () if devices is None else (jax.devices()[0], devices, n_per_device)
    if kind == "exact":
        cls = imnn.GradientIMNN if devices is None else imnn.AggregatedGradientIMNN
        return cls(*args, *d, *agg, backend=backend)
    if kind == "numerical":
        if devices is None:
            return imnn.NumericalGradientIMNN(*args, *d, δθ, backend=backend)
        return imnn.AggregatedNumericalGradientIMNN(*args, *d, δθ, *agg, backend=backend)
    cls = imnn.SimulatorIMNN if devices is None else imnn.AggregatedSimulatorIMNN
    return cls(*args, simulator, *agg, backend=backend)


def full_batch_gradient(model, kind):
    """jax.grad of Λ over all simulations at once, written without the two passes."""
    apply = model.network.apply
    θ = jnp.asarray(θ_FID)

    def loss(w):
        if kind == "numerical":
            fid, der = (jnp.asarray(a) for a in data(kind))
            x = jax.vmap(lambda d: apply(w, d))(fid)
            raw = jax.vmap(jax.vmap(jax.vmap(lambda d: apply(w, d))))(der)  # (n_d, 2, p, s)
            dx = jnp.swapaxes((raw[:, 1] - raw[:, 0]) / jnp.asarray(δθ)[:, None], 1, 2)
        else:
            if kind == "exact":
                fid, der = (jnp.asarray(a) for a in data(kind))
                def f(d, t):
                    return jax.jvp(lambda d: apply(w, d), (d,), (t,))

                x = jax.vmap(lambda d: apply(w, d))(fid)
                dx = jax.vmap(lambda d, t: jax.vmap(lambda tt: f(d, tt)[1], in_axes=-1,
                                                     out_axes=-1)(t))(fid[:N_D], der)
            else:
                keys = imnn._sources.simulation_keys(jnp.asarray(jax.random.PRNGKey(5)), 0, N_S)
                def g(k, t):
                    return apply(w, simulator(k, t))

                x = jax.vmap(lambda k: g(k, θ))(keys)
                dx = jax.vmap(lambda k: jax.jacfwd(lambda t: g(k, t))(θ))(keys[:N_D])
        return statistics.loss(x, dx, 10.0, imnn.get_α(10.0, 0.1)).Λ

    return jax.grad(loss)(model.w)


def flat(tree):
    return np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in jax.tree.leaves(tree)])


@functools.lru_cache
def reference_gradient(kind, net=None):
    """``full_batch_gradient`` of ``build(kind)`` (with ``CONV_NETS[net]`` as the model when
    given), compiled, in float64: made once per process and shared by the tests."""
    with jax.enable_x64(True):
        data(kind)
        model = build(kind, model=None if net is None else CONV_NETS[net])
        return flat(jax.jit(lambda: full_batch_gradient(model, kind))())


# (devices, n_per_device): one device with 6 batches per stream, two devices with 2 batches
# each, four devices with one batch each; four devices with 2 batches each (n_s > n_d, so
# each simulation must meet its own cotangent) are in
# test_many_devices_with_n_s_greater_than_n_d_pair_each_simulation_with_its_cotangent.
LAYOUTS = [(1, 4), (2, 6), (4, 6)]


@pytest.mark.parametrize("kind", ["exact", "numerical", "simulator"])
def test_aggregated_gradient_equals_full_batch_gradient(kind, x64):
    reference = reference_gradient(kind)
    in_memory = flat(build(kind).loss_and_gradient(10.0, 0.1, rng=jax.random.PRNGKey(5))[1])
    assert np.linalg.norm(in_memory - reference) <= 1e-10 * np.linalg.norm(reference)
    for n_devices, n_per_device in LAYOUTS:
        if kind == "numerical" and (2 * 2 * N_D) % (n_devices * n_per_device):
            continue
        model = build(kind, jax.devices()[:n_devices], n_per_device)
        parts, grads = model.loss_and_gradient(10.0, 0.1, rng=jax.random.PRNGKey(5))
        error = np.linalg.norm(flat(grads) - reference) / np.linalg.norm(reference)
        assert error <= 1e-10, (n_devices, n_per_device, error)


@pytest.mark.parametrize("net", CONV_NETS)
@pytest.mark.parametrize("kind", ["exact", "simulator"])
def test_aggregated_conv_net_gradient_equals_full_batch_gradient(kind, net, x64):
    # Several batches per device run in a loop, where (on a CPU) the JAX backend
    # writes convolutions as matrix products: the gradient must not change.
    reference = reference_gradient(kind, net)
    for n_devices, n_per_device in [(1, 4), (4, 3)]:  # 6 and 2 batches per device
        model = build(kind, jax.devices()[:n_devices], n_per_device, model=CONV_NETS[net])
        grads = model.loss_and_gradient(10.0, 0.1, rng=jax.random.PRNGKey(5))[1]
        error = np.linalg.norm(flat(grads) - reference) / np.linalg.norm(reference)
        assert error <= 1e-10, (n_devices, n_per_device, error)


@pytest.mark.parametrize("kind", ["exact", "simulator"])
def test_many_devices_with_n_s_greater_than_n_d_pair_each_simulation_with_its_cotangent(kind, x64):
    # The earlier library mis-paired cotangents when n_devices > 1 and n_s > n_d.
    model = build(kind, jax.devices()[:4], 3)
    reference = reference_gradient(kind)
    error = np.linalg.norm(flat(model.loss_and_gradient(10.0, 0.1, rng=jax.random.PRNGKey(5))[1])
                           - reference)
    assert error <= 1e-10 * np.linalg.norm(reference)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("kind", ["exact", "numerical", "simulator"])
def test_reference_backends_aggregate_too(kind, backend, x64):
    # Against the full-batch gradient, which the JAX backend's aggregated gradient at the
    # same layout equals to 1e-10 (test_aggregated_gradient_equals_full_batch_gradient).
    reference = reference_gradient(kind)
    ref = build(kind, jax.devices()[:2], 6, backend=backend)
    ref_grad = flat(ref.loss_and_gradient(10.0, 0.1, rng=jax.random.PRNGKey(5))[1])
    assert np.linalg.norm(ref_grad - reference) <= 1e-8 * np.linalg.norm(reference)


def test_aggregated_fit_matches_in_memory_fit(x64):
    kw = dict(rng=jax.random.PRNGKey(2), min_iterations=100, max_iterations=15)
    a = build("simulator").fit(10.0, 0.1, **kw)
    b = build("simulator", jax.devices()[:4], 3).fit(10.0, 0.1, **kw)
    np.testing.assert_allclose(b.history["detF"], a.history["detF"], rtol=1e-10)
    # Whole-vector comparison: the last bias has a zero gradient up to rounding,
    # which Adam turns into steps of rounding size.
    difference = np.linalg.norm(flat(b.final_w) - flat(a.final_w))
    assert difference <= 1e-9 * np.linalg.norm(flat(a.final_w))


@pytest.mark.parametrize("kind", ["exact", "numerical"])
def test_aggregated_fit_with_validation_matches_in_memory_fit(kind, x64):
    # The validation pass as well as the training pass: with the gradient equalities above,
    # an aggregated fit is the in-memory fit up to rounding, so the in-memory anchors of
    # test_anchors.py (det F >= 45) hold for the aggregated classes too.
    args = (N_S, N_D, 2, 2, INPUT_SHAPE, θ_FID, mlp(16, 2, imnn.nn.Tanh), optax.adam(1e-3),
            jax.random.PRNGKey(0))
    make = exact_data if kind == "exact" else numerical_data
    train, validation = data(kind), make(jax.random.PRNGKey(2), N_S, N_D)
    layout = (jax.devices()[0], jax.devices()[:2], 6)  # 2 devices, several batches each
    if kind == "exact":
        a = imnn.GradientIMNN(*args, *train, *validation)
        b = imnn.AggregatedGradientIMNN(*args, *train, *layout, *validation)
    else:
        a = imnn.NumericalGradientIMNN(*args, *train, δθ, *validation)
        b = imnn.AggregatedNumericalGradientIMNN(*args, *train, δθ, *layout, *validation)
    for model in (a, b):
        model.fit(10.0, 0.1, min_iterations=100, max_iterations=15)
    for key in ("detF", "Λ2", "val_detF"):
        assert len(b.history[key]) == 15
        np.testing.assert_allclose(b.history[key], a.history[key], rtol=1e-10, err_msg=key)
    difference = np.linalg.norm(flat(b.final_w) - flat(a.final_w))
    assert difference <= 1e-9 * np.linalg.norm(flat(a.final_w))
    np.testing.assert_allclose(b.F, a.F, rtol=1e-9)


@pytest.mark.parametrize("n_devices, n_per_device, quantity", [
    (2, 5, "n_d"), (4, 4, "n_d"), (1, 7, "n_d")])
def test_uneven_splits_name_the_quantity(n_devices, n_per_device, quantity):
    with pytest.raises(ValueError, match=rf"{quantity} = \d+ .*{n_devices} device.*"
                                         rf"n_per_device = {n_per_device}"):
        build("exact", jax.devices()[:n_devices], n_per_device)


def test_uneven_remaining_and_numerical_splits():
    with pytest.raises(ValueError, match=r"n_s - n_d = 24"):
        args = (40, 16, 2, 2, INPUT_SHAPE, θ_FID, mlp(4), optax.adam(1e-3), jax.random.PRNGKey(0))
        imnn.AggregatedSimulatorIMNN(*args, simulator, jax.devices()[0], jax.devices()[:1], 16)
    fid, der = numerical_data(jax.random.PRNGKey(1), 30, 5)
    with pytest.raises(ValueError, match=r"2·p·n_d"):
        imnn.AggregatedNumericalGradientIMNN(
            30, 5, 2, 2, INPUT_SHAPE, θ_FID, mlp(4), optax.adam(1e-3), jax.random.PRNGKey(0),
            fid, der, δθ, jax.devices()[0], jax.devices()[:1], 15)


def test_bad_devices_and_host_are_rejected():
    args = (N_S, N_D, 2, 2, INPUT_SHAPE, θ_FID, mlp(4), optax.adam(1e-3), jax.random.PRNGKey(0),
            simulator)
    with pytest.raises(ValueError, match="devices must be a non-empty list"):
        imnn.AggregatedSimulatorIMNN(*args, jax.devices()[0], [], 4)
    with pytest.raises(TypeError, match="devices must hold JAX devices"):
        imnn.AggregatedSimulatorIMNN(*args, jax.devices()[0], ["gpu0"], 4)
    with pytest.raises(TypeError, match="host must be a JAX device"):
        imnn.AggregatedSimulatorIMNN(*args, "cpu", jax.devices()[:1], 4)
    with pytest.raises(ValueError, match="n_per_device"):
        imnn.AggregatedSimulatorIMNN(*args, jax.devices()[0], jax.devices()[:1], 0)


# --- what pass 1 keeps for pass 2 (memory_budget) -----------------------------------------

def _simulation_bytes(n_devices, n_s=N_S, n_d=N_D):
    """Per device: the simulations (10 draws) of both streams and the θ-tangents (p = 2)
    of the n_d with derivatives, in float64."""
    return ((n_d * (1 + 2) + (n_s - n_d)) * 10 * 8) // n_devices


def aggregated_simulator(devices, n_per_device, memory_budget):
    return imnn.AggregatedSimulatorIMNN(
        N_S, N_D, 2, 2, INPUT_SHAPE, θ_FID, mlp(16, 2, imnn.nn.Tanh), optax.adam(1e-3),
        jax.random.PRNGKey(0), simulator, jax.devices()[0], devices, n_per_device,
        memory_budget=memory_budget)


def kept_after_tracing(model):
    """Trace (not compile or run) one gradient of the model; what each stream kept."""
    data = model.source.data(model.runtime, jax.random.PRNGKey(5))
    jax.eval_shape(lambda w: imnn._fitting.loss_and_gradient(
        model.executor, w, model.source.training_streams(data, 0), model.source.sizes, 10.0,
        imnn.get_α(10.0, 0.1)), model.w)
    return model.executor.kept


@pytest.mark.parametrize("n_devices, n_per_device", [(1, 4), (2, 6), (4, 3)])
def test_kept_simulations_give_the_full_batch_gradient(n_devices, n_per_device, x64):
    reference = reference_gradient("simulator")
    devices = jax.devices()[:n_devices]
    # A budget of exactly the simulations: both streams keep them (several batches each).
    model = aggregated_simulator(devices, n_per_device, _simulation_bytes(n_devices))
    kept = flat(model.loss_and_gradient(10.0, 0.1, rng=jax.random.PRNGKey(5))[1])
    assert model.executor.kept == {"main": "simulations", "remaining": "simulations"}
    assert np.linalg.norm(kept - reference) <= 1e-10 * np.linalg.norm(reference)
    if n_devices == 2:  # and the same as re-simulating every batch in pass 2
        model = aggregated_simulator(devices, n_per_device, 0)
        resimulated = flat(model.loss_and_gradient(10.0, 0.1, rng=jax.random.PRNGKey(5))[1])
        assert model.executor.kept == {"main": "nothing", "remaining": "nothing"}
        assert np.linalg.norm(kept - resimulated) <= 1e-10 * np.linalg.norm(resimulated)


def test_a_budget_below_the_simulations_falls_back_to_resimulating(x64):
    main = N_D * (1 + 2) * 10 * 8  # one device: (d, ∂d/∂θ) of the n_d, in bytes
    remaining = (N_S - N_D) * 10 * 8
    for budget, kept in [
            (None, {"main": "everything", "remaining": "everything"}),
            (main + remaining, {"main": "simulations", "remaining": "simulations"}),
            (main + remaining - 1, {"main": "simulations", "remaining": "nothing"}),
            (main - 1, {"main": "nothing", "remaining": "simulations"}),
            (remaining - 1, {"main": "nothing", "remaining": "nothing"}),
            (0, {"main": "nothing", "remaining": "nothing"})]:
        model = aggregated_simulator(jax.devices()[:1], 4, budget)
        assert model.memory_budget == (imnn.backends.jax.execution.DEFAULT_MEMORY_BUDGET
                                       if budget is None else budget)
        assert kept_after_tracing(model) == kept, budget


def test_gradient_classes_keep_everything_or_nothing(x64):
    reference = reference_gradient("exact")
    fid, der = data("exact")
    for budget, kept in [(None, "everything"), (0, "nothing")]:
        model = imnn.AggregatedGradientIMNN(
            N_S, N_D, 2, 2, INPUT_SHAPE, θ_FID, mlp(16, 2, imnn.nn.Tanh), optax.adam(1e-3),
            jax.random.PRNGKey(0), fid, der, jax.devices()[0], jax.devices()[:2], 4,
            memory_budget=budget)
        grads = flat(model.loss_and_gradient(10.0, 0.1)[1])
        assert model.executor.kept == {"main": kept, "remaining": kept}
        assert np.linalg.norm(grads - reference) <= 1e-10 * np.linalg.norm(reference), kept


@pytest.mark.parametrize("budget, error", [(-1, ValueError), (1.5, TypeError),
                                           ("1GiB", TypeError)])
def test_bad_memory_budget_is_rejected(budget, error):
    with pytest.raises(error, match="memory_budget"):
        aggregated_simulator(jax.devices()[:1], 4, budget)
