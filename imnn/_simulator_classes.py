"""The two IMNN classes fitted on fresh simulations from a simulator every
iteration: ``SimulatorIMNN`` (in memory) and ``AggregatedSimulatorIMNN``
(summarised n_per_device at a time over devices), and the check of the simulator.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import jax
import numpy as np

from ._base import BaseIMNN, aggregation, keep_within
from ._sources import Layout, SimulatorSource
from .contracts import Array, ThroughSimulator

if TYPE_CHECKING:
    import optax

# simulator(key, θ) -> d, or (d, ∂d/∂θ) on the reference backends
Simulator = Callable[[Array, Array], Any]


def simulator_kind(simulator: Simulator, θ_fid: np.ndarray, input_shape: tuple[int, ...],
                   traces: bool) -> ThroughSimulator:
    """The derivative kind of a simulator class, after checking ``simulator``: callable,
    returning floating-point simulations of shape ``input_shape`` (on a runtime that
    ``traces`` (the jax backend) one simulation, evaluated abstractly; elsewhere
    optionally the pair (d, ∂d/∂θ)). TypeError or ValueError naming ``simulator``
    otherwise."""
    if not callable(simulator):
        raise TypeError(f"simulator must be a function simulator(key, θ), got {type(simulator).__name__}")
    out = simulator(jax.random.PRNGKey(0), θ_fid) if not traces else jax.eval_shape(
        simulator, jax.random.PRNGKey(0), θ_fid)
    returns_derivative = isinstance(out, tuple)
    if returns_derivative and traces:
        raise TypeError("on the jax backend simulator(key, θ) must return one simulation "
                        "(derivatives come from forward-mode autodiff)")
    dtype = getattr(out[0] if returns_derivative else out, "dtype", None)
    if dtype is None or not np.issubdtype(np.dtype(dtype), np.floating):
        raise TypeError(f"simulator must return floating-point simulations, but "
                        f"simulator(key, θ) gives dtype {dtype}: simulations are "
                        "differentiated with respect to θ (an integer result has no "
                        "derivative); return e.g. d.astype(jnp.float32)")
    shape = tuple(np.shape(out[0] if returns_derivative else out))
    if shape != tuple(input_shape):
        raise ValueError(f"simulator returns simulations of shape {shape}, but input_shape "
                         f"is {tuple(input_shape)}")
    return ThroughSimulator(simulator, np.asarray(θ_fid), returns_derivative)


# --- the public classes -----------------------------------------------------------

class SimulatorIMNN(BaseIMNN):
    """Fits on fresh simulations from a simulator every iteration.

    Each iteration draws n_s simulations at θ_fid from new keys split from fit's rng; the
    derivatives ∂x/∂θ of the first n_d summaries come from forward-mode differentiation through
    the simulator and the network (docs/design/behaviour.md#derivatives). fit needs rng.

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
        simulator: simulator(key, θ) -> d: one simulation of shape input_shape (floating point)
            from a JAX PRNG key and parameters θ of shape (n_params,). On the jax backend it
            must be JAX-traceable and return d alone (∂d/∂θ comes from forward-mode autodiff);
            on the numpy and numba backends it may return the pair (d, ∂d/∂θ) with ∂d/∂θ of
            shape input_shape + (n_params,).
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
                 key_or_state: Array | tuple, simulator: Simulator, *,
                 backend: str = "jax") -> None:
        super().__init__(n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                         optimiser, key_or_state, backend)
        kind = simulator_kind(simulator, self.θ_fid, self.input_shape, self.runtime.traces)
        self.simulator = simulator
        self._attach(SimulatorSource(kind, self.n_s, self.n_d, self.n_params, Layout(),
                                     self.runtime), kind)


class AggregatedSimulatorIMNN(BaseIMNN):
    """SimulatorIMNN for more simulations than fit in memory at once.

    The simulations are made and summarised n_per_device at a time on every device, and the
    weight gradient is exact, by two passes over the data
    (docs/design/behaviour.md#aggregation). fit needs rng.

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
        simulator: simulator(key, θ) -> d: one simulation of shape input_shape (floating point)
            from a JAX PRNG key and parameters θ of shape (n_params,). On the jax backend it
            must be JAX-traceable and return d alone (∂d/∂θ comes from forward-mode autodiff);
            on the numpy and numba backends it may return the pair (d, ∂d/∂θ) with ∂d/∂θ of
            shape input_shape + (n_params,).
        host: The JAX device that holds the weights and the gathered summaries and runs the
            loss, e.g. jax.devices('cpu')[0].
        devices: Non-empty list of JAX devices the simulations are summarised on (e.g.
            jax.devices()); the data are split over them in equal contiguous chunks.
        n_per_device: Number of simulations each device summarises at a time (a positive int);
            every stream's size must be a multiple of len(devices) · n_per_device.
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
                 key_or_state: Array | tuple, simulator: Simulator,
                 host: jax.Device, devices: Sequence[jax.Device], n_per_device: int, *,
                 backend: str = "jax", memory_budget: int | None = None) -> None:
        layout, devices = aggregation(host, devices, n_per_device, memory_budget)
        super().__init__(n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                         optimiser, key_or_state, backend, devices)
        self.host, self.devices, self.n_per_device = host, devices, layout.n_per_device
        kind = simulator_kind(simulator, self.θ_fid, self.input_shape, self.runtime.traces)
        self.simulator = simulator
        self._attach(SimulatorSource(kind, self.n_s, self.n_d, self.n_params, layout,
                                     self.runtime), kind)
        self._seed_shapes(layout)
        self.memory_budget = keep_within(self, memory_budget)
