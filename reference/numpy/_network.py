"""imnn.nn models run by hand in float64: forward, forward-mode and reverse-mode passes.

Every pass works on a stack ``Z (b, q) + shape``: ``Z[:, 0]`` holds the primal
activations of b simulations and ``Z[:, 1:]`` their ``q − 1 = p`` tangents
(directional derivatives along ∂d/∂θ_α). Linear layers map primal and tangents
alike (the bias only touches the primal), so the tangents never need the full
input Jacobian. The reverse pass is the VJP of ``w ↦ Z_out`` — through the
primal *and* its tangents — given a cotangent stack ``G`` of the same layout.
"""
from __future__ import annotations

import math

import numpy as np

from imnn import nn

from ._kernels import Kernels


class _Dense:
    """x @ W + b on the last axis; Z (b, q, k) -> (b, q, n)."""

    def __init__(self, layer: nn.Dense, in_shape, out_shape, kernels: Kernels):
        pass  # nothing to prepare: the weights carry the shapes

    def forward(self, w, Z):
        W, bias = w
        Y = Z @ W  # BLAS already: a compiled loop would not be faster
        Y[:, 0] += bias
        return Y

    def backward(self, w, Z, G):
        W, _ = w
        # the tangent path contributes to dW too: dW = hᵀḡ + Σ_α h'_αᵀ ḡ'_α
        dW = np.tensordot(Z, G, axes=([0, 1], [0, 1]))
        return (dW, G[:, 0].sum(axis=0)), G @ W.T


class _Conv:
    """Cross-correlation with SAME/VALID padding and strides (nn.py conventions).

    1-D convolutions run as 2-D ones over a unit leading axis, so the kernels
    only know one layout.
    """

    def __init__(self, layer: nn.Conv, in_shape, out_shape, kernels: Kernels):
        self.kernels = kernels
        pads = [nn.conv_padding(n, k, s, layer.padding)
                for n, k, s in zip(in_shape[:-1], layer.kernel, layer.strides)]
        lift = (1,) * (2 - len(layer.kernel))
        self.pads = ((0, 0),) * len(lift) + tuple(pads)
        self.strides = lift + layer.strides
        self.kernel = lift + layer.kernel
        self.in_shape = lift + tuple(in_shape)                  # (H, W, C_in)
        self.out_shape = lift + tuple(out_shape)                # (Ho, Wo, C_out)
        self.layer_out_shape = tuple(out_shape)
        self.padded = tuple(n + a + b for n, (a, b) in zip(self.in_shape[:2], self.pads))

    def _padded_input(self, Z):
        X = Z.reshape((-1,) + self.in_shape)
        return np.pad(X, ((0, 0),) + self.pads + ((0, 0),))

    def forward(self, w, Z):
        W, bias = w
        b, q = Z.shape[:2]
        Y = self.kernels.conv_forward(self._padded_input(Z), W.reshape(self.kernel + W.shape[-2:]),
                                      self.strides)
        Y = Y.reshape((b, q) + self.layer_out_shape)
        Y[:, 0] += bias
        return Y

    def backward(self, w, Z, G):
        W, _ = w
        Gf = G.reshape((-1,) + self.out_shape)
        dW = self.kernels.conv_weight_grad(self._padded_input(Z), Gf, self.kernel, self.strides)
        db = G[:, 0].reshape(-1, self.out_shape[-1]).sum(axis=0)
        dXp = self.kernels.conv_input_grad(Gf, W.reshape(self.kernel + W.shape[-2:]),
                                           self.strides, self.padded)
        (top, _), (left, _) = self.pads
        dX = dXp[:, top:top + self.in_shape[0], left:left + self.in_shape[1]]
        return (dW.reshape(W.shape), db), dX.reshape(Z.shape)


class _Activation:
    def __init__(self, layer: nn.Activation, in_shape, out_shape, kernels: Kernels):
        self.name, self.parameter, self.kernels = layer.name, layer.parameter, kernels
        self.size = math.prod(in_shape)

    def _flat(self, Z):
        """(b, q) + shape -> contiguous (b, q, m), the kernels' layout."""
        return np.ascontiguousarray(Z.reshape(Z.shape[:2] + (self.size,)))

    def forward(self, w, Z):
        out = self.kernels.activation_forward(self.name, self.parameter, self._flat(Z))
        return out.reshape(Z.shape)

    def backward(self, w, Z, G):
        dZ = self.kernels.activation_backward(self.name, self.parameter, self._flat(Z),
                                              self._flat(G))
        return (), dZ.reshape(Z.shape)


