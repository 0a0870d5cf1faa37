"""The hot loops of the reference backends, in NumPy: convolutions and activations.

A ``Kernels`` tuple is what distinguishes one reference backend from another:
the layer passes (``_network.py``) are written once and call these functions;
the Numba backend supplies its own compiled versions of the same functions.

Layouts. Convolutions are 2-D, channels last, on inputs that are already padded
(1-D convolutions are lifted to 2-D by the caller):
``x (N, Hp, Wp, C_in)``, kernel ``W (kh, kw, C_in, C_out)``, output
``y (N, Ho, Wo, C_out)`` with ``Ho = (Hp − kh) // sh + 1``.
Activations act on a stack ``Z (b, q, m)``: ``Z[:, 0]`` the primal
pre-activation h, ``Z[:, 1:]`` its ``q − 1`` tangents h'.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np


class Kernels(NamedTuple):
    """The functions a reference backend runs its layers with.

    conv_forward(x (N, Hp, Wp, Ci), W (kh, kw, Ci, Co), strides (sh, sw)) -> y (N, Ho, Wo, Co)
    conv_input_grad(g (N, Ho, Wo, Co), W, strides, padded (Hp, Wp)) -> dx (N, Hp, Wp, Ci)
    conv_weight_grad(x (N, Hp, Wp, Ci), g (N, Ho, Wo, Co), kernel (kh, kw), strides) -> dW
    activation_forward(name, parameter, Z (b, q, m)) -> (σ(h), σ'(h) h'_α) stacked as Z
    activation_backward(name, parameter, Z (b, q, m), G (b, q, m)) -> dZ (b, q, m):
        dh = G_0 σ'(h) + Σ_α G_α σ''(h) h'_α,   dh'_α = G_α σ'(h)
    """
    name: str
    conv_forward: Callable
    conv_input_grad: Callable
    conv_weight_grad: Callable
    activation_forward: Callable
    activation_backward: Callable


# --- convolutions: one matrix product per kernel offset ------------------------------

def _window(offset: int, stride: int, n_out: int) -> slice:
    """Input positions that kernel offset ``offset`` meets, one per output position."""
    return slice(offset, offset + stride * (n_out - 1) + 1, stride)


def conv_forward(x, W, strides):
    kh, kw, _, co = W.shape
    (sh, sw), (n, hp, wp, _) = strides, x.shape
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    y = np.zeros((n, ho, wo, co))
    for a in range(kh):
        for b in range(kw):
            y += x[:, _window(a, sh, ho), _window(b, sw, wo), :] @ W[a, b]
    return y


def conv_input_grad(g, W, strides, padded):
    kh, kw, ci, _ = W.shape
    (sh, sw), (n, ho, wo, _) = strides, g.shape
    dx = np.zeros((n,) + tuple(padded) + (ci,))
    for a in range(kh):
        for b in range(kw):
            dx[:, _window(a, sh, ho), _window(b, sw, wo), :] += g @ W[a, b].T
    return dx


def conv_weight_grad(x, g, kernel, strides):
    kh, kw = kernel
    (sh, sw), (_, ho, wo, co) = strides, g.shape
    dW = np.empty((kh, kw, x.shape[-1], co))
    for a in range(kh):
        for b in range(kw):
            window = x[:, _window(a, sh, ho), _window(b, sw, wo), :]
            dW[a, b] = np.tensordot(window, g, axes=([0, 1, 2], [0, 1, 2]))
    return dW


# --- activations ------------------------------------------------------------------

def activation_derivatives(name: str, parameter: float, h):
    """(σ(h), σ'(h), σ''(h)) elementwise, written to avoid overflow for large |h|.

    Conventions at the kinks follow jax.nn: relu' (0) = 0, leaky_relu'(0) = 1,
    elu'(0) = α.
    """
    if name == "tanh":
        t = np.tanh(h)
        d1 = 1.0 - t * t
        return t, d1, -2.0 * t * d1
    if name == "relu":
        positive = h > 0
        return np.where(positive, h, 0.0), positive.astype(float), np.zeros_like(h)
    if name == "leaky_relu":
        slope = np.where(h >= 0, 1.0, parameter)
        return slope * h, slope, np.zeros_like(h)
    if name in ("sigmoid", "softplus"):
        e = np.exp(-np.abs(h))  # never overflows
        s = np.where(h >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        d2 = s * (1.0 - s)
        if name == "softplus":
            return np.maximum(h, 0.0) + np.log1p(e), s, d2
        return s, d2, d2 * (1.0 - 2.0 * s)
    if name == "elu":
        e = np.exp(np.minimum(h, 0.0))
        positive = h > 0
        return (np.where(positive, h, parameter * np.expm1(np.minimum(h, 0.0))),
                np.where(positive, 1.0, parameter * e), np.where(positive, 0.0, parameter * e))
    raise ValueError(f"unknown activation {name!r}")


def activation_forward(name, parameter, Z):
    σ, dσ, _ = activation_derivatives(name, parameter, Z[:, 0])
    out = np.empty_like(Z)
    out[:, 0] = σ
    out[:, 1:] = dσ[:, None] * Z[:, 1:]
    return out


def activation_backward(name, parameter, Z, G):
    _, dσ, d2σ = activation_derivatives(name, parameter, Z[:, 0])
    dZ = np.empty_like(Z)
    dZ[:, 0] = G[:, 0] * dσ + d2σ * np.einsum("bqm,bqm->bm", G[:, 1:], Z[:, 1:])
    dZ[:, 1:] = G[:, 1:] * dσ[:, None]
    return dZ


NUMPY_KERNELS = Kernels("numpy", conv_forward, conv_input_grad, conv_weight_grad,
                        activation_forward, activation_backward)
