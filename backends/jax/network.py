"""Networks on JAX: imnn.nn models, and every other kind ``imnn._models`` adapts
(``(init, apply)`` pairs, flax.linen / flax.nnx / equinox modules, plain functions)."""
from __future__ import annotations

import itertools
from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from imnn import nn
from imnn._models import adapt, model_kind
from imnn.contracts import Network

_ACTIVATIONS = {
    "tanh": lambda x, a: jnp.tanh(x),
    "relu": lambda x, a: jax.nn.relu(x),
    "leaky_relu": lambda x, a: jax.nn.leaky_relu(x, a),
    "softplus": lambda x, a: jax.nn.softplus(x),
    "elu": lambda x, a: jax.nn.elu(x, a),
    "sigmoid": lambda x, a: jax.nn.sigmoid(x),
}


def _padding(layer, shape):
    return [tuple(nn.conv_padding(n, k, s, layer.padding))
            for n, k, s in zip(shape[:-1], layer.kernel, layer.strides, strict=True)]


def _conv(layer, shape, h, kernel, bias):
    numbers = ("NWC", "WIO", "NWC") if len(layer.kernel) == 1 else ("NHWC", "HWIO", "NHWC")
    out = lax.conv_general_dilated(h[None], kernel, layer.strides, _padding(layer, shape),
                                   dimension_numbers=numbers)
    return out[0] + bias


def _conv_as_product(layer, shape, h, kernel, bias):
    """The same convolution as one matrix product: the strided windows of the
    padded input side by side on the channel axis (kernel-offset major, as the
    kernel's C-order reshape to (prod(kernel)·C_in, C_out)), times the kernel.

    For loop bodies on a CPU. XLA's CPU compiler rewrites the weight gradient of
    ``conv_general_dilated`` into a fast matrix product only outside loops
    (jax-ml/jax#12868); inside a loop it runs a direct convolution 6-7x slower.
    Written as a product, every derivative (input, weights, and those of the
    θ-tangents) is a product or a slice, fast in and out of loops. Outside loops
    the native convolution is faster (the windows cost prod(kernel)x the
    input's memory), so networks use this only where they run in a loop."""
    pads = _padding(layer, shape)
    h = jnp.pad(h, pads + [(0, 0)])
    out = [(n + lo + hi - k) // s + 1
           for n, (lo, hi), k, s in zip(shape[:-1], pads, layer.kernel, layer.strides, strict=True)]
    windows = [h[tuple(slice(o, o + (m - 1) * s + 1, s)
                       for o, m, s in zip(offset, out, layer.strides, strict=True))]
               for offset in itertools.product(*(range(k) for k in layer.kernel))]
    return jnp.concatenate(windows, axis=-1) @ kernel.reshape(-1, kernel.shape[-1]) + bias


# The numerics of each imnn.nn layer on JAX, keyed on the layer's class: ``f(layer,
# input_shape, h, w, conv) -> output``, h of shape input_shape (one simulation), w the
# layer's weight tuple, ``conv`` the convolution to use (``_conv`` or ``_conv_as_product``).
_APPLY = {
    nn.Dense: lambda layer, shape, h, w, conv: h @ w[0] + w[1],
    nn.Conv: lambda layer, shape, h, w, conv: conv(layer, shape, h, *w),
    nn.Activation: lambda layer, shape, h, w, conv: _ACTIVATIONS[layer.name](h, layer.parameter),
    nn.FlattenLayer: lambda layer, shape, h, w, conv: h.reshape(-1),
    nn.Reshape: lambda layer, shape, h, w, conv: h.reshape(layer.shape),
}


def _layer_function(layer: nn.Layer) -> Callable:
    """The JAX numerics of ``layer`` (its ``_APPLY`` entry).

    Raises:
        TypeError: no entry for the layer's class.
    """
    try:
        return _APPLY[type(layer)]
    except KeyError:
        raise TypeError(f"the JAX backend cannot apply layer {layer!r}: no entry for "
                        f"{type(layer).__name__} in backends/jax/network.py _APPLY") from None


