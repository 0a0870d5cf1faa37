"""Networks on JAX: imnn.nn models, or any user ``(init, apply)`` pair."""
from __future__ import annotations

import itertools
import math
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from imnn import nn
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
            for n, k, s in zip(shape[:-1], layer.kernel, layer.strides)]


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
           for n, (lo, hi), k, s in zip(shape[:-1], pads, layer.kernel, layer.strides)]
    windows = [h[tuple(slice(o, o + (m - 1) * s + 1, s)
                       for o, m, s in zip(offset, out, layer.strides))]
               for offset in itertools.product(*(range(k) for k in layer.kernel))]
    return jnp.concatenate(windows, axis=-1) @ kernel.reshape(-1, kernel.shape[-1]) + bias


def _apply_layer(layer, shape, h, w, conv=_conv):
    if isinstance(layer, nn.Dense):
        return h @ w[0] + w[1]
    if isinstance(layer, nn.Conv):
        return conv(layer, shape, h, *w)
    if isinstance(layer, nn.Activation):
        return _ACTIVATIONS[layer.name](h, layer.parameter)
    if isinstance(layer, nn.FlattenLayer):
        return h.reshape(-1)
    return h.reshape(layer.shape)


def network(model, input_shape: tuple, dtype) -> Network:
    """A Network whose apply(w, d) takes one simulation of shape input_shape
    and returns its summary, shape (s,). For imnn.nn models with convolutions,
    ``apply.in_cpu_loops`` is the same function with convolutions written as
    matrix products (``_conv_as_product``), for loop bodies on a CPU."""
    input_shape = tuple(input_shape)
    if nn.is_model(model):
        layers = nn.layers_of(model)
        shapes = [input_shape]
        for layer in layers:
            shapes.append(nn.layer_output_shape(layer, shapes[-1]))
        if len(shapes[-1]) != 1:
            raise ValueError(f"the model must end in a 1-D summary, its output has shape {shapes[-1]}")

        def init(key):
            return [tuple(jnp.asarray(a, dtype) for a in layer_w)
                    for layer_w in nn.init_weights(model, input_shape, key)]

        def apply(w, d, conv=_conv):
            h = d
            for layer, shape, layer_w in zip(layers, shapes, w):
                h = _apply_layer(layer, shape, h, layer_w, conv)
            return h

        if any(isinstance(layer, nn.Conv) for layer in layers):
            apply.in_cpu_loops = partial(apply, conv=_conv_as_product)
        return Network(init, apply, input_shape, shapes[-1])
    if isinstance(model, tuple) and len(model) == 2 and all(callable(f) for f in model):
        user_init, user_apply = model
        shapes = jax.eval_shape(lambda k: user_init(k, input_shape)[1], jax.random.PRNGKey(0))
        out = jax.eval_shape(user_apply, shapes, jax.ShapeDtypeStruct(input_shape, dtype))
        size = math.prod(out.shape)

        def init(key):
            return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), user_init(key, input_shape)[1])

        def apply(w, d):
            return jnp.reshape(user_apply(w, d), (size,))

        return Network(init, apply, input_shape, (size,))
    raise TypeError(
        "model must be an imnn.nn model (e.g. imnn.nn.serial(...)) or an (init, apply) pair "
        f"such as jax.example_libraries.stax.serial(...) returns, got {type(model).__name__}")
