"""Summaries of a batch and their θ-derivatives (contract (c)), the weight
gradient of a batch (contract (d)), and the assembly of streams into Summaries."""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from imnn.contracts import Exact, FiniteDifference, Summaries, ThroughSimulator, kind_entry


def _value_and_tangents(f, primal, tangents):
    """f(primal) and the p forward-mode products along tangents[..., α]: one
    linearisation, never the full Jacobian."""
    value, f_jvp = jax.linearize(f, primal)
    return value, jax.vmap(f_jvp, in_axes=-1, out_axes=-1)(tangents)


def _one_simulated(network, w, kind, inputs, with_derivative):
    """ThroughSimulator: the summary of the simulation of key ``inputs`` (and ∂x/∂θ (s, p)
    through the simulator and the network)."""
    def summary(θ):
        return network.apply(w, kind.simulator(inputs, θ))

    θ = jnp.asarray(kind.θ_fid)
    if not with_derivative:
        return summary(θ), None
    return _value_and_tangents(summary, θ, jnp.eye(θ.shape[0], dtype=θ.dtype))


def _one_stored(network, w, kind, inputs, with_derivative):
    """Stored simulations: the summary of d (and ∂x/∂θ (s, p) from ``(d, ∂d/∂θ)``)."""
    def apply(d):
        return network.apply(w, d)

    if with_derivative:
        d, dd_dθ = inputs
        return _value_and_tangents(apply, d, dd_dθ)
    return apply(inputs), None


def _one(network, w, kind, inputs, with_derivative):
    """Summary (and ∂x/∂θ, shape (s, p)) of one simulation."""
    return _numerics(kind).one(network, w, kind, inputs, with_derivative)


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


def _simulations_shape(kind, lead, input_shape, dtype, with_derivative):
    d = jax.ShapeDtypeStruct(lead + tuple(input_shape), dtype)
    if with_derivative:
        return d, jax.ShapeDtypeStruct(d.shape + (kind.n_params,), dtype)
    return d


def _keys_shape(kind, lead, input_shape, dtype, with_derivative):
    return jax.ShapeDtypeStruct(lead + (2,), jnp.uint32)


def abstract_inputs(kind, lead: tuple, input_shape: tuple, dtype, with_derivative: bool):
    """A stream's inputs with leading axes ``lead`` as jax.ShapeDtypeStructs: simulations
    lead+input_shape (with ∂d/∂θ lead+input_shape+(p,) where they carry derivatives), or
    PRNG keys lead+(2,) for kinds that simulate."""
    return _numerics(kind).abstract_inputs(kind, lead, input_shape, dtype, with_derivative)


def batch_weight_gradient(network, w, kind, inputs, with_derivative, cotangents):
    _, pullback = jax.vjp(lambda w: batch_summaries(network, w, kind, inputs, with_derivative), w)
    return pullback(cotangents)[0]


def _assemble_differences(kind, outputs: dict) -> Summaries:
    x = outputs["fiducial"].x
    δθ = jnp.asarray(kind.δθ, x.dtype)
    p, s = δθ.shape[0], x.shape[1]
    raw = outputs["derivative"].x.reshape(-1, 2, p, s)
    dx_dθ = jnp.swapaxes((raw[:, 1] - raw[:, 0]) / δθ[:, None], 1, 2)
    return Summaries(x, dx_dθ)


def _assemble_main(kind, outputs: dict) -> Summaries:
    main = outputs["main"]
    x = main.x if "remaining" not in outputs else jnp.concatenate(
        [main.x, outputs["remaining"].x])
    return Summaries(x, main.dx_dθ)


class _KindNumerics(NamedTuple):
    """The JAX numerics of one derivative kind.

    one: ``(network, w, kind, inputs, with_derivative) -> (x (s,), ∂x/∂θ (s, p) or None)``
        for one simulation (one element of a batch of the kind's stream inputs).
    assemble: ``(kind, outputs) -> Summaries(x (n_s, s), dx_dθ (n_d, s, p))``, linear; its
        transpose is its VJP.
    abstract_inputs: as ``abstract_inputs``.
    """
    one: Callable
    assemble: Callable
    abstract_inputs: Callable


# One entry per derivative kind, keyed on the kind's class.
_KINDS = {
    Exact: _KindNumerics(_one_stored, _assemble_main, _simulations_shape),
    FiniteDifference: _KindNumerics(_one_stored, _assemble_differences, _simulations_shape),
    ThroughSimulator: _KindNumerics(_one_simulated, _assemble_main, _keys_shape),
}


def _numerics(kind) -> _KindNumerics:
    return kind_entry(_KINDS, kind, "backends/jax/summaries.py _KINDS")


def assemble(kind, outputs: dict) -> Summaries:
    """Per-stream outputs -> Summaries(x (n_s, s), dx_dθ (n_d, s, p))."""
    return _numerics(kind).assemble(kind, outputs)


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
