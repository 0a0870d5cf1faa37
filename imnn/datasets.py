"""The Dataset classes: simulations read from per-device iterators
(docs/design/behaviour.md#datasets-and-tfrecords).

Data layout, as in the seed's recipes. Each stream is a list of ``n_devices``
iterators; element j serves ``devices[j]`` and yields batches of
``n_per_device`` simulations from chunk j of the stream, the j-th of
``n_devices`` equal contiguous chunks (``array.reshape((n_devices, n_batches,
n_per_device) + ...)[j]``). Streams: ``main`` yields
``(fiducial_batch, derivative_batch)`` pairs and ``remaining`` fiducial batches
(exact derivatives); ``fiducial`` yields fiducial batches and ``derivative``
batches of the ``(n_d, 2, p) + input_shape`` array flattened in C order
(finite differences).

Each pass reads one epoch of every iterator of its streams, and every batch is
checked as it is read: ``imnn._iterator_streams`` says how the iterators are read
and what is checked, ``imnn._iterator_runtime`` how the passes run over them.
TensorFlow is never imported here: any iterator of numpy-convertible arrays works.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Sequence

import jax
import numpy as np

from ._base import BaseIMNN, aggregation, finite_difference
from ._iterator_runtime import IteratorExecutor, IteratorRuntime
from ._iterator_streams import IteratorSource, IteratorStream
from ._sources import Layout
from .contracts import Array, Exact

if TYPE_CHECKING:
    import optax

# --- the public classes -------------------------------------------------------------

def _check_local(devices):
    for j, device in enumerate(devices):
        if device.process_index != jax.process_index():
            raise ValueError(f"devices[{j}] = {device} belongs to another process: the Dataset "
                             "classes read their iterators in one process, so every device "
                             "must be local (jax.local_devices())")


class _DatasetIMNN(BaseIMNN):
    """What the two Dataset classes share: local devices and the iterator runtime."""

    def _set_up(self, n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model, optimiser,
                key_or_state, host, devices, n_per_device, backend) -> Layout:
        layout, devices = aggregation(host, devices, n_per_device)
        _check_local(devices)
        super().__init__(n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                         optimiser, key_or_state, backend, devices)
        self.host, self.devices, self.n_per_device = host, devices, layout.n_per_device
        self.runtime = IteratorRuntime(self.runtime)
        return layout


class DatasetGradientIMNN(_DatasetIMNN):
    """Simulations and their known derivatives ∂d/∂θ read from per-device iterators.

    Iterator j serves devices[j] with the j-th of len(devices) equal contiguous chunks of its
    stream, repeating and unshuffled; the summaries are computed n_per_device at a time and the
    weight gradient is exact, by two passes (docs/design/behaviour.md#aggregation,
    docs/design/behaviour.md#datasets-and-tfrecords). Every batch is checked as it is read
    (shape, dtype, finite values, epochs that repeat); a misbuilt dataset raises during the
    first iteration of fit.

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
        main: List of len(devices) iterators, one per device, each yielding pairs (fiducial
            batch (n_per_device,) + input_shape, derivative batch (n_per_device,) + input_shape
            + (n_params,)) from its device's contiguous chunk of the n_d simulations with known
            derivatives; repeating and unshuffled (e.g. dataset.repeat().as_numpy_iterator()).
        remaining: List of len(devices) iterators yielding fiducial batches (n_per_device,) +
            input_shape of the other n_s − n_d simulations, chunked the same way; unused, and
            may be None, when n_s == n_d.
        host: The JAX device that holds the weights and the gathered summaries and runs the
            loss, e.g. jax.devices('cpu')[0].
        devices: Non-empty list of JAX devices the simulations are summarised on (e.g.
            jax.devices()); the data are split over them in equal contiguous chunks. All devices
            must belong to this process (jax.local_devices()).
        n_per_device: Number of simulations each device summarises at a time (a positive int);
            every stream's size must be a multiple of len(devices) · n_per_device.
        validation_main: Optional iterators like main over a validation set (default None); with
            them the validation det F decides early stopping.
        validation_remaining: Optional iterators like remaining over the validation set (default
            None).
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
                 key_or_state: Array | tuple, main: Sequence[Iterator],
                 remaining: Sequence[Iterator] | None, host: jax.Device,
                 devices: Sequence[jax.Device], n_per_device: int,
                 validation_main: Sequence[Iterator] | None = None,
                 validation_remaining: Sequence[Iterator] | None = None, *,
                 backend: str = "jax") -> None:
        layout = self._set_up(n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                              optimiser, key_or_state, host, devices, n_per_device, backend)
        kind = Exact(self.n_params)
        self._attach(IteratorSource(
            kind, self.n_s, self.n_d, self.n_params, self.input_shape, layout,
            {"main": main, "remaining": remaining},
            {"main": validation_main, "remaining": validation_remaining},
            self.runtime.dtype), kind)
        self._seed_shapes(layout)