class _Reshape:
    """Flatten and Reshape: C-order reshapes of each simulation (and tangent)."""

    def __init__(self, layer, in_shape, out_shape, kernels: Kernels):
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)

    def forward(self, w, Z):
        return Z.reshape(Z.shape[:2] + self.out_shape)

    def backward(self, w, Z, G):
        return (), G.reshape(G.shape[:2] + self.in_shape)


# The float64 passes of each imnn.nn layer, keyed on the layer's class: ``P(layer,
# in_shape, out_shape, kernels)`` with ``forward(w, Z)`` and ``backward(w, Z, G)``.
_PASSES = {nn.Dense: _Dense, nn.Conv: _Conv, nn.Activation: _Activation,
           nn.FlattenLayer: _Reshape, nn.Reshape: _Reshape}


def _passes_of(layer: nn.Layer) -> type:
    """The reference passes of ``layer`` (its ``_PASSES`` entry).

    Raises:
        TypeError: no entry for the layer's class.
    """
    try:
        return _PASSES[type(layer)]
    except KeyError:
        raise TypeError(f"the reference backends cannot apply layer {layer!r}: no entry for "
                        f"{type(layer).__name__} in reference/numpy/_network.py _PASSES") from None


class ReferenceModel:
    """An imnn.nn model with hand-written float64 passes over a batch.

    Calling it, ``model(w, d)`` with d of shape input_shape, gives x (s,): this is
    ``Network.apply``. ``forward`` and ``backward`` are the batched passes on
    stacks of primal and tangents that the reference backends build summaries and
    weight gradients from.
    """

    def __init__(self, model, input_shape: tuple, kernels: Kernels):
        self.kernels = kernels
        self.input_shape = tuple(int(n) for n in input_shape)
        self.passes, self.weight_shapes, shape = [], [], self.input_shape
        for layer in nn.layers_of(model):
            out = layer.output_shape(shape)
            self.weight_shapes.append(tuple(layer.weight_shapes(shape)))
            self.passes.append(_passes_of(layer)(layer, shape, out, kernels))
            shape = out
        if len(shape) != 1:
            raise ValueError(f"the network must output a vector of summaries, but its output "
                             f"has shape {shape}; end the model with Flatten or Dense")
        self.output_shape = shape

    def __call__(self, w, d):
        """x = f_w(d): d of shape input_shape -> x (s,), float64."""
        d = np.asarray(d, dtype=np.float64)
        if d.shape != self.input_shape:
            raise ValueError(f"apply takes one simulation of shape {self.input_shape}, "
                             f"got {d.shape}")
        Z, _ = self.forward(w, d[None, None])
        return Z[0, 0]

    def forward(self, w, Z):
        """Z (b, q) + input_shape -> (Z_out (b, q, s), residuals for ``backward``)."""
        w = self.weights(w)
        residuals = []
        for layer, wl in zip(self.passes, w):
            residuals.append(Z)
            Z = layer.forward(wl, Z)
        return Z, residuals

    def backward(self, w, residuals, G):
        """The VJP of w ↦ Z_out at the ``residuals`` of ``forward``.

        G (b, q, s) -> list of per-layer gradient tuples, like w."""
        w = self.weights(w)
        grads = [()] * len(self.passes)
        for i in reversed(range(len(self.passes))):
            grads[i], G = self.passes[i].backward(w[i], residuals[i], G)
        return grads

    def weights(self, w) -> list:
        """w as a list of per-layer tuples of float64 arrays, shapes checked."""
        if len(w) != len(self.passes):
            raise ValueError(f"the weights have {len(w)} layers, the model has {len(self.passes)}")
        checked = []
        for i, (expected, wl) in enumerate(zip(self.weight_shapes, w)):
            wl = tuple(np.asarray(a, dtype=np.float64) for a in wl)
            shapes = tuple(a.shape for a in wl)
            if shapes != expected:
                raise ValueError(f"layer {i} weights have shapes {shapes}, expected {expected}")
            checked.append(wl)
        return checked

