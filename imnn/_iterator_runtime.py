"""Running the passes of the Dataset classes over their iterators: the
``IteratorExecutor`` (pass 1 and pass 2, one global batch at a time) and the
``IteratorRuntime`` that adapts a backend runtime to a fit loop in Python.

Execution. The fit loop runs in Python (``imnn._fitting.run_loop``): iterators
are read on the host. Each step of a pass pulls one batch from every device's
iterator, lays them side by side as one global batch sharded over the devices
(device j's batch goes straight to ``devices[j]``), and calls the backend's
compiled ``batch_summaries`` (pass 1) or ``batch_weight_gradient`` (pass 2).
Pass-1 outputs are put back in the data's order, chunk by chunk, so the
summaries are exactly those of the Aggregated classes on the same arrays, and
the finite-difference assembly finds each seed's ``2p`` perturbed simulations
where the C order of ``(n_d, 2, p)`` puts them; pass 2 hands each batch its
cotangents by the transposed permutation. The loss, its cotangents, the
assembly and the optimiser update are compiled once.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import tree_util
from jax.sharding import NamedSharding, PartitionSpec

from ._iterator_streams import IteratorStream
from ._runtime import python_runner
from ._types import Weights
from .contracts import Kind, Network, Optimiser, Runtime, Summaries

if TYPE_CHECKING:  # imnn._fitting imports imnn.contracts
    from ._fitting import Problem, Runner

# --- running passes over the iterators ----------------------------------------------

class IteratorExecutor:
    """Pass 1 and pass 2 of streams read from iterators, one global batch at a
    time (see the module docstring). ``backend`` serves ``imnn._fitting`` the
    small per-iteration steps, compiled.

    Args:
        runtime: the backend runtime whose compiled per-batch passes run each batch.
        network: the network.
        kind: the derivative kind.
    """

    def __init__(self, runtime: Runtime, network: Network, kind: Kind) -> None:
        self.network, self.kind = network, kind
        self.backend = _CompiledSteps(runtime, kind)
        compile = runtime.compile
        self._jax = runtime.traces
        mesh = runtime.mesh
        if mesh is not None:
            self._devices = list(mesh.devices.flat)
            self._sharding = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
        self._mesh, self._dtype = mesh, np.dtype(runtime.dtype)
        self._asarray = runtime.asarray

        def summaries(flag):
            return compile(lambda w, inputs: runtime.batch_summaries(
                network, w, kind, inputs, flag))

        def accumulate(flag):
            def add_batch(total, w, inputs, cotangents: Summaries, b):
                ct = tree_util.tree_map(lambda a: a[b], cotangents)   # batch b's slice
                g = runtime.batch_weight_gradient(network, w, kind, inputs, flag, ct)
                return tree_util.tree_map(lambda t, u: t + u, total, g)
            return compile(add_batch)

        self._summaries = {flag: summaries(flag) for flag in (False, True)}
        self._accumulate = {flag: accumulate(flag) for flag in (False, True)}
        self._compile, self._reorders = compile, {}

    def summaries(self, w: Weights, stream: IteratorStream, with_derivative: bool
                  ) -> Summaries:
        """Pass 1 of a stream, read until its first epoch is confirmed.

        Args:
            w: the network weights.
            stream: the stream.
            with_derivative: whether the stream carries θ-derivatives.

        Returns:
            Summaries ``x`` (n, s) and, with derivatives, ``dx_dθ`` (n, s, p), in
            the data's order.
        """
        outputs = self._pass_one(w, stream, with_derivative)
        stream.settle()
        return outputs

    def summaries_and_pullback(self, w: Weights, stream: IteratorStream, with_derivative: bool
                               ) -> tuple[Summaries, Callable[[Summaries], Weights]]:
        """Pass 1 of a stream, and pass 2 as a function of its cotangents.

        Args:
            w: the network weights.
            stream: the stream.
            with_derivative: whether the stream carries θ-derivatives.

        Returns:
            (summaries, pullback), as ``summaries`` and ``pullback`` give them.
        """
        return (self._pass_one(w, stream, with_derivative),
                self.pullback(w, stream, with_derivative))

    def pullback(self, w: Weights, stream: IteratorStream, with_derivative: bool
                 ) -> Callable[[Summaries], Weights]:
        """Pass 2 of a stream (no pass 1 is run).

        Args:
            w: the network weights.
            stream: the stream.
            with_derivative: whether the stream carries θ-derivatives.

        Returns:
            ``pullback(cotangents)``: cotangents (n, …) in the data's order -> Σ over
            the epoch's batches of their VJPs, a pytree like ``w`` (reads one epoch
            when called).
        """
        def pullback(cotangents: Summaries):
            total, per_batch = self._batch_order(stream.n_devices, stream.n_batches)(
                w, cotangents)
            for b, batch in enumerate(stream.epoch()):
                total = self._accumulate[with_derivative](total, w, self._place(batch),
                                                          per_batch, b)
            return total

        return pullback

    def keep_within(self, memory_budget: int | None, sizes: dict[str, int]) -> int | None:
        """Nothing is kept between the passes (pass 2 reads the iterators again).

        Args:
            memory_budget: bytes per device, or None.
            sizes: {stream name: simulations} (unused).

        Returns:
            ``memory_budget`` unchanged.
        """
        return memory_budget

    def _pass_one(self, w, stream, with_derivative) -> Summaries:
        outputs = [self._summaries[with_derivative](w, self._place(batch))
                   for batch in stream.epoch()]
        return self._data_order(stream.n_devices)(outputs)

    def _place(self, per_device):
        """Per-device batches -> one global batch, device-major, on the devices."""
        if isinstance(per_device[0], tuple):
            return tuple(self._place([batch[c] for batch in per_device])
                         for c in range(len(per_device[0])))
        if self._mesh is None:
            return self._asarray(np.concatenate(per_device))
        shards = [jax.device_put(_as_dtype(batch, self._dtype), device)
                  for batch, device in zip(per_device, self._devices)]
        shape = (sum(s.shape[0] for s in shards),) + shards[0].shape[1:]
        return jax.make_array_from_single_device_arrays(shape, self._sharding, shards)

    def _data_order(self, n_devices):
        """Batch outputs [b] (n_devices · n_per_device, …) -> (n, …) in the data's
        order: device j's chunk j, its batches in turn."""
        key = ("data", n_devices)
        if key not in self._reorders:
            xp = jnp if self._jax else np

            def order(parts):
                a = xp.stack(parts)                                      # (N, D·P, …)
                n, rest = a.shape[0], a.shape[2:]
                a = a.reshape((n, n_devices, -1) + rest).swapaxes(0, 1)  # (D, N, P, …)
                return a.reshape((-1,) + rest)

            self._reorders[key] = self._compile(lambda outputs: Summaries(
                order([o.x for o in outputs]),
                None if outputs[0].dx_dθ is None else order([o.dx_dθ for o in outputs])))
        return self._reorders[key]

    def _batch_order(self, n_devices, n_batches):
        """(w, cotangents (n, …)) -> (a zero weight gradient, cotangents (N, D·P, …)
        with batch b's at [b]): the transpose of ``_data_order``."""
        key = ("batch", n_devices, n_batches)
        if key not in self._reorders:
            xp = jnp if self._jax else np

            def order(a):
                rest = a.shape[1:]
                a = a.reshape((n_devices, n_batches, -1) + rest).swapaxes(0, 1)
                return a.reshape((n_batches, -1) + rest)

            self._reorders[key] = self._compile(lambda w, ct: (
                tree_util.tree_map(xp.zeros_like, w),
                Summaries(order(ct.x), None if ct.dx_dθ is None else order(ct.dx_dθ))))
        return self._reorders[key]