class DatasetNumericalGradientIMNN(_DatasetIMNN):
    """Seed-matched finite differences with simulations read from per-device iterators.

    Iterator j serves devices[j] with the j-th of len(devices) equal contiguous chunks of its
    stream, repeating and unshuffled; ∂x/∂θ comes from central differences of the perturbed
    simulations' summaries (docs/design/behaviour.md#derivatives), and the weight gradient is
    exact, by two passes (docs/design/behaviour.md#aggregation,
    docs/design/behaviour.md#datasets-and-tfrecords). Every batch is checked as it is read; a
    misbuilt dataset raises during the first iteration of fit.

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
        fiducial: List of len(devices) iterators, one per device, yielding batches
            (n_per_device,) + input_shape of its contiguous chunk of the n_s fiducial
            simulations; repeating and unshuffled.
        derivative: List of len(devices) iterators yielding batches (n_per_device,) +
            input_shape of the perturbed simulations: the (n_d, 2, n_params) + input_shape array
            (as for NumericalGradientIMNN) flattened in C order to 2 · n_params · n_d
            simulations, chunked the same way.
        δθ: Full finite-difference step per parameter, an array of shape (n_params,) of non-zero
            values: ∂x/∂θ_a ≈ (x(θ_fid + δθ_a/2) − x(θ_fid − δθ_a/2)) / δθ_a.
        host: The JAX device that holds the weights and the gathered summaries and runs the
            loss, e.g. jax.devices('cpu')[0].
        devices: Non-empty list of JAX devices the simulations are summarised on (e.g.
            jax.devices()); the data are split over them in equal contiguous chunks. All devices
            must belong to this process (jax.local_devices()).
        n_per_device: Number of simulations each device summarises at a time (a positive int);
            every stream's size must be a multiple of len(devices) · n_per_device.
        validation_fiducial: Optional iterators like fiducial over a validation set (default
            None); with them the validation det F decides early stopping.
        validation_derivative: Optional iterators like derivative over the validation set
            (default None).
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
                 key_or_state: Array | tuple, fiducial: Sequence[Iterator],
                 derivative: Sequence[Iterator], δθ: Array, host: jax.Device,
                 devices: Sequence[jax.Device], n_per_device: int,
                 validation_fiducial: Sequence[Iterator] | None = None,
                 validation_derivative: Sequence[Iterator] | None = None, *,
                 backend: str = "jax") -> None:
        layout = self._set_up(n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                              optimiser, key_or_state, host, devices, n_per_device, backend)
        kind = finite_difference(δθ, self.n_params)
        self.δθ = np.asarray(kind.δθ)
        self._attach(IteratorSource(
            kind, self.n_s, self.n_d, self.n_params, self.input_shape, layout,
            {"fiducial": fiducial, "derivative": derivative},
            {"fiducial": validation_fiducial, "derivative": validation_derivative},
            self.runtime.dtype), kind)
        self._seed_shapes(layout)


__all__ = ["DatasetGradientIMNN", "DatasetNumericalGradientIMNN", "IteratorSource",
           "IteratorStream", "IteratorExecutor", "IteratorRuntime"]
