"""Reference network passes: conventions, forward-mode tangents, the weight gradient of the
whole pipeline (batch_summaries → loss_and_cotangents → batch_weight_gradient) against
finite differences of the loss, batch splitting, and NumPy/Numba agreement."""
import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.example_libraries import stax

from imnn import nn
from imnn.backends.jax import network as jax_network, summaries as jax_summaries
from imnn.contracts import (
    BatchBackend,
    Exact,
    FiniteDifference,
    StatisticsBackend,
    Summaries,
    ThroughSimulator,
    stream_sizes,
)
from imnn.reference.numba import NumbaBackend
from imnn.reference.numpy import NumpyBackend
from imnn.reference.numpy._network import _passes_of

NUMPY, NUMBA = NumpyBackend(), NumbaBackend()
P, N_S, N_D, λ, α = 2, 10, 5, 10.0, 0.9531
ACTIVATIONS = [nn.Tanh, nn.Relu, nn.LeakyRelu(0.2), nn.Softplus, nn.Elu(0.7), nn.Sigmoid]

MODELS = {
    **{f"mlp-{a.name}": ((5,), nn.serial(nn.Dense(6), a, nn.Dense(4), a, nn.Dense(3)))
       for a in ACTIVATIONS},
    "conv-same": ((6, 5, 1), nn.serial(
        nn.Conv(3, (3, 3), (2, 1), "SAME"), nn.Elu(0.7), nn.Conv(2, (2, 2), (1, 2), "SAME"),
        nn.Softplus, nn.Flatten, nn.Dense(3))),
    "conv-valid": ((7, 6, 1), nn.serial(
        nn.Conv(2, (3, 2), (2, 2), "VALID"), nn.LeakyRelu(0.2), nn.Conv(3, (2, 2), None, "VALID"),
        nn.Sigmoid, nn.Flatten, nn.Dense(3), nn.Tanh)),
    "conv-1d": ((9,), nn.serial(
        nn.Reshape((9, 1)), nn.Conv(2, (4,), (2,), "SAME"), nn.Relu,
        nn.Conv(2, (3,), (2,), "VALID"), nn.Tanh, nn.Flatten, nn.Dense(3))),
}


def build(backend, name, seed=0):
    """(network, weights with random biases) for one of MODELS."""
    input_shape, model = MODELS[name]
    net = backend.network(model, input_shape)
    rng = np.random.default_rng(seed)
    w = [tuple(a + 0.1 * rng.normal(size=a.shape) for a in layer) for layer in net.init(seed)]
    return net, w


def numpy_simulator(input_shape):
    """d = θ0 + θ1 z(key), returning (d, ∂d/∂θ) with the parameter axis last."""
    def simulator(key, θ):
        z = np.random.default_rng(np.asarray(key, dtype=np.uint64)).normal(size=input_shape)
        return θ[0] + θ[1] * z, np.stack([np.ones_like(z), z], axis=-1)
    return simulator


def jax_simulator(input_shape):
    def simulator(key, θ):
        return θ[0] + θ[1] * jax.random.normal(key, input_shape, dtype=θ.dtype)
    return simulator


def problem(kind_name, input_shape, seed=1):
    """(kind, {stream: inputs}) with N_S simulations, N_D of them with derivatives."""
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(N_S,) + input_shape)
    dd = rng.normal(size=(N_D,) + input_shape + (P,))
    if kind_name == "exact":
        return Exact(P), {"main": (d[:N_D], dd), "remaining": d[N_D:]}
    if kind_name == "finite-difference":
        δθ = np.array([0.1, 0.2])
        steps = np.stack([-δθ / 2, δθ / 2])                               # (2, p)
        moved = d[:N_D, None, None] + np.einsum("ka,n...a->nka...", steps, dd)
        return FiniteDifference(δθ), {"fiducial": d,
                                      "derivative": moved.reshape((-1,) + input_shape)}
    keys = rng.integers(0, 2 ** 32, size=(N_S, 2), dtype=np.uint32)
    if kind_name == "simulator-numpy":
        kind = ThroughSimulator(numpy_simulator(input_shape), np.array([0.5, 1.5]), True)
    else:
        kind = ThroughSimulator(jax_simulator(input_shape), np.array([0.5, 1.5]))
    return kind, {"main": keys[:N_D], "remaining": keys[N_D:]}