def _as_dtype(batch, dtype):
    return batch.astype(dtype, copy=False) if batch.dtype != dtype else batch


class _CompiledSteps:
    """What ``imnn._fitting`` asks of ``executor.backend`` between the passes
    (assembly, loss, cotangents), compiled once for the executor's kind."""

    def __init__(self, runtime, kind):
        self._runtime, self._kind = runtime, kind
        self.loss = runtime.compile(runtime.loss)
        self.loss_and_cotangents = runtime.compile(runtime.loss_and_cotangents)
        self._assemble = runtime.compile(lambda outputs: runtime.assemble(kind, outputs))
        self._transposes = {}

    def assemble(self, kind, outputs):
        return self._assemble(outputs)

    def assemble_transpose(self, kind, cotangents, sizes):
        key = tuple(sorted(sizes.items()))
        if key not in self._transposes:
            self._transposes[key] = self._runtime.compile(
                lambda ct: self._runtime.assemble_transpose(self._kind, ct, dict(key)))
        return self._transposes[key](cotangents)


class IteratorRuntime:
    """A backend runtime adapted to fits fed by iterators: iterators are read on
    the host, so the fit loop runs in Python (``imnn._fitting.run_loop``) and the
    whole-pass compilation ``BaseIMNN`` asks for is declined; the executor compiles
    the per-batch passes and the small steps instead. Everything else is the
    wrapped runtime's.

    Args:
        runtime: the backend runtime to adapt.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.chunk, self.where = runtime.chunk, runtime.where
        self.mesh, self.traces = runtime.mesh, runtime.traces
        self.asarray, self.place, self.replicate = runtime.asarray, runtime.place, runtime.replicate
        self.network = runtime.network
        self.batch_summaries = runtime.batch_summaries
        self.batch_weight_gradient = runtime.batch_weight_gradient
        self.assemble = runtime.assemble
        self.assemble_transpose = runtime.assemble_transpose
        self.fisher_statistics = runtime.fisher_statistics
        self.loss = runtime.loss
        self.loss_and_cotangents = runtime.loss_and_cotangents

    @property
    def name(self) -> str:
        """The wrapped runtime's name ("jax", "numpy" or "numba")."""
        return self.runtime.name

    @property
    def dtype(self) -> Any:
        """The wrapped runtime's working precision."""
        return self.runtime.dtype

    def executor(self, network: Network, kind: Kind) -> IteratorExecutor:
        """The executor reading streams from iterators.

        Args:
            network: the network.
            kind: the derivative kind.

        Returns:
            An ``IteratorExecutor`` on the wrapped runtime.
        """
        return IteratorExecutor(self.runtime, network, kind)

    def compile(self, function: Callable) -> Callable:
        """Declined: ``function`` unchanged (the fit loop runs in Python).

        Args:
            function: the function a class asks to compile.

        Returns:
            ``function``.
        """
        return function

    def make_runner(self, problem: Problem) -> Runner:
        """The fit loop in Python, with the optimiser update and ``where`` compiled.

        Args:
            problem: an ``imnn._fitting.Problem``.

        Returns:
            An ``imnn._fitting.Runner`` (``python_runner``).
        """
        compile, optimiser = self.runtime.compile, problem.optimiser
        return python_runner(problem._replace(
            optimiser=Optimiser(optimiser.init, compile(optimiser.update)),
            where=compile(problem.where)), self.chunk)
