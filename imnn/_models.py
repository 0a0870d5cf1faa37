"""The kinds of network ``model=`` accepts, and how each becomes weights + ``apply``.

Kinds (``model_kind`` names them with these strings):

- ``"imnn.nn"``: an ``imnn.nn`` model (``imnn.nn.serial(...)`` or one layer); every backend
  runs these.
- ``"init_apply"``: a pair ``(init, apply)``: ``init(key, input_shape) -> (output_shape,
  params)`` with ``params`` a pytree of arrays, and ``apply(params, d)`` on ONE unbatched
  simulation ``d`` of shape ``input_shape``, returning the summaries ``(n_summaries,)``
  (``jax.example_libraries.stax.serial(...)`` returns such a pair).
- ``"flax.linen"``: a ``flax.linen.Module`` instance; its ``params`` collection are the weights,
  initialised by ``module.init(key, zeros(input_shape))``.
- ``"flax.nnx"``: a ``flax.nnx.Module`` instance; its ``nnx.Param`` variables, as they are when
  the IMNN is built, are the initial weights (a nested dict of arrays).
- ``"equinox"``: an ``equinox.Module`` instance; its floating-point array leaves, as they are
  when the IMNN is built, are the initial weights, everything else is kept fixed.
- ``"function"``: ``imnn.nn.from_function(apply, params)``: ``apply(params, d)`` with its initial
  ``params``.

Detecting a kind never imports flax or equinox: an object can only be a flax or equinox
module when its library is already imported, so the classes are looked up in ``sys.modules``.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, NamedTuple

from . import nn
from ._types import Array, Key, Shape, Weights

KINDS = ("imnn.nn", "init_apply", "flax.linen", "flax.nnx", "equinox", "function")

_ACCEPTED = (
    "an imnn.nn model (imnn.nn.serial(...)), an (init, apply) pair (e.g. "
    "jax.example_libraries.stax.serial(...)), a flax.linen.Module instance, a flax.nnx.Module "
    "instance, an equinox.Module instance, or imnn.nn.from_function(apply, params) for a plain "
    "function apply(params, d)")

# The library module that defines each kind's base class, and the class's name there.
_MODULE_CLASSES = (("flax.linen", "flax.linen", "Module"),
                   ("flax.nnx", "flax.nnx", "Module"),
                   ("equinox", "equinox", "Module"))


class Adapted(NamedTuple):
    """A model seen as plain functions of its weights (before any dtype cast).

    init(key) -> weights, a pytree of floating-point arrays (key: a JAX PRNG key; ignored by
    the kinds whose initial weights are the model's own arrays).
    apply(weights, d) -> the model's output for one simulation d of shape input_shape.
    """
    init: Callable[[Key], Weights]
    apply: Callable[[Weights, Array], Array]


def _library_class(module_name: str, class_name: str) -> type | None:
    """The class ``module_name.class_name`` if that library is already imported, else None."""
    module = sys.modules.get(module_name)
    return None if module is None else getattr(module, class_name, None)


def _module_kind(obj: Any) -> str | None:
    """The kind of a flax.linen / flax.nnx / equinox Module instance, or None."""
    roots = {cls.__module__.split(".")[0] for cls in type(obj).__mro__}
    if not roots & {"flax", "equinox"}:
        return None
    for kind, module_name, class_name in _MODULE_CLASSES:
        cls = _library_class(module_name, class_name)
        if cls is not None and isinstance(obj, cls):
            return kind
    return None


def model_kind(model: Any) -> str:
    """Which kind of network ``model`` is.

    Args:
        model: what was passed as ``model=``.

    Returns:
        One of ``"imnn.nn"``, ``"init_apply"``, ``"flax.linen"``, ``"flax.nnx"``,
        ``"equinox"``, ``"function"`` (see this module's docstring).

    Raises:
        TypeError: ``model`` is none of these; the message lists what is accepted. A pair of a
            flax.linen module's own ``(init, apply)`` methods is refused this way too (they do
            not follow the ``(init, apply)`` contract): pass the module itself.
    """
    if nn.is_model(model):
        return "imnn.nn"
    if isinstance(model, nn.FunctionModel):
        return "function"
    kind = _module_kind(model)
    if kind is not None:
        return kind
    if isinstance(model, tuple) and len(model) == 2 and all(callable(f) for f in model):
        owners = {_module_kind(getattr(f, "__self__", None)) for f in model} - {None}
        if owners:
            raise TypeError(
                f"model: got the methods of a {owners.pop()} Module as an (init, apply) pair; "
                "they do not follow the (init, apply) contract (init(key, input_shape) -> "
                "(output_shape, params), apply(params, d)). Pass the Module instance itself: "
                "model=module")
        return "init_apply"
    if isinstance(model, type) and _module_kind_of_class(model):
        raise TypeError(f"model: got the class {model.__name__}; pass an instance of it "
                        f"(model={model.__name__}(...))")
    hint = ("; for a plain function apply(params, d) pass "
            "imnn.nn.from_function(apply, params)") if callable(model) else ""
    raise TypeError(f"model must be {_ACCEPTED}; got {type(model).__name__}{hint}")


def _module_kind_of_class(cls: type) -> bool:
    return any(c.__module__.split(".")[0] in ("flax", "equinox") for c in cls.__mro__)


def adapt(model: Any, kind: str, input_shape: Shape, dtype: Any) -> Adapted:
    """``init`` and ``apply`` of a model of any kind but ``"imnn.nn"``.

    Args:
        model: the model, of kind ``kind`` (``model_kind(model)``).
        kind: ``model_kind(model)``, not ``"imnn.nn"``.
        input_shape: the shape of one simulation (no batch axis).
        dtype: the floating-point dtype of the fit, a NumPy dtype or what ``numpy.dtype``
            accepts (the initialisation input of flax.linen).

    Returns:
        Adapted(init, apply), the weights not yet cast to ``dtype``.

    Raises:
        ValueError: a flax module carries variables other than its parameters (e.g. batch
            statistics), which a fit could not carry along.
    """
    return _ADAPTERS[kind](model, tuple(input_shape), dtype)


def _init_apply(model: Any, input_shape: Shape, dtype: Any) -> Adapted:
    user_init, user_apply = model
    return Adapted(lambda key: user_init(key, input_shape)[1], user_apply)


def _function(model: nn.FunctionModel, input_shape: Shape, dtype: Any) -> Adapted:
    return Adapted(lambda key: model.params, model.apply)


def _linen(module: Any, input_shape: Shape, dtype: Any) -> Adapted:
    import jax
    import jax.numpy as jnp

    def variables(key: Key) -> dict:
        return module.init(key, jnp.zeros(input_shape, dtype))

    collections = jax.eval_shape(variables, jax.random.PRNGKey(0))
    others = sorted(set(collections) - {"params"})
    if others:
        raise ValueError(
            f"model: the flax.linen module {type(module).__name__} has variable collections "
            f"{others} besides 'params'; imnn fits only parameters (state that changes as the "
            "network runs, such as BatchNorm's batch_stats, has no meaning for one simulation "
            "at a time). Use layers without such state (e.g. LayerNorm instead of BatchNorm)")
    return Adapted(lambda key: variables(key).get("params", {}),
                   lambda w, d: module.apply({"params": w}, d))


def _nnx(module: Any, input_shape: Shape, dtype: Any) -> Adapted:
    from flax import nnx

    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    others = [(".".join(map(str, path)), type(variable).__name__)
              for path, variable in nnx.to_flat_state(rest)]
    if others:
        raise ValueError(
            f"model: the flax.nnx module {type(module).__name__} has variables other than "
            f"nnx.Param, e.g. {others[0][0]} ({others[0][1]}); imnn fits only parameters (state "
            "that changes as the network runs, such as BatchNorm's statistics or Dropout's "
            "random state, has no meaning for one simulation at a time). Use layers without "
            "such state")
    weights = nnx.to_pure_dict(params)
    return Adapted(lambda key: weights, lambda w, d: nnx.merge(graphdef, w, rest)(d))


def _equinox(module: Any, input_shape: Shape, dtype: Any) -> Adapted:
    import equinox as eqx

    weights, static = eqx.partition(module, eqx.is_inexact_array)
    return Adapted(lambda key: weights, lambda w, d: eqx.combine(w, static)(d))


_ADAPTERS = {"init_apply": _init_apply, "function": _function, "flax.linen": _linen,
             "flax.nnx": _nnx, "equinox": _equinox}
