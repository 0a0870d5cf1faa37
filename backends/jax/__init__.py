"""The JAX backend: jitted fitting, two-pass aggregated gradients sharded over
devices (and hosts), float32 by default and float64 when x64 is enabled."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

from imnn._fitting import Problem, Runner
from imnn.contracts import Array, Kind, Network

from . import statistics, summaries
from .execution import CHUNK, JaxExecutor, jit, make_runner, shard_batches
from .network import network as _network


class JaxBackend:
    """Fulfils imnn.contracts.Backend on JAX. ``devices``: the devices to shard
    simulations over (None: one device, no sharding)."""

    name = "jax"
    chunk = CHUNK
    traces = True  # simulators and networks are traced by JAX
    loss = staticmethod(statistics.loss)
    loss_and_cotangents = staticmethod(statistics.loss_and_cotangents)
    batch_summaries = staticmethod(summaries.batch_summaries)
    batch_weight_gradient = staticmethod(summaries.batch_weight_gradient)
    assemble = staticmethod(summaries.assemble)
    assemble_transpose = staticmethod(summaries.assemble_transpose)
    where = staticmethod(jnp.where)

    def __init__(self, devices: Sequence | None = None):
        self.mesh: Mesh | None = (None if devices is None
                                  else Mesh(np.asarray(devices), ("sims",)))
        self._fisher_statistics = None

    @property
    def platform(self) -> str:
        """The platform ("cpu", "gpu", ...) of the devices this backend runs on."""
        return (jax.default_backend() if self.mesh is None
                else self.mesh.devices.flat[0].platform)

    def fisher_statistics(self, x: Array, dx_dθ: Array) -> statistics.FisherStatistics:
        """``statistics.fisher_statistics`` as one compiled program (run op by op
        it would compile each of its dozen operations on first use); inside a
        compiled function, the plain function (compiler options go on the outer one)."""
        if isinstance(x, jax.core.Tracer):
            return statistics.fisher_statistics(x, dx_dθ)
        if self._fisher_statistics is None:
            self._fisher_statistics = self.compile(statistics.fisher_statistics)
        return self._fisher_statistics(x, dx_dθ)

    @property
    def dtype(self) -> Any:
        return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32

    def asarray(self, array: Array) -> jax.Array:
        # Cast on the host and transfer: jnp.asarray of a NumPy array (or a cast
        # of a device array) compiles a small program per shape and dtype.
        array = np.asarray(array)
        if np.issubdtype(array.dtype, np.floating):
            array = array.astype(self.dtype, copy=False)
        return jax.device_put(array)

    def network(self, model: Any, input_shape: tuple) -> Network:
        return _network(model, input_shape, self.dtype)

    def replicate(self, tree: Any) -> Any:
        """Put weights (or anything every device needs whole) on every device."""
        return shard_batches(self.mesh, jax.tree_util.tree_map(self.asarray, tree), P())

    def executor(self, network: Network, kind: Kind) -> JaxExecutor:
        return JaxExecutor(self, network, kind, self.mesh)

    def make_runner(self, problem: Problem, loop: str | None = None) -> Runner:
        """The compiled loop of iterations of ``problem``, running up to ``chunk``
        iterations a call (``execution.make_runner``; ``loop``: "device", "host", or
        None to choose)."""
        return make_runner(problem, loop, self.chunk)

    def place(self, tree: Any) -> Any:
        """Put stream inputs (n_batches, batch, ...) on the devices. Over a mesh
        each device's slice goes straight from host memory to that device, so
        no device ever holds a whole stream."""
        def host_or_device(a):
            if isinstance(a, jax.core.Tracer):
                return a
            if self.mesh is None:
                return self.asarray(a)
            a = np.asarray(a)
            return a.astype(self.dtype) if np.issubdtype(a.dtype, np.floating) else a

        return shard_batches(self.mesh, jax.tree_util.tree_map(host_or_device, tree))

    def compile(self, function: Callable) -> Callable:
        """``jax.jit`` with imnn's compiler options for this backend's platform."""
        return jit(function, self.platform)


__all__ = ["JaxBackend"]