def length(inputs):
    return len(inputs[0]) if isinstance(inputs, tuple) else len(inputs)


def split(inputs, n_batches):
    """A stream's inputs cut into n_batches consecutive batches."""
    if isinstance(inputs, tuple):
        return list(zip(*(np.array_split(a, n_batches) for a in inputs)))
    return np.array_split(inputs, n_batches)


def summaries(backend, net, w, kind, streams):
    outputs = {name: backend.batch_summaries(net, w, kind, inputs,
                                             name in kind.derivative_streams)
               for name, inputs in streams.items()}
    return backend.assemble(kind, outputs)


def loss(backend, net, w, kind, streams):
    s = summaries(backend, net, w, kind, streams)
    return backend.loss(s.x, s.dx_dθ, λ, α).Λ


def gradient(backend, net, w, kind, streams, n_batches=1):
    """dΛ/dw by the two passes of the contracts, each stream in n_batches batches."""
    s = summaries(backend, net, w, kind, streams)
    _, ct = backend.loss_and_cotangents(s.x, s.dx_dθ, λ, α)
    sizes = {name: length(inputs) for name, inputs in streams.items()}
    stream_ct = backend.assemble_transpose(kind, ct, sizes)
    total = [tuple(np.zeros_like(a) for a in layer) for layer in w]
    for name, inputs in streams.items():
        with_derivative = name in kind.derivative_streams
        start = 0
        for batch in split(inputs, n_batches):
            b = length(batch)
            c = stream_ct[name]
            batch_ct = Summaries(c.x[start:start + b],
                                 c.dx_dθ[start:start + b] if with_derivative else None)
            g = backend.batch_weight_gradient(net, w, kind, batch, with_derivative, batch_ct)
            total = [tuple(t + gi for t, gi in zip(tl, gl)) for tl, gl in zip(total, g)]
            start += b
    return total


