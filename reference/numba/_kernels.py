"""The reference kernels as compiled Numba loops (layouts as in imnn.reference.numpy._kernels).

Few, monomorphic kernels keep the compile time small: every convolution is a
2-D one on a padded, C-contiguous float64 input, and one pair of activation
kernels serves all activations through an integer code.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from imnn.reference.numpy import Kernels

_CODES = {"tanh": 0, "relu": 1, "leaky_relu": 2, "softplus": 3, "elu": 4, "sigmoid": 5}


def _c(a):
    return np.ascontiguousarray(a, dtype=np.float64)


# --- convolutions -------------------------------------------------------------------

@numba.njit(cache=True)
def _conv_forward(x, W, sh, sw):
    n_batch, hp, wp, ci = x.shape
    kh, kw, _, co = W.shape
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    y = np.zeros((n_batch, ho, wo, co))
    for n in range(n_batch):
        for i in range(ho):
            for j in range(wo):
                for a in range(kh):
                    for b in range(kw):
                        for c in range(ci):
                            v = x[n, i * sh + a, j * sw + b, c]
                            for o in range(co):
                                y[n, i, j, o] += v * W[a, b, c, o]
    return y


@numba.njit(cache=True)
def _conv_input_grad(g, W, sh, sw, hp, wp):
    n_batch, ho, wo, co = g.shape
    kh, kw, ci, _ = W.shape
    dx = np.zeros((n_batch, hp, wp, ci))
    for n in range(n_batch):
        for i in range(ho):
            for j in range(wo):
                for a in range(kh):
                    for b in range(kw):
                        for c in range(ci):
                            total = 0.0
                            for o in range(co):
                                total += g[n, i, j, o] * W[a, b, c, o]
                            dx[n, i * sh + a, j * sw + b, c] += total
    return dx


@numba.njit(cache=True)
def _conv_weight_grad(x, g, kh, kw, sh, sw):
    n_batch, ho, wo, co = g.shape
    ci = x.shape[3]
    dW = np.zeros((kh, kw, ci, co))
    for n in range(n_batch):
        for i in range(ho):
            for j in range(wo):
                for a in range(kh):
                    for b in range(kw):
                        for c in range(ci):
                            v = x[n, i * sh + a, j * sw + b, c]
                            for o in range(co):
                                dW[a, b, c, o] += v * g[n, i, j, o]
    return dW


def conv_forward(x, W, strides):
    return _conv_forward(_c(x), _c(W), int(strides[0]), int(strides[1]))


def conv_input_grad(g, W, strides, padded):
    return _conv_input_grad(_c(g), _c(W), int(strides[0]), int(strides[1]),
                            int(padded[0]), int(padded[1]))


def conv_weight_grad(x, g, kernel, strides):
    return _conv_weight_grad(_c(x), _c(g), int(kernel[0]), int(kernel[1]),
                             int(strides[0]), int(strides[1]))


# --- activations ----------------------------------------------------------------------

@numba.njit(cache=True)
def _derivatives(code, parameter, h):
    """(σ(h), σ'(h), σ''(h)); at the kinks as jax.nn: relu'(0) = 0, leaky_relu'(0) = 1,
    elu'(0) = α."""
    if code == 0:
        t = math.tanh(h)
        d1 = 1.0 - t * t
        return t, d1, -2.0 * t * d1
    if code == 1:
        return (h, 1.0, 0.0) if h > 0 else (0.0, 0.0, 0.0)
    if code == 2:
        return (h, 1.0, 0.0) if h >= 0 else (parameter * h, parameter, 0.0)
    if code == 3 or code == 5:
        e = math.exp(-abs(h))  # never overflows
        s = 1.0 / (1.0 + e) if h >= 0 else e / (1.0 + e)
        d2 = s * (1.0 - s)
        if code == 3:
            return max(h, 0.0) + math.log1p(e), s, d2
        return s, d2, d2 * (1.0 - 2.0 * s)
    if h > 0:
        return h, 1.0, 0.0
    e = math.exp(h)
    return parameter * math.expm1(h), parameter * e, parameter * e


@numba.njit(cache=True)
def _activation_forward(code, parameter, Z):
    b, q, m = Z.shape
    out = np.empty_like(Z)
    for n in range(b):
        for k in range(m):
            σ, dσ, _ = _derivatives(code, parameter, Z[n, 0, k])
            out[n, 0, k] = σ
            for α in range(1, q):
                out[n, α, k] = dσ * Z[n, α, k]
    return out


@numba.njit(cache=True)
def _activation_backward(code, parameter, Z, G):
    b, q, m = Z.shape
    dZ = np.empty_like(Z)
    for n in range(b):
        for k in range(m):
            _, dσ, d2σ = _derivatives(code, parameter, Z[n, 0, k])
            total = 0.0
            for α in range(1, q):
                total += G[n, α, k] * Z[n, α, k]
                dZ[n, α, k] = G[n, α, k] * dσ
            dZ[n, 0, k] = G[n, 0, k] * dσ + d2σ * total
    return dZ


def activation_forward(name, parameter, Z):
    return _activation_forward(_CODES[name], float(parameter), _c(Z))


def activation_backward(name, parameter, Z, G):
    return _activation_backward(_CODES[name], float(parameter), _c(Z), _c(G))


NUMBA_KERNELS = Kernels("numba", conv_forward, conv_input_grad, conv_weight_grad,
                        activation_forward, activation_backward)
