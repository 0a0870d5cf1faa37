"""Stream inputs of each derivative kind as primal/tangent stacks, and ``assemble``.

A stack ``Z (b, 1 + p) + input_shape`` holds each simulation d and its
derivatives ∂d/∂θ_α (p = 0 for streams without derivatives); ``_network.py``
propagates it through the layers.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from imnn.contracts import Exact, FiniteDifference, Summaries, ThroughSimulator, kind_entry


def _stored(kind, inputs, with_derivative: bool, input_shape: tuple):
    """Exact streams: d (b,)+input_shape, or (d, ∂d/∂θ) with derivatives."""
    return inputs if with_derivative else (inputs, None)


def _perturbed(kind, inputs, with_derivative: bool, input_shape: tuple):
    """FiniteDifference streams: plain simulations d (b,)+input_shape."""
    if with_derivative:
        raise ValueError("FiniteDifference streams are plain simulations: "
                         "batch_summaries takes with_derivative=False")
    return inputs, None


def simulate(kind: ThroughSimulator, keys, with_derivative: bool, input_shape: tuple):
    """keys (b, 2) -> (d (b,)+input_shape, ∂d/∂θ (b,)+input_shape+(p,) or None), float64."""
    θ = np.asarray(kind.θ_fid, dtype=np.float64)
    if len(keys) == 0:
        empty = np.zeros((0,) + input_shape)
        return empty, np.zeros(empty.shape + θ.shape) if with_derivative else None
    if kind.returns_derivative:
        pairs = [kind.simulator(key, θ) for key in np.asarray(keys)]
        d = np.stack([np.asarray(pair[0], dtype=np.float64) for pair in pairs])
        dd = np.stack([np.asarray(pair[1], dtype=np.float64) for pair in pairs])
        return d, dd if with_derivative else None
    # a JAX simulator: only JAX can differentiate it; float64 so the reference stays exact
    import jax
    import jax.numpy as jnp

    with jax.enable_x64(True):
        θ_j = jnp.asarray(θ)
        if not with_derivative:
            d = jax.vmap(lambda key: kind.simulator(key, θ_j))(jnp.asarray(keys))
            return np.asarray(d, dtype=np.float64), None

        def with_jacobian(key):
            def twice(t):
                d = kind.simulator(key, t)
                return d, d
            return jax.jacfwd(twice, has_aux=True)(θ_j)  # (∂d/∂θ, d), parameter axis last

        dd, d = jax.vmap(with_jacobian)(jnp.asarray(keys))
        return np.asarray(d, dtype=np.float64), np.asarray(dd, dtype=np.float64)


def stacked_inputs(kind, inputs, with_derivative: bool, input_shape: tuple):
    """One batch of a stream -> Z (b, 1 + p) + input_shape (p = 0 without derivatives)."""
    d, dd = _numerics(kind).simulations(kind, inputs, with_derivative, input_shape)
    d = np.asarray(d, dtype=np.float64)
    if d.shape[1:] != input_shape:
        raise ValueError(f"expected simulations of shape (b,)+{input_shape}, got {d.shape}")
    if dd is None:
        return d[:, None]
    dd = np.asarray(dd, dtype=np.float64)
    p = kind.n_params
    if dd.shape != d.shape + (p,):
        raise ValueError(f"expected ∂d/∂θ of shape {d.shape + (p,)} (parameter axis last), "
                         f"got {dd.shape}")
    return np.concatenate([d[:, None], np.moveaxis(dd, -1, 1)], axis=1)


def summaries_of(Z, with_derivative: bool) -> Summaries:
    """Output stack Z (b, 1 + p, s) -> Summaries(x (b, s), dx_dθ (b, s, p) or None)."""
    return Summaries(Z[:, 0], np.moveaxis(Z[:, 1:], 1, 2) if with_derivative else None)


def stacked_cotangents(cotangents: Summaries, with_derivative: bool):
    """Summaries(dΛ/dx (b, s), dΛ/d(∂x/∂θ) (b, s, p)) -> G (b, 1 + p, s)."""
    ct_x = np.asarray(cotangents.x, dtype=np.float64)
    if not with_derivative:
        return ct_x[:, None]
    if cotangents.dx_dθ is None:
        raise ValueError("with_derivative=True needs cotangents for dx_dθ")
    ct_dx = np.moveaxis(np.asarray(cotangents.dx_dθ, dtype=np.float64), 2, 1)
    return np.concatenate([ct_x[:, None], ct_dx], axis=1)


def _assemble_differences(kind: FiniteDifference, outputs: dict) -> Summaries:
    δθ = np.asarray(kind.δθ, dtype=np.float64)
    X = np.asarray(outputs["derivative"].x, dtype=np.float64)
    if X.shape[0] % (2 * δθ.size):
        raise ValueError(f"the derivative stream has {X.shape[0]} simulations, "
                         f"not a multiple of 2·p = {2 * δθ.size}")
    X = X.reshape(-1, 2, δθ.size, X.shape[-1])           # (n_d, below/above, p, s)
    dx_dθ = np.transpose(X[:, 1] - X[:, 0], (0, 2, 1)) / δθ
    return Summaries(np.asarray(outputs["fiducial"].x, dtype=np.float64), dx_dθ)


def _transpose_differences(kind: FiniteDifference, cotangents: Summaries, sizes: dict) -> dict:
    ct_x = np.asarray(cotangents.x, dtype=np.float64)
    ct_dx = np.asarray(cotangents.dx_dθ, dtype=np.float64)
    δθ = np.asarray(kind.δθ, dtype=np.float64)
    n_d, s, p = ct_dx.shape
    if sizes["derivative"] != 2 * p * n_d or sizes["fiducial"] != ct_x.shape[0]:
        raise ValueError(f"sizes {sizes} do not match n_s={ct_x.shape[0]}, n_d={n_d}, p={p}")
    above = np.transpose(ct_dx, (0, 2, 1)) / δθ[:, None]      # (n_d, p, s)
    X = np.stack([-above, above], axis=1).reshape(2 * p * n_d, s)
    return {"fiducial": Summaries(ct_x, None), "derivative": Summaries(X, None)}


def _assemble_main(kind, outputs: dict) -> Summaries:
    main, remaining = outputs["main"], outputs.get("remaining")
    x = main.x if remaining is None else np.concatenate([main.x, remaining.x])
    return Summaries(np.asarray(x, dtype=np.float64), np.asarray(main.dx_dθ, dtype=np.float64))


def _transpose_main(kind, cotangents: Summaries, sizes: dict) -> dict:
    ct_x = np.asarray(cotangents.x, dtype=np.float64)
    ct_dx = np.asarray(cotangents.dx_dθ, dtype=np.float64)
    n_main = sizes["main"]
    if n_main != ct_dx.shape[0] or n_main + sizes.get("remaining", 0) != ct_x.shape[0]:
        raise ValueError(f"sizes {sizes} do not match n_s={ct_x.shape[0]}, n_d={ct_dx.shape[0]}")
    streams = {"main": Summaries(ct_x[:n_main], ct_dx)}
    if "remaining" in sizes:
        streams["remaining"] = Summaries(ct_x[n_main:], None)
    return streams


class _KindNumerics(NamedTuple):
    """The float64 numerics of one derivative kind.

    simulations: ``(kind, inputs, with_derivative, input_shape) -> (d (b,)+input_shape,
        ∂d/∂θ (b,)+input_shape+(p,) or None)`` for one batch of the kind's stream inputs.
    assemble: ``(kind, outputs) -> Summaries(x (n_s, s), dx_dθ (n_d, s, p))``.
    transpose: ``(kind, cotangents, sizes) -> {stream: Summaries}``, assemble's transpose.
    """
    simulations: Callable
    assemble: Callable
    transpose: Callable


# One entry per derivative kind, keyed on the kind's class.
_KINDS = {
    Exact: _KindNumerics(_stored, _assemble_main, _transpose_main),
    FiniteDifference: _KindNumerics(_perturbed, _assemble_differences, _transpose_differences),
    ThroughSimulator: _KindNumerics(simulate, _assemble_main, _transpose_main),
}


def _numerics(kind) -> _KindNumerics:
    return kind_entry(_KINDS, kind, "reference/numpy/_streams.py _KINDS")


def assemble(kind, outputs: dict) -> Summaries:
    """Per-stream outputs -> Summaries(x (n_s, s), dx_dθ (n_d, s, p))."""
    return _numerics(kind).assemble(kind, outputs)


def assemble_transpose(kind, cotangents: Summaries, sizes: dict) -> dict:
    """Cotangents on Summaries -> cotangents on each stream's outputs (transpose of assemble)."""
    return _numerics(kind).transpose(kind, cotangents, sizes)