def relative_error(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


def flat(weights):
    """All arrays of a per-layer weight list as one vector. Gradients are compared whole:
    some entries are zero analytically (the last bias: Λ ignores a shift of x) and hold
    only round-off."""
    return np.concatenate([np.ravel(a) for layer in weights for a in layer])


# --- conventions ------------------------------------------------------------------------

@pytest.mark.parametrize("shape, kernel, strides, padding", [
    ((7, 6, 2), (3, 3), (1, 1), "SAME"), ((7, 6, 2), (2, 3), (2, 3), "SAME"),
    ((8, 5, 1), (4, 2), (3, 2), "SAME"), ((7, 6, 2), (3, 2), (2, 2), "VALID"),
    ((9, 2), (4,), (2,), "SAME"), ((9, 2), (3,), (3,), "VALID"), ((8, 1), (2,), (1,), "SAME"),
])
def test_convolution_follows_lax_conventions(shape, kernel, strides, padding):
    model = nn.serial(nn.Conv(3, kernel, strides, padding), nn.Flatten)
    net = NUMPY.network(model, shape)
    rng = np.random.default_rng(0)
    (W, b), = net.init(1)[:1]
    b = rng.normal(size=b.shape)
    d = rng.normal(size=shape)
    spec = ("NHC", "HIO", "NHC") if len(kernel) == 1 else ("NHWC", "HWIO", "NHWC")
    with jax.enable_x64(True):
        expected = jax.lax.conv_general_dilated(
            jnp.asarray(d[None]), jnp.asarray(W), strides, padding, dimension_numbers=spec)[0] + b
    np.testing.assert_allclose(net.apply([(W, b), ()], d), np.ravel(expected), rtol=1e-12,
                               atol=1e-14)
    assert net.output_shape == (expected.size,)


def test_dense_and_activation_by_hand():
    net = NUMPY.network(nn.serial(nn.Dense(3), nn.Elu(0.5)), (4,))
    w = net.init(2)
    d = np.array([0.3, -1.0, 2.0, 0.1])
    h = d @ w[0][0] + w[0][1]
    np.testing.assert_allclose(net.apply(w, d), np.where(h > 0, h, 0.5 * np.expm1(h)), rtol=1e-14)


def test_init_is_the_backend_neutral_initialisation():
    input_shape, model = MODELS["conv-same"]
    for backend in (NUMPY, NUMBA):
        for got, want in zip(backend.network(model, input_shape).init(3),
                             nn.init_weights(model, input_shape, 3)):
            for a, b in zip(got, want):
                assert a.dtype == np.float64
                np.testing.assert_array_equal(a, b)


# Every layer class, with shapes that change on every axis it acts on: (layer, input shape).
LAYER_CASES = [
    (nn.Dense(4), (5,)),
    (nn.Conv(3, (3, 2), (2, 1), "SAME"), (7, 5, 2)),
    (nn.Conv(2, (3, 2), (2, 3), "VALID"), (8, 7, 3)),
    (nn.Conv(2, (4,), (3,), "SAME"), (10, 2)),
    (nn.Reshape((3, 10)), (5, 6)),
    (nn.Flatten, (3, 4, 2)),
    (nn.Elu(0.7), (3, 2)),
]


@pytest.mark.parametrize("layer, input_shape", LAYER_CASES, ids=lambda c: repr(c))
def test_each_layer_output_and_weight_shapes_are_those_every_backend_gives(layer, input_shape):
    w = layer.init(np.random.default_rng(4), input_shape)
    assert tuple(a.shape for a in w) == tuple(layer.weight_shapes(input_shape))
    out = layer.output_shape(input_shape)
    Z = np.random.default_rng(5).normal(size=(2, 3) + input_shape)
    primal = []
    for backend in (NUMPY, NUMBA):
        passes = _passes_of(layer)(layer, input_shape, out, backend.kernels)
        Y = passes.forward(w, Z.copy())
        assert Y.shape == (2, 3) + out
        primal.append(Y[:, 0])
    with jax.enable_x64(True):
        apply = jax_network._APPLY[type(layer)]
        for conv in (jax_network._conv, jax_network._conv_as_product):
            h = jax.vmap(lambda d, conv=conv: apply(layer, input_shape, d, w, conv))(Z[:, 0])
            assert h.shape == (2,) + out
            primal.append(np.asarray(h))
    for other in primal[1:]:
        np.testing.assert_allclose(other, primal[0], rtol=1e-12, atol=1e-14)


def test_a_layer_without_backend_entries_is_a_type_error_naming_it():
    @dataclasses.dataclass(frozen=True)
    class Pool(nn.Layer):
        def output_shape(self, input_shape):
            return tuple(input_shape)

    model = nn.serial(Pool(), nn.Dense(2))
    assert nn.output_shape(model, (4,)) == (2,)
    with pytest.raises(TypeError, match=r"Pool\(\): no entry for Pool in backends/jax/network.py _APPLY"):
        jax_network.network(model, (4,), jnp.float32)
    for backend in (NUMPY, NUMBA):
        with pytest.raises(TypeError, match=r"Pool\(\): no entry for Pool in reference/numpy/_network.py _PASSES"):
            backend.network(model, (4,))


def test_an_unknown_derivative_kind_is_a_type_error_naming_it():
    class Other(NamedTuple):
        n_params: int

    outputs = {"main": Summaries(np.zeros((2, 3)), np.zeros((2, 3, P)))}
    for assemble in (NUMPY.assemble, jax_summaries.assemble):
        with pytest.raises(TypeError, match="unknown derivative kind Other"):
            assemble(Other(P), outputs)


def test_backends_fulfil_the_contracts():
    for backend, name in ((NUMPY, "numpy"), (NUMBA, "numba")):
        assert backend.name == name
        assert isinstance(backend, StatisticsBackend) and isinstance(backend, BatchBackend)


def test_other_models_raise_type_error():
    with pytest.raises(TypeError, match=r"imnn\.nn.*backend='jax'"):
        NUMPY.network(stax.serial(stax.Dense(3)), (4,))
    with pytest.raises(TypeError, match=r"imnn\.nn"):
        NUMBA.network(lambda w, d: d, (4,))


def test_network_of_another_backend_is_refused():
    net, w = build(NUMPY, "mlp-tanh")
    with pytest.raises(ValueError, match="numpy backend"):
        NUMBA.batch_summaries(net, w, FiniteDifference(np.ones(2)), np.zeros((1, 5)), False)


# --- derivatives ------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_forward_tangents_match_finite_differences_of_apply(name):
    net, w = build(NUMPY, name)
    rng = np.random.default_rng(4)
    d = rng.normal(size=(3,) + net.input_shape)
    dd = rng.normal(size=d.shape + (P,))
    out = NUMPY.batch_summaries(net, w, Exact(P), (d, dd), True)
    assert out.x.shape == (3, 3) and out.dx_dθ.shape == (3, 3, P)
    h = 1e-6
    for i in range(3):
        assert relative_error(out.x[i], net.apply(w, d[i])) < 1e-13
        fd = np.stack([(net.apply(w, d[i] + h * dd[i, ..., a])
                        - net.apply(w, d[i] - h * dd[i, ..., a])) / (2 * h) for a in range(P)],
                      axis=-1)
        assert relative_error(out.dx_dθ[i], fd) < 1e-6


CASES = [(name, "exact") for name in MODELS] + [
    (name, kind) for name in ("mlp-softplus", "conv-same", "conv-valid", "conv-1d")
    for kind in ("finite-difference", "simulator-numpy")] + [("mlp-tanh", "simulator-jax")]


@pytest.mark.parametrize("name, kind_name", CASES)
def test_weight_gradient_matches_finite_differences_of_the_loss(name, kind_name):
    net, w = build(NUMPY, name)
    kind, streams = problem(kind_name, net.input_shape)
    grad = gradient(NUMPY, net, w, kind, streams)
    assert [tuple(g.shape for g in layer) for layer in grad] == \
        [tuple(a.shape for a in layer) for layer in w]
    rng = np.random.default_rng(5)
    h = 1e-5
    for i, layer in enumerate(w):
        if not layer:
            continue
        # one direction per layer, so no layer's error hides behind another's gradient
        v = [tuple(rng.normal(size=a.shape) if j == i else np.zeros_like(a) for a in wl)
             for j, wl in enumerate(w)]
        shifted = [[tuple(a + sign * h * va for a, va in zip(wl, vl)) for wl, vl in zip(w, v)]
                   for sign in (1, -1)]
        numeric = (loss(NUMPY, net, shifted[0], kind, streams)
                   - loss(NUMPY, net, shifted[1], kind, streams)) / (2 * h)
        analytic = sum(np.vdot(g, va) for g, va in zip(grad[i], v[i]))
        assert abs(analytic - numeric) <= 1e-6 * abs(numeric), (i, analytic, numeric)


@pytest.mark.parametrize("name, kind_name", [("conv-same", "exact"), ("mlp-elu", "exact"),
                                             ("conv-valid", "finite-difference"),
                                             ("conv-1d", "simulator-numpy")])
def test_gradient_summed_over_batches_equals_one_batch(name, kind_name):
    net, w = build(NUMPY, name)
    kind, streams = problem(kind_name, net.input_shape)
    one = gradient(NUMPY, net, w, kind, streams)
    many = gradient(NUMPY, net, w, kind, streams, n_batches=3)
    assert relative_error(flat(many), flat(one)) < 1e-12


def test_empty_remaining_stream():
    # n_s == n_d: the remaining stream is empty and contributes nothing
    backend = NUMBA
    net, w = build(backend, "conv-same")
    kind, streams = problem("exact", net.input_shape)
    streams["remaining"] = streams["remaining"][:0]
    with_empty = gradient(backend, net, w, kind, streams)
    del streams["remaining"]
    assert relative_error(flat(with_empty), flat(gradient(backend, net, w, kind, streams))) == 0


def test_jax_simulator_derivatives_are_float64_and_exact():
    input_shape = (4, 3)
    kind, streams = problem("simulator-jax", input_shape)
    net = NUMPY.network(nn.serial(nn.Flatten, nn.Dense(3)), input_shape)
    w = net.init(0)
    with jax.enable_x64(True):
        d = np.stack([kind.simulator(jnp.asarray(k), jnp.asarray(kind.θ_fid))
                      for k in streams["main"]])
    assert d.dtype == np.float64
    z = (d - kind.θ_fid[0]) / kind.θ_fid[1]
    dd = np.stack([np.ones_like(z), z], axis=-1)                 # ∂(θ0 + θ1 z)/∂θ
    got = NUMPY.batch_summaries(net, w, kind, streams["main"], True)
    want = NUMPY.batch_summaries(net, w, Exact(P), (d, dd), True)
    np.testing.assert_allclose(got.x, want.x, rtol=1e-13)
    np.testing.assert_allclose(got.dx_dθ, want.dx_dθ, rtol=1e-12)
    plain = NUMPY.batch_summaries(net, w, kind, streams["remaining"], False)
    assert plain.dx_dθ is None and plain.x.shape == (N_S - N_D, 3)


# --- assemble ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", [Exact(P), FiniteDifference(np.array([0.1, 0.4]))])
def test_assemble_transpose_is_the_adjoint_of_assemble(kind):
    rng = np.random.default_rng(6)
    s, sizes = 3, stream_sizes(kind, N_S, N_D, P)
    outputs = {name: Summaries(rng.normal(size=(n, s)), rng.normal(size=(n, s, P))
                               if name in kind.derivative_streams else None)
               for name, n in sizes.items()}
    ct = Summaries(rng.normal(size=(N_S, s)), rng.normal(size=(N_D, s, P)))
    assembled = NUMPY.assemble(kind, outputs)
    assert assembled.x.shape == (N_S, s) and assembled.dx_dθ.shape == (N_D, s, P)
    transposed = NUMPY.assemble_transpose(kind, ct, sizes)
    lhs = np.vdot(assembled.x, ct.x) + np.vdot(assembled.dx_dθ, ct.dx_dθ)
    rhs = sum(np.vdot(outputs[n].x, transposed[n].x)
              + (np.vdot(outputs[n].dx_dθ, transposed[n].dx_dθ) if outputs[n].dx_dθ is not None
                 else 0.0) for n in sizes)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)


