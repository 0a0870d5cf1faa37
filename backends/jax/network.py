"""Networks on JAX: imnn.nn models, or any user ``(init, apply)`` pair."""
from __future__ import annotations

import math

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


def _conv(layer, shape, h, kernel, bias):
    nd = len(layer.kernel)
    pads = [nn.conv_padding(n, k, s, layer.padding)
            for n, k, s in zip(shape[:-1], layer.kernel, layer.strides)]
    numbers = ("NWC", "WIO", "NWC") if nd == 1 else ("NHWC", "HWIO", "NHWC")
    out = lax.conv_general_dilated(h[None], kernel, layer.strides, pads,
                                   dimension_numbers=numbers)
    return out[0] + bias


def _apply_layer(layer, shape, h, w):
    if isinstance(layer, nn.Dense):
        return h @ w[0] + w[1]
    if isinstance(layer, nn.Conv):
        return _conv(layer, shape, h, *w)
    if isinstance(layer, nn.Activation):
        return _ACTIVATIONS[layer.name](h, layer.parameter)
    if isinstance(layer, nn.FlattenLayer):
        return h.reshape(-1)
    return h.reshape(layer.shape)


def network(model, input_shape: tuple, dtype) -> Network:
    """A Network whose apply(w, d) takes one simulation of shape input_shape
    and returns its summary, shape (s,)."""
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

        def apply(w, d):
            h = d
            for layer, shape, layer_w in zip(layers, shapes, w):
                h = _apply_layer(layer, shape, h, layer_w)
            return h

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
