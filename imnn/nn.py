"""A backend-neutral description of networks: layers composed with ``serial``.

Every backend can run these: the JAX backend builds init/apply from them, the
reference backends evaluate them with hand-written forward, forward-mode and
reverse-mode passes in float64. Each layer class (a ``Layer``) owns its output shape, its
weights' shapes and initialisation and its table form for saving; each backend keeps the
numerics of applying it, in one table keyed on the layer's class.

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

Why one module of about 590 lines: it is the public ``imnn.nn`` namespace, one class per
layer owning its fields, shapes, initialisation and table form (as a layer does in
equinox), and most of its lines are those classes' documentation of shapes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np

from ._checks import positive_integer
from .contracts import Array

ACTIVATIONS = ("tanh", "relu", "leaky_relu", "softplus", "elu", "sigmoid")

Shape = tuple[int, ...]

# The argument table of a layer type in its table form: {argument: (kind, default)}, kind one
# of "int", "ints" (a positive integer or a list of them), "number" (finite), "str"; a default
# of REQUIRED marks an argument the table must give. ``imnn._tables`` checks tables by it.
REQUIRED = object()
TableArguments = dict[str, tuple[str, Any]]

LAYER_CLASSES: list[type[Layer]] = []  # every Layer subclass, in the order it was defined


class Layer:
    """What every imnn.nn layer owns: its output shape, its weights' shapes and initial
    values, and its table form for saving (``imnn._tables``). The numerics of applying it
    live in each backend, in one table keyed on the layer's class
    (``backends/jax/network.py`` ``_APPLY``, ``reference/numpy/_network.py`` ``_PASSES``).

    Shapes are of one simulation (no batch axis). Subclasses are frozen dataclasses and
    register themselves in ``LAYER_CLASSES``; each sets ``table_arguments``, a dict
    {table type name: TableArguments} of the table types it is saved as.
    """

    table_arguments: ClassVar[dict[str, TableArguments]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        LAYER_CLASSES.append(cls)

    def output_shape(self, input_shape: Shape) -> Shape:
        """The shape of this layer's output.

        Args:
            input_shape: the shape of its input.

        Returns:
            The shape of its output.

        Raises:
            ValueError: the layer cannot take an input of ``input_shape``.
        """
        raise NotImplementedError(f"{type(self).__name__} does not define output_shape")

    def weight_shapes(self, input_shape: Shape) -> tuple[Shape, ...]:
        """The shapes of this layer's weights (``()`` for a layer without weights).

        Args:
            input_shape: the shape of its input.

        Returns:
            One shape per weight array, in the order of the layer's weight tuple.
        """
        return ()

    def init(self, rng: np.random.Generator, input_shape: Shape) -> tuple[np.ndarray, ...]:
        """The layer's initial float64 weights, drawn from ``rng``.

        Args:
            rng: the NumPy generator ``init_weights`` draws every layer's weights from,
                layer after layer (so the draws, and the weights, depend on the key only).
            input_shape: the shape of its input.

        Returns:
            A tuple of arrays of shapes ``weight_shapes(input_shape)``; ``()`` without weights.
        """
        return ()

    def to_table(self) -> dict[str, Any]:
        """The layer as a JSON/TOML table, e.g. ``{"type": "Dense", "features": 128}``.

        Returns:
            A dict with ``"type"`` (a key of ``table_arguments``) and the arguments that
            ``from_table`` takes back.
        """
        raise NotImplementedError(f"{type(self).__name__} does not define to_table")

    @classmethod
    def from_table(cls, type_name: str, arguments: dict[str, Any]) -> Layer:
        """The layer a table describes, from its arguments once checked.

        Args:
            type_name: the table's ``"type"``, a key of ``cls.table_arguments``.
            arguments: every argument of ``cls.table_arguments[type_name]``, checked
                against its kind, defaults filled in.

        Returns:
            The layer.

        Raises:
            ValueError, TypeError: the arguments are out of range (as the constructor
                raises them).
        """
        return cls(**arguments)


def _glorot(rng: np.random.Generator, kernel_shape: Shape, fan_in: int, fan_out: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """A Glorot normal kernel (std sqrt(2 / (fan_in + fan_out))) and a zero bias."""
    std = math.sqrt(2.0 / (fan_in + fan_out))
    return rng.normal(0.0, std, kernel_shape), np.zeros(kernel_shape[-1])


@dataclass(frozen=True)
class Dense(Layer):
    """A fully connected layer: x (k,) -> x @ W + b, shape (features,).

    Weights: W (k, features), b (features,); W Glorot normal, b zero.

    Args:
        features: the number of outputs (a positive integer).
    """
    features: int
    table_arguments: ClassVar[dict[str, TableArguments]] = {
        "Dense": {"features": ("int", REQUIRED)}}

    def __post_init__(self):
        positive_integer("Dense features", self.features)

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 1:
            raise ValueError(
                f"Dense expects a 1-D input, got shape {tuple(input_shape)}; add Flatten first")
        return (self.features,)

    def weight_shapes(self, input_shape: Shape) -> tuple[Shape, ...]:
        self.output_shape(input_shape)
        return (input_shape[0], self.features), (self.features,)

    def init(self, rng: np.random.Generator, input_shape: Shape) -> tuple[np.ndarray, ...]:
        kernel, _ = self.weight_shapes(input_shape)
        return _glorot(rng, kernel, input_shape[0], self.features)

    def to_table(self) -> dict[str, Any]:
        return {"type": "Dense", "features": self.features}


@dataclass(frozen=True)
class Conv(Layer):
    """A 1-D or 2-D convolution, channels last (cross-correlation, no kernel flip).

    1-D: input (L, C_in) -> (L_out, features); 2-D: input (H, W, C_in) -> (H_out, W_out,
    features). Per spatial axis of length n, kernel k and stride s: "VALID" gives
    (n − k) // s + 1, "SAME" ceil(n / s) (padding as ``conv_padding``).
    Weights: kernel + (C_in, features), bias (features,); Glorot normal kernel with
    fan_in = prod(kernel)·C_in and fan_out = prod(kernel)·features, zero bias.

    Args:
        features: the number of output channels (a positive integer).
        kernel: the kernel's spatial shape, 1 or 2 positive integers (an int is 1-D).
        strides: the strides, as many as ``kernel`` (default: 1 on every axis).
        padding: "SAME" (default) or "VALID".
    """
    features: int
    kernel: tuple
    strides: tuple | None = None
    padding: str = "SAME"
    table_arguments: ClassVar[dict[str, TableArguments]] = {
        "Conv": {"features": ("int", REQUIRED), "kernel": ("ints", REQUIRED),
                 "strides": ("ints", None), "padding": ("str", "SAME")}}

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

    def output_shape(self, input_shape: Shape) -> Shape:
        input_shape = tuple(input_shape)
        nd = len(self.kernel)
        if len(input_shape) != nd + 1:
            raise ValueError(
                f"a {nd}-D Conv expects inputs of shape {'(L, C)' if nd == 1 else '(H, W, C)'}, "
                f"got {input_shape}; add Reshape to give a channel axis")
        spatial = tuple(
            conv_output_length(n, k, s, self.padding)
            for n, k, s in zip(input_shape[:-1], self.kernel, self.strides, strict=True))
        if min(spatial) < 1:
            raise ValueError(f"Conv kernel {self.kernel} is larger than its input {input_shape}")
        return spatial + (self.features,)

    def weight_shapes(self, input_shape: Shape) -> tuple[Shape, ...]:
        self.output_shape(input_shape)
        return self.kernel + (input_shape[-1], self.features), (self.features,)

    def init(self, rng: np.random.Generator, input_shape: Shape) -> tuple[np.ndarray, ...]:
        kernel, _ = self.weight_shapes(input_shape)
        field = math.prod(self.kernel)
        return _glorot(rng, kernel, field * input_shape[-1], field * self.features)

    def to_table(self) -> dict[str, Any]:
        return {"type": "Conv", "features": self.features, "kernel": list(self.kernel),
                "strides": list(self.strides), "padding": self.padding}


@dataclass(frozen=True)
class Reshape(Layer):
    """A C-order reshape of the input to ``shape`` (as many elements). No weights.

    Args:
        shape: the output shape, a sequence of positive integers.
    """
    shape: tuple
    table_arguments: ClassVar[dict[str, TableArguments]] = {
        "Reshape": {"shape": ("ints", REQUIRED)}}

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))

    def output_shape(self, input_shape: Shape) -> Shape:
        if math.prod(self.shape) != math.prod(input_shape):
            raise ValueError(f"cannot Reshape input of shape {tuple(input_shape)} to {self.shape}")
        return self.shape

    def to_table(self) -> dict[str, Any]:
        return {"type": "Reshape", "shape": list(self.shape)}


@dataclass(frozen=True)
class FlattenLayer(Layer):
    """The C-order ravel of the input: shape (prod(input_shape),). No weights.
    Use the instance ``Flatten``."""
    table_arguments: ClassVar[dict[str, TableArguments]] = {"Flatten": {}}

    def output_shape(self, input_shape: Shape) -> Shape:
        return (math.prod(input_shape),)

    def to_table(self) -> dict[str, Any]:
        return {"type": "Flatten"}

    @classmethod
    def from_table(cls, type_name: str, arguments: dict[str, Any]) -> FlattenLayer:
        return Flatten


# activation name -> (table type, the table's name for ``parameter`` or None)
_ACTIVATION_TABLES = {"tanh": ("Tanh", None), "relu": ("Relu", None),
                      "softplus": ("Softplus", None), "sigmoid": ("Sigmoid", None),
                      "elu": ("Elu", "alpha"), "leaky_relu": ("LeakyRelu", "negative_slope")}


@dataclass(frozen=True)
class Activation(Layer):
    """An elementwise activation; the output has the input's shape. No weights.

    ``name`` is one of tanh, relu, leaky_relu (x if x > 0 else slope·x), softplus
    (log(1 + eˣ)), elu (x if x > 0 else α(eˣ − 1)), sigmoid (1 / (1 + e⁻ˣ)); use the
    instances ``Tanh``, ``Relu``, ``Softplus``, ``Sigmoid`` and the functions ``LeakyRelu``,
    ``Elu``.

    Args:
        name: the activation's name, one of ``ACTIVATIONS``.
        parameter: leaky_relu's slope or elu's α (unused by the others).
    """
    name: str
    parameter: float = 0.0
    table_arguments: ClassVar[dict[str, TableArguments]] = {
        "Tanh": {}, "Relu": {}, "Softplus": {}, "Sigmoid": {},
        "Elu": {"alpha": ("number", 1.0)}, "LeakyRelu": {"negative_slope": ("number", 0.01)}}

    def __post_init__(self):
        if self.name not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.name!r}")

    def output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape)

    def to_table(self) -> dict[str, Any]:
        type_name, parameter = _ACTIVATION_TABLES[self.name]
        return {"type": type_name} | ({parameter: self.parameter} if parameter else {})

    @classmethod
    def from_table(cls, type_name: str, arguments: dict[str, Any]) -> Activation:
        name = next(n for n, (t, _) in _ACTIVATION_TABLES.items() if t == type_name)
        parameter = _ACTIVATION_TABLES[name][1]
        return cls(name, float(arguments[parameter])) if parameter else cls(name)


@dataclass(frozen=True)
class Serial:
    """Layers applied one after the other (made by ``serial``).

    Args:
        layers: a tuple of ``Layer`` instances.
    """
    layers: tuple


Flatten = FlattenLayer()
Tanh = Activation("tanh")
Relu = Activation("relu")
Softplus = Activation("softplus")
Sigmoid = Activation("sigmoid")


def LeakyRelu(negative_slope: float = 0.01) -> Activation:
    """The leaky ReLU activation, x if x > 0 else ``negative_slope``·x.

    Args:
        negative_slope: the slope for x ≤ 0 (default 0.01).

    Returns:
        The ``Activation`` layer.
    """
    return Activation("leaky_relu", float(negative_slope))


def Elu(alpha: float = 1.0) -> Activation:
    """The ELU activation, x if x > 0 else ``alpha``·(eˣ − 1).

    Args:
        alpha: the scale α for x ≤ 0 (default 1.0).

    Returns:
        The ``Activation`` layer.
    """
    return Activation("elu", float(alpha))


def serial(*layers: Layer | Serial) -> Serial:
    """Compose layers (or nested ``serial`` models) one after the other.

    Args:
        *layers: ``Layer`` instances or ``Serial`` models.

    Returns:
        The model, a ``Serial`` of the layers (nested models flattened).

    Raises:
        TypeError: an argument is not an imnn.nn layer or model.
    """
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
    """Whether ``obj`` is an imnn.nn layer.

    Args:
        obj: anything.

    Returns:
        True for an instance of ``Layer``.
    """
    return isinstance(obj, Layer)


def is_model(obj: Any) -> bool:
    """Whether ``obj`` is an imnn.nn model: a ``Serial`` or one layer.

    Args:
        obj: anything.

    Returns:
        True for a ``Serial`` model or a ``Layer``.
    """
    return isinstance(obj, Serial) or is_layer(obj)


def layers_of(model: Serial | Layer) -> tuple[Layer, ...]:
    """The layers of an imnn.nn model, in order.

    Args:
        model: a ``Serial`` model or one layer.

    Returns:
        Its layers, a tuple (one layer for a layer).
    """
    return model.layers if isinstance(model, Serial) else (model,)


def conv_output_length(n: int, k: int, stride: int, padding: str) -> int:
    """The output length of a convolution along one spatial axis of length ``n`` with a
    kernel of length ``k``: (n − k) // stride + 1 for "VALID", ceil(n / stride) for "SAME".

    Args:
        n: the input length along the axis.
        k: the kernel length along the axis.
        stride: the stride along the axis.
        padding: "VALID" or "SAME".

    Returns:
        The output length.
    """
    if padding == "VALID":
        return (n - k) // stride + 1
    return -(-n // stride)


def conv_padding(n: int, k: int, stride: int, padding: str) -> tuple[int, int]:
    """The padding of one spatial axis: none for "VALID"; for "SAME" the total
    max((out − 1)·stride + k − n, 0), of which floor(total / 2) before.

    Args:
        n: the input length along the axis.
        k: the kernel length along the axis.
        stride: the stride along the axis.
        padding: "VALID" or "SAME".

    Returns:
        (before, after), the padding on either side.
    """
    if padding == "VALID":
        return (0, 0)
    out = conv_output_length(n, k, stride, padding)
    total = max((out - 1) * stride + k - n, 0)
    return (total // 2, total - total // 2)


def output_shape(model: Serial | Layer, input_shape: Shape) -> Shape:
    """The output shape of an imnn.nn model for one simulation of ``input_shape``.

    Args:
        model: a ``Serial`` model or one layer.
        input_shape: the shape of one simulation, without a batch axis.

    Returns:
        The shape of the model's output for one simulation.

    Raises:
        ValueError: a layer cannot take the output of the layers before it.
    """
    shape = tuple(input_shape)
    for layer in layers_of(model):
        shape = layer.output_shape(shape)
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


def init_weights(model: Serial | Layer, input_shape: Shape, key: Array | int
                 ) -> list[tuple[np.ndarray, ...]]:
    """Initial float64 weights for ``model``: one tuple per layer (``Layer.init``), all
    drawn from one NumPy generator seeded by ``key``, so every backend starts from the same
    weights for the same key.

    Args:
        model: an imnn.nn model.
        input_shape: the shape of one simulation.
        key: a JAX PRNG key (raw or typed) or an int seed.

    Returns:
        A list with one tuple of arrays per layer (``()`` for layers without weights).

    Raises:
        ValueError: a layer cannot take the output of the layers before it.
    """
    rng = np.random.default_rng(seed_from_key(key))
    shape = tuple(input_shape)
    weights = []
    for layer in layers_of(model):
        out = layer.output_shape(shape)
        weights.append(tuple(layer.init(rng, shape)))
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
    "Layer", "Dense", "Conv", "Activation", "Flatten", "FlattenLayer", "Reshape", "Serial", "Tanh",
    "Relu", "Softplus", "Sigmoid", "LeakyRelu", "Elu", "serial", "output_shape", "init_weights",
    "conv_padding", "conv_output_length", "is_layer", "is_model", "layers_of", "FunctionModel",
    "from_function", "LAYER_CLASSES",
]