@pytest.mark.parametrize("kind", [Exact(P), FiniteDifference(np.array([0.1, 0.4])),
                                  ThroughSimulator(None, np.array([0.5, 1.5]))],
                         ids=["exact", "finite-difference", "simulator"])
def test_a_kinds_stream_cotangents_are_the_adjoint_of_its_seed_summaries(kind):
    rng = np.random.default_rng(8)
    s, sizes = 3, kind.stream_sizes(N_S, N_D)
    outputs = {name: Summaries(rng.normal(size=(n, s)), rng.normal(size=(n, s, P))
                               if name in kind.derivative_streams else None)
               for name, n in sizes.items()}
    seen = kind.seed_summaries(outputs, NUMPY.assemble)
    assert seen[0].shape == (N_S, s) and seen[1].shape == kind.seed_derivative_shape(N_D, s)
    ct = (rng.normal(size=(N_S, s)), rng.normal(size=kind.seed_derivative_shape(N_D, s)))
    streams = kind.stream_cotangents(*ct, N_D)
    assert set(streams) == set(sizes)
    lhs = np.vdot(seen[0], ct[0]) + np.vdot(seen[1], ct[1])
    rhs = sum(np.vdot(outputs[n].x, streams[n].x)
              + (np.vdot(outputs[n].dx_dθ, streams[n].dx_dθ) if streams[n].dx_dθ is not None
                 else 0.0) for n in sizes)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)