def network(model, input_shape: tuple, dtype) -> Network:
    """The Network of any kind of model (``imnn._models.model_kind``) on JAX.

    Args:
        model: an imnn.nn model, an ``(init, apply)`` pair, a flax.linen / flax.nnx /
            equinox Module instance, or ``imnn.nn.from_function(apply, params)``.
        input_shape: the shape of one simulation (no batch axis).
        dtype: the floating-point dtype of the weights (float32, or float64 with x64).

    Returns:
        Network(init, apply, input_shape, output_shape): ``init(key)`` gives the initial
        weights, a pytree of ``dtype`` arrays; ``apply(w, d)`` takes one simulation of shape
        ``input_shape`` and returns its summaries, shape ``output_shape`` = (s,). For imnn.nn
        models with convolutions, ``apply_in_loops`` is the same function with
        convolutions written as matrix products (``_conv_as_product``), for loop bodies on a
        CPU; None otherwise.

    Raises:
        TypeError: ``model`` is of no accepted kind.
        ValueError: the model's output for one simulation is not 1-D, the model cannot be
            applied to one simulation of ``input_shape``, or a flax module carries state
            other than parameters. All checked on shapes only, before any weights exist.
    """
    input_shape = tuple(input_shape)
    kind = model_kind(model)
    if kind == "imnn.nn":
        return _nn_network(model, input_shape, dtype)
    adapted = adapt(model, kind, input_shape, dtype)

    def init(key):
        return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), adapted.init(key))

    try:
        out = jax.eval_shape(adapted.apply, jax.eval_shape(init, jax.random.PRNGKey(0)),
                             jax.ShapeDtypeStruct(input_shape, dtype))
    except Exception as error:  # noqa: BLE001 - the user's network failed: say where
        raise ValueError(
            f"model ({kind}, {_name(model)}) could not be applied to one simulation of shape "
            f"{input_shape}: {type(error).__name__}: {error}") from error
    if not isinstance(out, jax.ShapeDtypeStruct) or len(out.shape) != 1:
        shape = out.shape if isinstance(out, jax.ShapeDtypeStruct) else type(out).__name__
        raise ValueError(
            f"model ({kind}, {_name(model)}): its output for one simulation of shape "
            f"{input_shape} is {shape}; it must be one 1-D array of the summaries, shape "
            "(n_summaries,). The network receives one unbatched simulation: do not add or "
            "keep a batch axis in its output")
    return Network(init, adapted.apply, input_shape, tuple(out.shape))


def _name(model) -> str:
    """A short name of the user's network for messages."""
    apply = model.apply if isinstance(model, nn.FunctionModel) else (
        model[1] if isinstance(model, tuple) else None)
    return getattr(apply, "__name__", "apply") if apply is not None else type(model).__name__


def _nn_network(model, input_shape: tuple, dtype) -> Network:
    """imnn.nn models: weights a list of per-layer tuples (``imnn.nn.init_weights``)."""
    layers = nn.layers_of(model)
    functions = [_layer_function(layer) for layer in layers]
    shapes = [input_shape]
    for layer in layers:
        shapes.append(layer.output_shape(shapes[-1]))
    if len(shapes[-1]) != 1:
        raise ValueError(f"the model must end in a 1-D summary, its output has shape {shapes[-1]}")

    def init(key):
        return [tuple(jnp.asarray(a, dtype) for a in layer_w)
                for layer_w in nn.init_weights(model, input_shape, key)]

    def apply(w, d, conv=_conv):
        h = d
        for f, layer, shape, layer_w in zip(functions, layers, shapes[:-1], w, strict=True):
            h = f(layer, shape, h, layer_w, conv)
        return h

    in_loops = (partial(apply, conv=_conv_as_product)
                if any(isinstance(layer, nn.Conv) for layer in layers) else None)
    return Network(init, apply, input_shape, shapes[-1], apply_in_loops=in_loops)
