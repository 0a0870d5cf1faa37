"""A backend-neutral description of networks: layers composed with ``serial``.

Every backend can run these: the JAX backend builds init/apply from them, the
reference backends evaluate them with hand-written forward, forward-mode and
reverse-mode passes in float64.

Conventions (all backends follow them exactly):
- One simulation at a time; no batch axis in shapes.
- Dense(n): input (k,) -> x @ W + b; weights (W (k, n), b (n,)).
- Conv(features, kernel, strides, padding): channels last. 1-D: input (L, C_in),
  kernel (k, C_in, C_out); 2-D: input (H, W, C_in), kernel (kh, kw, C_in, C_out);
  bias (C_out,). Cross-correlation (no kernel flip), as lax.conv_general_dilated.
  "VALID": out = (in − k) // stride + 1. "SAME": out = ceil(in / stride), total
  padding max((out − 1)·stride + k − in, 0), of which floor(total/2) before.
- Activations act elementwise: tanh, relu, leaky_relu (slope, default 0.01),
  softplus = log(1 + eˣ), elu (α, default 1: x if x > 0 else α(eˣ − 1)),
  sigmoid = 1 / (1 + e⁻ˣ).
- Flatten: C-order ravel. Reshape(shape): C-order reshape to ``shape``.
- Weights: a list with one tuple per layer; () for weightless layers.
- Initialisation (``init_weights``): Glorot normal kernels, std
  sqrt(2 / (fan_in + fan_out)), fan_in = prod(kernel)·C_in, fan_out =
  prod(kernel)·C_out (Dense: k and n); zero biases. Drawn in NumPy from a seed,
  so every backend starts from the same weights for the same key.

Other networks (JAX backend only; ``model=`` detects the kind):

- an ``(init, apply)`` pair. The contract: ``init(key, input_shape)`` returns
  ``(output_shape, params)``, ``params`` a pytree of arrays (the initial weights; ``key`` is a
  JAX PRNG key); ``apply(params, d)`` receives ONE unbatched simulation ``d`` of shape
  ``input_shape`` and returns its summaries, shape ``(n_summaries,)``. imnn vectorises
  ``apply`` over simulations itself. ``jax.example_libraries.stax.serial(...)`` returns
  such a pair for dense networks (stax convolutions want a batch axis: add one in ``apply``).
- a ``flax.linen.Module``, a ``flax.nnx.Module`` or an ``equinox.Module`` instance, called on
  one unbatched simulation the same way;
- a plain function ``apply(params, d)`` with its initial ``params``, given as
  ``from_function(apply, params)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ._checks import positive_integer

ACTIVATIONS = ("tanh", "relu", "leaky_relu", "softplus", "elu", "sigmoid")


@dataclass(frozen=True)
class Dense:
    features: int

    def __post_init__(self):
        positive_integer("Dense features", self.features)


@dataclass(frozen=True)
class Conv:
    features: int
    kernel: tuple
    strides: tuple | None = None
    padding: str = "SAME"

    def __post_init__(self):
        positive_integer("Conv features", self.features)
        kernel = tuple(int(k) for k in np.atleast_1d(self.kernel))
        if len(kernel) not in (1, 2):
            raise ValueError(f"Conv kernel must have 1 or 2 dimensions, got {self.kernel!r}")
        strides = (1,) * len(kernel) if self.strides is None else tuple(
            int(s) for s in np.atleast_1d(self.strides))
        if len(strides) != len(kernel):
            raise ValueError(f"Conv strides {self.strides!r} must match kernel {kernel}")
        for k in kernel + strides:
            positive_integer("Conv kernel/stride", k)
        if self.padding not in ("SAME", "VALID"):
            raise ValueError(f"Conv padding must be 'SAME' or 'VALID', got {self.padding!r}")
        object.__setattr__(self, "kernel", kernel)
        object.__setattr__(self, "strides", strides)


@dataclass(frozen=True)
class Activation:
    name: str
    parameter: float = 0.0

    def __post_init__(self):
        if self.name not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.name!r}")


@dataclass(frozen=True)
class FlattenLayer:
    pass


@dataclass(frozen=True)
class Reshape:
    shape: tuple

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))


@dataclass(frozen=True)
class Serial:
    layers: tuple


Flatten = FlattenLayer()
Tanh = Activation("tanh")
Relu = Activation("relu")
Softplus = Activation("softplus")
Sigmoid = Activation("sigmoid")


def LeakyRelu(negative_slope: float = 0.01) -> Activation:
    return Activation("leaky_relu", float(negative_slope))


def Elu(alpha: float = 1.0) -> Activation:
    return Activation("elu", float(alpha))


def serial(*layers) -> Serial:
    """Compose layers (or nested ``serial`` models) one after the other."""
    flat = []
    for layer in layers:
        if isinstance(layer, Serial):
            flat.extend(layer.layers)
        elif is_layer(layer):
            flat.append(layer)
        else:
            raise TypeError(f"serial() takes imnn.nn layers, got {type(layer).__name__}: {layer!r}")
    return Serial(tuple(flat))


def is_layer(obj: Any) -> bool:
    return isinstance(obj, (Dense, Conv, Activation, FlattenLayer, Reshape))


def is_model(obj: Any) -> bool:
    return isinstance(obj, Serial) or is_layer(obj)


def layers_of(model) -> tuple:
    return model.layers if isinstance(model, Serial) else (model,)


def conv_output_length(n: int, k: int, stride: int, padding: str) -> int:
    if padding == "VALID":
        return (n - k) // stride + 1
    return -(-n // stride)


def conv_padding(n: int, k: int, stride: int, padding: str) -> tuple[int, int]:
    """(before, after) padding of one spatial axis."""
    if padding == "VALID":
        return (0, 0)
    out = conv_output_length(n, k, stride, padding)
    total = max((out - 1) * stride + k - n, 0)
    return (total // 2, total - total // 2)


def layer_output_shape(layer, input_shape: tuple) -> tuple:
    input_shape = tuple(input_shape)
    if isinstance(layer, Dense):
        if len(input_shape) != 1:
            raise ValueError(
                f"Dense expects a 1-D input, got shape {input_shape}; add Flatten first")
        return (layer.features,)
    if isinstance(layer, Conv):
        nd = len(layer.kernel)
        if len(input_shape) != nd + 1:
            raise ValueError(
                f"a {nd}-D Conv expects inputs of shape {'(L, C)' if nd == 1 else '(H, W, C)'}, "
                f"got {input_shape}; add Reshape to give a channel axis")
        spatial = tuple(
            conv_output_length(n, k, s, layer.padding)
            for n, k, s in zip(input_shape[:-1], layer.kernel, layer.strides, strict=True))
        if min(spatial) < 1:
            raise ValueError(f"Conv kernel {layer.kernel} is larger than its input {input_shape}")
        return spatial + (layer.features,)
    if isinstance(layer, Activation):
        return input_shape
    if isinstance(layer, FlattenLayer):
        return (math.prod(input_shape),)
    if isinstance(layer, Reshape):
        if math.prod(layer.shape) != math.prod(input_shape):
            raise ValueError(f"cannot Reshape input of shape {input_shape} to {layer.shape}")
        return layer.shape
    raise TypeError(f"not an imnn.nn layer: {layer!r}")


def output_shape(model, input_shape: tuple) -> tuple:
    shape = tuple(input_shape)
    for layer in layers_of(model):
        shape = layer_output_shape(layer, shape)
    return shape


def seed_from_key(key) -> int:
    """A NumPy seed from a JAX PRNG key (raw uint32 pair or typed key) or an int."""
    if isinstance(key, (int, np.integer)):
        return int(key)
    if "key<" in str(getattr(key, "dtype", "")):
        import jax  # a typed JAX key: only JAX can unwrap it
        key = jax.random.key_data(key)
    data = np.asarray(key)
    return int(np.ravel(data).astype(np.uint64).dot(
        np.array([1 << 32, 1], dtype=np.uint64)[-data.size:]))


def init_weights(model, input_shape: tuple, key) -> list:
    """Initial float64 weights for ``model``: a list of per-layer tuples."""
    rng = np.random.default_rng(seed_from_key(key))
    shape = tuple(input_shape)
    weights = []
    for layer in layers_of(model):
        out = layer_output_shape(layer, shape)
        if isinstance(layer, Dense):
            fan_in, fan_out = shape[0], layer.features
            std = math.sqrt(2.0 / (fan_in + fan_out))
            weights.append((rng.normal(0.0, std, (fan_in, fan_out)), np.zeros(fan_out)))
        elif isinstance(layer, Conv):
            cin = shape[-1]
            field = math.prod(layer.kernel)
            std = math.sqrt(2.0 / (field * cin + field * layer.features))
            weights.append((rng.normal(0.0, std, layer.kernel + (cin, layer.features)),
                            np.zeros(layer.features)))
        else:
            weights.append(())
        shape = out
    return weights


@dataclass(frozen=True, eq=False)
class FunctionModel:
    """A plain function network: ``apply(params, d) -> (n_summaries,)`` and its initial
    ``params`` (a pytree of floating-point arrays). Made by ``from_function``."""
    apply: Callable
    params: Any


def from_function(apply: Callable, params: Any) -> FunctionModel:
    """A network written as a plain function, for ``model=`` (JAX backend).

    The fit starts from ``params`` (the key given as ``key_or_state`` does not change them) and
    keeps their pytree structure: the fitted ``w`` is a pytree like ``params``.

    Args:
        apply: ``apply(params, d)``, JAX-traceable; ``d`` is ONE unbatched simulation of shape
            ``input_shape``; returns the summaries, shape ``(n_summaries,)``.
        params: the initial weights, a pytree (nested dicts, lists, tuples...) whose leaves
            are floating-point arrays.

    Returns:
        A FunctionModel to pass as ``model=``.

    Raises:
        TypeError: ``apply`` is not callable, or a leaf of ``params`` is not a floating-point
            array (named by its path in the pytree).
    """
    import jax

    if not callable(apply):
        raise TypeError(f"from_function: apply must be a function apply(params, d), got "
                        f"{type(apply).__name__}")
    leaves = jax.tree_util.tree_leaves_with_path(params)
    if not leaves:
        raise TypeError("from_function: params must be a pytree of floating-point arrays; it "
                        "has no arrays")
    for path, leaf in leaves:
        dtype = getattr(leaf, "dtype", None)
        if (not hasattr(leaf, "shape") or dtype is None
                or not jax.numpy.issubdtype(dtype, jax.numpy.floating)):
            raise TypeError(
                f"from_function: every leaf of params must be a floating-point array; params"
                f"{jax.tree_util.keystr(path)} is {type(leaf).__name__}"
                f"{f' of dtype {dtype}' if dtype is not None else ''}")
    return FunctionModel(apply, params)




__all__ = [
    "Dense", "Conv", "Activation", "Flatten", "FlattenLayer", "Reshape", "Serial", "Tanh", "Relu",
    "Softplus", "Sigmoid", "LeakyRelu", "Elu", "serial", "output_shape", "init_weights",
    "conv_padding", "conv_output_length", "is_model", "layers_of", "FunctionModel",
    "from_function",
]