def test_finite_difference_assemble_formula():
    δθ = np.array([0.1, 0.4])
    X = np.random.default_rng(7).normal(size=(N_D, 2, P, 3))
    out = NUMPY.assemble(FiniteDifference(δθ), {
        "fiducial": Summaries(np.zeros((N_S, 3)), None),
        "derivative": Summaries(X.reshape(-1, 3), None)})
    for i, a, al in np.ndindex(N_D, 3, P):
        assert out.dx_dθ[i, a, al] == pytest.approx((X[i, 1, al, a] - X[i, 0, al, a]) / δθ[al])


# --- NumPy and Numba agree -----------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_numpy_and_numba_backends_agree(name):
    results = []
    for backend in (NUMPY, NUMBA):
        net, w = build(backend, name)
        kind, streams = problem("exact", net.input_shape)
        s = summaries(backend, net, w, kind, streams)
        fd_kind, fd_streams = problem("finite-difference", net.input_shape)
        results.append([net.apply(w, streams["remaining"][0]), s.x, s.dx_dθ,
                        backend.loss(s.x, s.dx_dθ, λ, α).Λ,
                        summaries(backend, net, w, fd_kind, fd_streams).dx_dθ,
                        flat(gradient(backend, net, w, kind, streams)),
                        flat(gradient(backend, net, w, fd_kind, fd_streams))])
    for a, b in zip(*results):
        assert relative_error(b, a) <= 1e-12
