"""Summaries of a batch and their θ-derivatives (contract (c)), the weight
gradient of a batch (contract (d)), and the assembly of streams into Summaries."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from imnn.contracts import Exact, FiniteDifference, Summaries, ThroughSimulator


def _value_and_tangents(f, primal, tangents):
    """f(primal) and the p forward-mode products along tangents[..., α]: one
    linearisation, never the full Jacobian."""
    value, f_jvp = jax.linearize(f, primal)
    return value, jax.vmap(f_jvp, in_axes=-1, out_axes=-1)(tangents)


def _one(network, w, kind, inputs, with_derivative):
    """Summary (and ∂x/∂θ, shape (s, p)) of one simulation."""
    def apply(d):
        return network.apply(w, d)

    if isinstance(kind, ThroughSimulator):
        def summary(θ):
            return apply(kind.simulator(inputs, θ))

        θ = jnp.asarray(kind.θ_fid)
        if not with_derivative:
            return summary(θ), None
        return _value_and_tangents(summary, θ, jnp.eye(θ.shape[0], dtype=θ.dtype))
    if with_derivative:
        d, dd_dθ = inputs
        return _value_and_tangents(apply, d, dd_dθ)
    return apply(inputs), None


def batch_summaries(network, w, kind, inputs, with_derivative) -> Summaries:
    x, dx_dθ = jax.vmap(lambda i: _one(network, w, kind, i, with_derivative))(inputs)
    return Summaries(x, dx_dθ)


def simulate(kind: ThroughSimulator, keys, with_derivative):
    """The simulations of a batch of keys (b, 2) at θ_fid, as the inputs of an
    ``Exact`` stream: d (b,)+input_shape, and with derivatives the pair
    (d, ∂d/∂θ (b,)+input_shape+(p,)) by forward mode. The network's chain rule
    on these gives the summaries of ``batch_summaries`` with ``kind``: the same
    primitives in the same order, the simulator's part done once."""
    θ = jnp.asarray(kind.θ_fid)

    def one(key):
        def simulation(θ):
            return kind.simulator(key, θ)

        if not with_derivative:
            return simulation(θ)
        return _value_and_tangents(simulation, θ, jnp.eye(θ.shape[0], dtype=θ.dtype))

    return jax.vmap(one)(keys)


def batch_weight_gradient(network, w, kind, inputs, with_derivative, cotangents):
    _, pullback = jax.vjp(lambda w: batch_summaries(network, w, kind, inputs, with_derivative), w)
    return pullback(cotangents)[0]


def assemble(kind, outputs: dict) -> Summaries:
    if isinstance(kind, FiniteDifference):
        x = outputs["fiducial"].x
        δθ = jnp.asarray(kind.δθ, x.dtype)
        p, s = δθ.shape[0], x.shape[1]
        raw = outputs["derivative"].x.reshape(-1, 2, p, s)
        dx_dθ = jnp.swapaxes((raw[:, 1] - raw[:, 0]) / δθ[:, None], 1, 2)
        return Summaries(x, dx_dθ)
    assert isinstance(kind, (Exact, ThroughSimulator))
    main = outputs["main"]
    x = main.x if "remaining" not in outputs else jnp.concatenate(
        [main.x, outputs["remaining"].x])
    return Summaries(x, main.dx_dθ)


def assemble_transpose(kind, cotangents: Summaries, sizes: dict) -> dict:
    present = {name for name, n in sizes.items() if n}
    primals = {name: _stream_shape(kind, name, sizes[name], cotangents) for name in present}
    _, pullback = jax.vjp(lambda outputs: assemble(kind, outputs), primals)
    return pullback(cotangents)[0]


def _stream_shape(kind, name, n, cotangents):
    x = jnp.zeros((n,) + cotangents.x.shape[1:], cotangents.x.dtype)
    if name in kind.derivative_streams:
        return Summaries(x, jnp.zeros((n,) + cotangents.dx_dθ.shape[1:], cotangents.dx_dθ.dtype))
    return Summaries(x, None)
