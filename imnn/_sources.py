"""Where simulations come from: a simulator, arrays in memory (and, for the
Dataset classes, iterators). A source lays its streams out in batches of
``(n_batches, batch)`` for a backend and checks shapes once, at construction.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._types import Key
from .contracts import Array, Exact, FiniteDifference, Streams, ThroughSimulator, stream_sizes


class Layout(NamedTuple):
    """How streams are cut into batches.

    batch=None: one batch per stream (the in-memory classes). Otherwise every
    batch holds ``batch = n_devices · n_per_device`` simulations, spread over
    the devices.
    """
    batch: int | None = None
    n_devices: int = 1
    n_per_device: int | None = None

    def n_batches(self, name: str, n: int, quantity: str) -> int:
        if self.batch is None or n == 0:
            return 1
        if n % self.batch:
            raise ValueError(
                f"{quantity} = {n} cannot be split evenly over {self.n_devices} device(s) with "
                f"n_per_device = {self.n_per_device}: it must be a multiple of "
                f"{self.n_devices} × {self.n_per_device} = {self.batch} (stream '{name}')")
        return n // self.batch

    def batched(self, name: str, tree, quantity: str):
        """Reshape every leaf from (n, ...) to (n_batches, batch, ...)."""
        n = jax.tree_util.tree_leaves(tree)[0].shape[0]
        n_batches = self.n_batches(name, n, quantity)
        return jax.tree_util.tree_map(
            lambda a: a.reshape((n_batches, n // n_batches) + a.shape[1:]), tree)


# {stream name: how messages name its size}, over every kind's streams
QUANTITY = {**Exact.quantities, **FiniteDifference.quantities, **ThroughSimulator.quantities}


def range_limit(dtype) -> float:
    """The largest magnitude a simulation may have in working precision ``dtype``:
    √(largest finite number), so that a product of two values (a network layer's
    terms, the squares forming the covariance) stays finite."""
    return float(np.sqrt(np.finfo(dtype).max))


def out_of_range(array, dtype) -> str | None:
    """None if every value of ``array`` is within ``range_limit(dtype)``, else
    what is wrong, in words."""
    array = np.asarray(array)
    if array.size == 0:
        return None
    largest = float(np.max(np.abs(array)))
    limit = range_limit(dtype)
    if largest <= limit:
        return None
    name = np.dtype(dtype).name
    return (f"holds values up to {largest:.3g} in magnitude, beyond {limit:.3g} = √(largest "
            f"{name}): the network's products and the covariance of its outputs would overflow "
            f"in {name}. Rescale the simulations (e.g. divide by their standard deviation)"
            + ("" if name == "float64" else
               ", or work in float64 (jax.config.update('jax_enable_x64', True))"))


def check_array(name: str, array, shape: tuple, allow_none=False, floating=False,
                dtype=None):
    """A finite real array of exactly ``shape``, as numpy.

    floating: simulations must be floating point (they are differentiated);
        otherwise integers are accepted too (parameter values).
    dtype: the working precision; values beyond ``range_limit(dtype)`` are refused.
    """
    if array is None:
        if allow_none:
            return None
        raise ValueError(f"{name} must be given: an array of shape {shape}")
    if not hasattr(array, "shape") and not isinstance(array, (list, tuple)):
        raise TypeError(f"{name} must be an array of shape {shape}, got {type(array).__name__}")
    try:
        array = np.asarray(array)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{name} must be an array of shape {shape}; it could not be read as "
                         f"one: {error}") from None
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if floating and not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"{name} must hold floating-point simulations, got dtype {array.dtype} "
                        f"(the network is differentiated with respect to them): pass "
                        f"{name}.astype(np.float32)")
    if array.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {array.shape}")
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")
    if dtype is not None:
        problem = out_of_range(array, dtype)
        if problem:
            raise ValueError(f"{name} {problem}")
    return array


class StoredStreams:
    """Streams held per data set (``data["train"]``, ``data["validation"]``),
    each paired with whether it carries θ-derivatives. Subclasses set ``kind``
    and ``validate``."""

    def training_streams(self, data: dict[str, Any], i: Array) -> Streams:
        """The training streams of iteration ``i`` (the same every iteration).

        Args:
            data: ``{"train": streams, "validation": streams}``, as ``data`` gives.
            i: the iteration (unused: stored simulations do not change).

        Returns:
            {stream name: (inputs, whether it carries θ-derivatives)}.
        """
        return self._with_flags(data["train"])

    def validation_streams(self, data: dict[str, Any]) -> Streams:
        """The validation streams.

        Args:
            data: as for ``training_streams``.

        Returns:
            {stream name: (inputs, whether it carries θ-derivatives)}.
        """
        return self._with_flags(data["validation"])

    def statistics_streams(self, data: dict[str, Any], key: Key | None = None,
                           validate: bool = False) -> Streams:
        """The streams the Fisher statistics are measured on.

        Args:
            data: as for ``training_streams``.
            key: unused (stored simulations need no key).
            validate: the validation set if True, else the training set.

        Returns:
            {stream name: (inputs, whether it carries θ-derivatives)}.
        """
        return self._with_flags(data["validation" if validate else "train"])

    def _with_flags(self, streams):
        return {name: (inputs, name in self.kind.derivative_streams)
                for name, inputs in streams.items()}


class ArraySource(StoredStreams):
    """Simulations held as arrays (Gradient and NumericalGradient classes).

    Exact derivatives: ``derivative`` (n_d,)+input_shape+(p,) belongs to the
    first n_d fiducial simulations. Finite differences: ``derivative``
    (n_d, 2, p)+input_shape, seed-matched (docs/design/behaviour.md#derivatives).
    """

    def __init__(self, kind: Exact | FiniteDifference, n_s: int, n_d: int, n_params: int,
                 input_shape: tuple, fiducial: Array, derivative: Array,
                 validation_fiducial: Array | None, validation_derivative: Array | None,
                 layout: Layout, dtype=None):
        self.kind, self.layout = kind, layout
        self.sizes = stream_sizes(kind, n_s, n_d, n_params)
        shapes = kind.stored_shapes(n_s, n_d, tuple(input_shape))

        def check(name, array, shape):
            return check_array(name, array, shape, floating=True, dtype=dtype)

        train = (check("fiducial", fiducial, shapes[0]),
                 check("derivative", derivative, shapes[1]))
        if (validation_fiducial is None) != (validation_derivative is None):
            missing = "validation_derivative" if validation_derivative is None else "validation_fiducial"
            raise ValueError(f"{missing} must be given too: validation needs both "
                             "validation_fiducial and validation_derivative")
        self.validate = validation_fiducial is not None
        validation = (check("validation_fiducial", validation_fiducial, shapes[0]),
                      check("validation_derivative", validation_derivative, shapes[1])
                      ) if self.validate else None
        self.arrays = {"train": self._streams(*train)}
        if self.validate:
            self.arrays["validation"] = self._streams(*validation)

    def _streams(self, fiducial, derivative):
        streams = self.kind.stored_streams(fiducial, derivative)
        return {name: self.layout.batched(name, value, self.kind.quantities[name])
                for name, value in streams.items() if self.sizes[name]}

    def data(self, runtime, rng=None):
        return runtime.place(self.arrays)



def simulation_keys(rng, i, n):
    """Keys of the n simulations of iteration i: a function of the global
    simulation index only, so results do not depend on devices or batching."""
    key = jax.random.fold_in(rng, i)
    return jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(n))


def as_raw_key(rng, name="rng"):
    """A raw uint32 (2,) PRNG key from a raw or typed JAX key."""
    if rng is None:
        raise ValueError(f"{name} must be a JAX PRNG key (jax.random.PRNGKey(seed)) for a "
                         "simulator-based fit: fresh simulations are drawn from it")
    dtype = getattr(rng, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        rng = jax.random.key_data(rng)
    try:
        rng = np.asarray(rng)
    except (ValueError, TypeError):
        raise TypeError(f"{name} must be a JAX PRNG key such as jax.random.PRNGKey(0), got "
                        f"{type(rng).__name__}") from None
    if rng.shape != (2,) or rng.dtype != np.uint32:
        raise TypeError(f"{name} must be a JAX PRNG key such as jax.random.PRNGKey(0), got an "
                        f"array of shape {rng.shape} and dtype {rng.dtype}")
    return rng


class SimulatorSource:
    """Fresh simulations every iteration from ``simulator(key, θ)``."""

    validate = False
    validation_streams = None

    def __init__(self, kind: ThroughSimulator, n_s: int, n_d: int, n_params: int,
                 layout: Layout, runtime):
        self.kind, self.layout, self.n_s, self.n_d = kind, layout, n_s, n_d
        self.runtime = runtime
        self.sizes = stream_sizes(kind, n_s, n_d, n_params)
        for name, n in self.sizes.items():
            layout.n_batches(name, n, kind.quantities[name])

    def data(self, runtime, rng):
        return {"rng": as_raw_key(rng)}

    def _streams(self, keys):
        streams = self.kind.key_streams(keys, self.n_d)
        return {name: (self.runtime.place(self.layout.batched(name, value,
                                                              self.kind.quantities[name])),
                       name in self.kind.derivative_streams)
                for name, value in streams.items() if self.sizes[name]}

    def training_streams(self, data, i):
        return self._streams(simulation_keys(data["rng"], i, self.n_s))

    def statistics_streams(self, data, key, validate=False):
        """Fresh simulations from ``key`` (simulator classes have no stored
        validation set: ``validate`` changes nothing)."""
        return self._streams(simulation_keys(key, 0, self.n_s))


__all__ = ["Layout", "ArraySource", "SimulatorSource", "simulation_keys", "check_array",
           "range_limit", "out_of_range"]
