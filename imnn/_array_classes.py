"""The four IMNN classes fitted on simulations held in memory: with known
derivatives ∂d/∂θ (``GradientIMNN``, ``AggregatedGradientIMNN``) or with
seed-matched perturbed simulations (``NumericalGradientIMNN``,
``AggregatedNumericalGradientIMNN``), in memory or aggregated over devices.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import jax
import numpy as np

from ._base import BaseIMNN, aggregation, finite_difference, keep_within
from ._sources import ArraySource, Layout
from .contracts import Array, Exact

if TYPE_CHECKING:
    import optax


class GradientIMNN(BaseIMNN):
    """Fits on simulations and their known derivatives ∂d/∂θ held in memory.

    ∂x/∂θ is the chain rule through the network (docs/design/behaviour.md#derivatives).

    Args:
        n_s: Number of fiducial simulations (at θ_fid) whose summaries give the covariance C and
            the mean μ each iteration. An int, at least 2, greater than n_params and greater
            than n_summaries (otherwise C or F is singular by construction).
        n_d: Number of simulations whose θ-derivatives give dμ/dθ; they are the first n_d of the
            n_s fiducial ones (same seeds). An int with 1 ≤ n_d ≤ n_s.
        n_params: Number of physical parameters p (the length of θ_fid). A positive int.
        n_summaries: Number of summaries s the network outputs; at least n_params and less than
            n_s.
        input_shape: Shape of one simulation d, without a batch axis, e.g. (10,) or (32, 32, 1):
            a tuple of positive ints.
        θ_fid: Fiducial parameter values, an array of shape (n_params,), finite and within the
            backend's floating-point range; the Fisher information is estimated there.
        model: The network, mapping one simulation of shape input_shape to summaries of shape
            (n_summaries,). Any of: an imnn.nn model (imnn.nn.serial(...) or one layer; the only
            kind the numpy and numba backends run); an (init, apply) pair with init(key,
            input_shape) -> (output_shape, params) and apply(params, d) on one unbatched
            simulation (as jax.example_libraries.stax.serial returns); a flax.linen.Module
            instance (weights from module.init); a flax.nnx.Module or equinox.Module instance
            (its current parameters are the initial weights); or imnn.nn.from_function(apply,
            params) for a plain function. Its output shape must be (n_summaries,).
        optimiser: An optax GradientTransformation (e.g. optax.adam(1e-3)), or the legacy (init,
            update, get_params) triple of jax.example_libraries.optimizers.
        key_or_state: A JAX PRNG key (jax.random.PRNGKey(seed)) that initialises the network
            weights; or, with a legacy optimiser triple, a state of that optimiser from an
            earlier fit, whose weights (get_params(state)) are the starting point.
        fiducial: Simulations at θ_fid, an array of shape (n_s,) + input_shape of finite real
            numbers.
        derivative: Their derivatives ∂d/∂θ, an array of shape (n_d,) + input_shape +
            (n_params,): derivative[i] belongs to fiducial[i].
        validation_fiducial: Optional validation simulations, shape (n_s,) + input_shape
            (default None). With them, det F of the validation set is the early-stopping
            criterion.
        validation_derivative: Their derivatives, shape (n_d,) + input_shape + (n_params,);
            given together with validation_fiducial (default None).
        backend: Keyword-only. The backend that computes the fit: "jax" (default; compiled,
            float32 unless JAX's x64 mode is on), or the float64 reference backends "numpy" and
            "numba" (imnn.nn models only).

    Raises:
        TypeError: An argument of the wrong type (the message names it), e.g. a model or
            optimiser of no accepted kind, or key_or_state that is neither a key nor a legacy
            state.
        ValueError: Inconsistent sizes or shapes (n_s ≤ n_params or ≤ n_summaries, n_d > n_s, a
            model whose output shape is not (n_summaries,), data of the wrong shape), non-finite
            data, or an unknown backend; raised before anything is computed.
    """

    def __init__(self, n_s: int, n_d: int, n_params: int, n_summaries: int,
                 input_shape: tuple[int, ...], θ_fid: Array, model: Any,
                 optimiser: optax.GradientTransformation | tuple,
                 key_or_state: Array | tuple, fiducial: Array, derivative: Array,
                 validation_fiducial: Array | None = None,
                 validation_derivative: Array | None = None, *,
                 backend: str = "jax") -> None:
        super().__init__(n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                         optimiser, key_or_state, backend)
        kind = Exact(self.n_params)
        self._attach(ArraySource(kind, self.n_s, self.n_d, self.n_params, self.input_shape,
                                 fiducial, derivative, validation_fiducial,
                                 validation_derivative, Layout(), self.runtime.dtype), kind)


class AggregatedGradientIMNN(BaseIMNN):
    """GradientIMNN with the summaries computed n_per_device at a time over devices.

    The weight gradient is exact, by two passes over the data
    (docs/design/behaviour.md#aggregation).

    Args:
        n_s: Number of fiducial simulations (at θ_fid) whose summaries give the covariance C and
            the mean μ each iteration. An int, at least 2, greater than n_params and greater
            than n_summaries (otherwise C or F is singular by construction).
        n_d: Number of simulations whose θ-derivatives give dμ/dθ; they are the first n_d of the
            n_s fiducial ones (same seeds). An int with 1 ≤ n_d ≤ n_s.
        n_params: Number of physical parameters p (the length of θ_fid). A positive int.
        n_summaries: Number of summaries s the network outputs; at least n_params and less than
            n_s.
        input_shape: Shape of one simulation d, without a batch axis, e.g. (10,) or (32, 32, 1):
            a tuple of positive ints.
        θ_fid: Fiducial parameter values, an array of shape (n_params,), finite and within the
            backend's floating-point range; the Fisher information is estimated there.
        model: The network, mapping one simulation of shape input_shape to summaries of shape
            (n_summaries,). Any of: an imnn.nn model (imnn.nn.serial(...) or one layer; the only
            kind the numpy and numba backends run); an (init, apply) pair with init(key,
            input_shape) -> (output_shape, params) and apply(params, d) on one unbatched
            simulation (as jax.example_libraries.stax.serial returns); a flax.linen.Module
            instance (weights from module.init); a flax.nnx.Module or equinox.Module instance
            (its current parameters are the initial weights); or imnn.nn.from_function(apply,
            params) for a plain function. Its output shape must be (n_summaries,).
        optimiser: An optax GradientTransformation (e.g. optax.adam(1e-3)), or the legacy (init,
            update, get_params) triple of jax.example_libraries.optimizers.
        key_or_state: A JAX PRNG key (jax.random.PRNGKey(seed)) that initialises the network
            weights; or, with a legacy optimiser triple, a state of that optimiser from an
            earlier fit, whose weights (get_params(state)) are the starting point.
        fiducial: Simulations at θ_fid, an array of shape (n_s,) + input_shape of finite real
            numbers.
        derivative: Their derivatives ∂d/∂θ, an array of shape (n_d,) + input_shape +
            (n_params,): derivative[i] belongs to fiducial[i].
        host: The JAX device that holds the weights and the gathered summaries and runs the
            loss, e.g. jax.devices('cpu')[0].
        devices: Non-empty list of JAX devices the simulations are summarised on (e.g.
            jax.devices()); the data are split over them in equal contiguous chunks.
        n_per_device: Number of simulations each device summarises at a time (a positive int);
            every stream's size must be a multiple of len(devices) · n_per_device.
        validation_fiducial: Optional validation simulations, shape (n_s,) + input_shape
            (default None). With them, det F of the validation set is the early-stopping
            criterion.
        validation_derivative: Their derivatives, shape (n_d,) + input_shape + (n_params,);
            given together with validation_fiducial (default None).
        prefetch: Accepted for compatibility with earlier code and ignored: the arrays are laid
            over the devices once (default None).
        cache: Accepted for compatibility and ignored, like prefetch (default False).
        memory_budget: Keyword-only. Bytes per device that pass 1 may keep for pass 2 (the
            simulations, or everything pass 2 needs) instead of recomputing them: None (the
            backend's default, 1 GiB on JAX), 0 (recompute every batch in pass 2), or a
            positive int. What each stream kept is in ``executor.kept`` after the first
            gradient.
        backend: Keyword-only. The backend that computes the fit: "jax" (default; compiled,
            float32 unless JAX's x64 mode is on), or the float64 reference backends "numpy" and
            "numba" (imnn.nn models only).

    Raises:
        TypeError: An argument of the wrong type (the message names it), e.g. a model or
            optimiser of no accepted kind, or key_or_state that is neither a key nor a legacy
            state.
        ValueError: Inconsistent sizes or shapes (n_s ≤ n_params or ≤ n_summaries, n_d > n_s, a
            model whose output shape is not (n_summaries,), data of the wrong shape), non-finite
            data, or an unknown backend; raised before anything is computed.
    """

    def __init__(self, n_s: int, n_d: int, n_params: int, n_summaries: int,
                 input_shape: tuple[int, ...], θ_fid: Array, model: Any,
                 optimiser: optax.GradientTransformation | tuple,
                 key_or_state: Array | tuple, fiducial: Array, derivative: Array,
                 host: jax.Device, devices: Sequence[jax.Device], n_per_device: int,
                 validation_fiducial: Array | None = None,
                 validation_derivative: Array | None = None, prefetch: Any = None,
                 cache: bool = False, *, backend: str = "jax",
                 memory_budget: int | None = None) -> None:
        layout, devices = aggregation(host, devices, n_per_device, memory_budget)
        super().__init__(n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                         optimiser, key_or_state, backend, devices)
        self.host, self.devices, self.n_per_device = host, devices, layout.n_per_device
        kind = Exact(self.n_params)
        self._attach(ArraySource(kind, self.n_s, self.n_d, self.n_params, self.input_shape,
                                 fiducial, derivative, validation_fiducial,
                                 validation_derivative, layout, self.runtime.dtype), kind)
        self._seed_shapes(layout)
        self.memory_budget = keep_within(self, memory_budget)


class NumericalGradientIMNN(BaseIMNN):
    """Fits on simulations held in memory, with ∂x/∂θ by seed-matched finite differences.

    Simulations made with the same seed just above and below θ_fid give the derivatives of the
    summaries by central differences (docs/design/behaviour.md#derivatives).

    Args:
        n_s: Number of fiducial simulations (at θ_fid) whose summaries give the covariance C and
            the mean μ each iteration. An int, at least 2, greater than n_params and greater
            than n_summaries (otherwise C or F is singular by construction).
        n_d: Number of simulations whose θ-derivatives give dμ/dθ; they are the first n_d of the
            n_s fiducial ones (same seeds). An int with 1 ≤ n_d ≤ n_s.
        n_params: Number of physical parameters p (the length of θ_fid). A positive int.
        n_summaries: Number of summaries s the network outputs; at least n_params and less than
            n_s.
        input_shape: Shape of one simulation d, without a batch axis, e.g. (10,) or (32, 32, 1):
            a tuple of positive ints.
        θ_fid: Fiducial parameter values, an array of shape (n_params,), finite and within the
            backend's floating-point range; the Fisher information is estimated there.
        model: The network, mapping one simulation of shape input_shape to summaries of shape
            (n_summaries,). Any of: an imnn.nn model (imnn.nn.serial(...) or one layer; the only
            kind the numpy and numba backends run); an (init, apply) pair with init(key,
            input_shape) -> (output_shape, params) and apply(params, d) on one unbatched
            simulation (as jax.example_libraries.stax.serial returns); a flax.linen.Module
            instance (weights from module.init); a flax.nnx.Module or equinox.Module instance
            (its current parameters are the initial weights); or imnn.nn.from_function(apply,
            params) for a plain function. Its output shape must be (n_summaries,).
        optimiser: An optax GradientTransformation (e.g. optax.adam(1e-3)), or the legacy (init,
            update, get_params) triple of jax.example_libraries.optimizers.
        key_or_state: A JAX PRNG key (jax.random.PRNGKey(seed)) that initialises the network
            weights; or, with a legacy optimiser triple, a state of that optimiser from an
            earlier fit, whose weights (get_params(state)) are the starting point.
        fiducial: Simulations at θ_fid, an array of shape (n_s,) + input_shape of finite real
            numbers.
        derivative: Seed-matched perturbed simulations, an array of shape (n_d, 2, n_params) +
            input_shape: [i, 0, a] is made at θ_fid − δθ[a]/2 along parameter a and [i, 1, a] at
            θ_fid + δθ[a]/2, both with the seed of fiducial[i].
        δθ: Full finite-difference step per parameter, an array of shape (n_params,) of non-zero
            values: ∂x/∂θ_a ≈ (x(θ_fid + δθ_a/2) − x(θ_fid − δθ_a/2)) / δθ_a.
        validation_fiducial: Optional validation simulations at θ_fid, shape (n_s,) +
            input_shape (default None); with them the validation det F decides early stopping.
        validation_derivative: Their perturbed counterparts, shape (n_d, 2, n_params) +
            input_shape, given together with validation_fiducial (default None).
        backend: Keyword-only. The backend that computes the fit: "jax" (default; compiled,
            float32 unless JAX's x64 mode is on), or the float64 reference backends "numpy" and
            "numba" (imnn.nn models only).

    Raises:
        TypeError: An argument of the wrong type (the message names it), e.g. a model or
            optimiser of no accepted kind, or key_or_state that is neither a key nor a legacy
            state.
        ValueError: Inconsistent sizes or shapes (n_s ≤ n_params or ≤ n_summaries, n_d > n_s, a
            model whose output shape is not (n_summaries,), data of the wrong shape), non-finite
            data, or an unknown backend; raised before anything is computed.
    """

    def __init__(self, n_s: int, n_d: int, n_params: int, n_summaries: int,
                 input_shape: tuple[int, ...], θ_fid: Array, model: Any,
                 optimiser: optax.GradientTransformation | tuple,
                 key_or_state: Array | tuple, fiducial: Array, derivative: Array, δθ: Array,
                 validation_fiducial: Array | None = None,
                 validation_derivative: Array | None = None, *,
                 backend: str = "jax") -> None:
        super().__init__(n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                         optimiser, key_or_state, backend)
        kind = finite_difference(δθ, self.n_params)
        self.δθ = np.asarray(kind.δθ)
        self._attach(ArraySource(kind, self.n_s, self.n_d, self.n_params, self.input_shape,
                                 fiducial, derivative, validation_fiducial,
                                 validation_derivative, Layout(), self.runtime.dtype), kind)


class AggregatedNumericalGradientIMNN(BaseIMNN):
    """NumericalGradientIMNN with the summaries computed n_per_device at a time over devices.

    The weight gradient is exact, by two passes over the data
    (docs/design/behaviour.md#aggregation).

    Args:
        n_s: Number of fiducial simulations (at θ_fid) whose summaries give the covariance C and
            the mean μ each iteration. An int, at least 2, greater than n_params and greater
            than n_summaries (otherwise C or F is singular by construction).
        n_d: Number of simulations whose θ-derivatives give dμ/dθ; they are the first n_d of the
            n_s fiducial ones (same seeds). An int with 1 ≤ n_d ≤ n_s.
        n_params: Number of physical parameters p (the length of θ_fid). A positive int.
        n_summaries: Number of summaries s the network outputs; at least n_params and less than
            n_s.
        input_shape: Shape of one simulation d, without a batch axis, e.g. (10,) or (32, 32, 1):
            a tuple of positive ints.
        θ_fid: Fiducial parameter values, an array of shape (n_params,), finite and within the
            backend's floating-point range; the Fisher information is estimated there.
        model: The network, mapping one simulation of shape input_shape to summaries of shape
            (n_summaries,). Any of: an imnn.nn model (imnn.nn.serial(...) or one layer; the only
            kind the numpy and numba backends run); an (init, apply) pair with init(key,
            input_shape) -> (output_shape, params) and apply(params, d) on one unbatched
            simulation (as jax.example_libraries.stax.serial returns); a flax.linen.Module
            instance (weights from module.init); a flax.nnx.Module or equinox.Module instance
            (its current parameters are the initial weights); or imnn.nn.from_function(apply,
            params) for a plain function. Its output shape must be (n_summaries,).
        optimiser: An optax GradientTransformation (e.g. optax.adam(1e-3)), or the legacy (init,
            update, get_params) triple of jax.example_libraries.optimizers.
        key_or_state: A JAX PRNG key (jax.random.PRNGKey(seed)) that initialises the network
            weights; or, with a legacy optimiser triple, a state of that optimiser from an
            earlier fit, whose weights (get_params(state)) are the starting point.
        fiducial: Simulations at θ_fid, an array of shape (n_s,) + input_shape of finite real
            numbers.
        derivative: Seed-matched perturbed simulations, an array of shape (n_d, 2, n_params) +
            input_shape: [i, 0, a] is made at θ_fid − δθ[a]/2 along parameter a and [i, 1, a] at
            θ_fid + δθ[a]/2, both with the seed of fiducial[i].
        δθ: Full finite-difference step per parameter, an array of shape (n_params,) of non-zero
            values: ∂x/∂θ_a ≈ (x(θ_fid + δθ_a/2) − x(θ_fid − δθ_a/2)) / δθ_a.
        host: The JAX device that holds the weights and the gathered summaries and runs the
            loss, e.g. jax.devices('cpu')[0].
        devices: Non-empty list of JAX devices the simulations are summarised on (e.g.
            jax.devices()); the data are split over them in equal contiguous chunks.
        n_per_device: Number of simulations each device summarises at a time (a positive int);
            every stream's size must be a multiple of len(devices) · n_per_device.
        validation_fiducial: Optional validation simulations at θ_fid, shape (n_s,) +
            input_shape (default None); with them the validation det F decides early stopping.
        validation_derivative: Their perturbed counterparts, shape (n_d, 2, n_params) +
            input_shape, given together with validation_fiducial (default None).
        prefetch: Accepted for compatibility with earlier code and ignored: the arrays are laid
            over the devices once (default None).
        cache: Accepted for compatibility and ignored, like prefetch (default False).
        memory_budget: Keyword-only. Bytes per device that pass 1 may keep for pass 2 (the
            simulations, or everything pass 2 needs) instead of recomputing them: None (the
            backend's default, 1 GiB on JAX), 0 (recompute every batch in pass 2), or a
            positive int. What each stream kept is in ``executor.kept`` after the first
            gradient.
        backend: Keyword-only. The backend that computes the fit: "jax" (default; compiled,
            float32 unless JAX's x64 mode is on), or the float64 reference backends "numpy" and
            "numba" (imnn.nn models only).

    Raises:
        TypeError: An argument of the wrong type (the message names it), e.g. a model or
            optimiser of no accepted kind, or key_or_state that is neither a key nor a legacy
            state.
        ValueError: Inconsistent sizes or shapes (n_s ≤ n_params or ≤ n_summaries, n_d > n_s, a
            model whose output shape is not (n_summaries,), data of the wrong shape), non-finite
            data, or an unknown backend; raised before anything is computed.
    """

    def __init__(self, n_s: int, n_d: int, n_params: int, n_summaries: int,
                 input_shape: tuple[int, ...], θ_fid: Array, model: Any,
                 optimiser: optax.GradientTransformation | tuple,
                 key_or_state: Array | tuple, fiducial: Array, derivative: Array, δθ: Array,
                 host: jax.Device, devices: Sequence[jax.Device], n_per_device: int,
                 validation_fiducial: Array | None = None,
                 validation_derivative: Array | None = None, prefetch: Any = None,
                 cache: bool = False, *, backend: str = "jax",
                 memory_budget: int | None = None) -> None:
        layout, devices = aggregation(host, devices, n_per_device, memory_budget)
        super().__init__(n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                         optimiser, key_or_state, backend, devices)
        self.host, self.devices, self.n_per_device = host, devices, layout.n_per_device
        kind = finite_difference(δθ, self.n_params)
        self.δθ = np.asarray(kind.δθ)
        self._attach(ArraySource(kind, self.n_s, self.n_d, self.n_params, self.input_shape,
                                 fiducial, derivative, validation_fiducial,
                                 validation_derivative, layout, self.runtime.dtype), kind)
        self._seed_shapes(layout)
        self.memory_budget = keep_within(self, memory_budget)
