"""Running streams over devices and compiling the fit loop.

A stream's inputs carry two leading axes, (n_batches, batch); over a mesh of
devices (``NamedSharding``, axis "sims") the batch axis is sharded, so n_batches
counts batches per device. With one batch per device the pass-1 ``jax.vjp``
(through ``shard_map`` over a mesh) keeps its residuals and pass 2 reuses them:
the cost of a plain value_and_grad, and the memory of one batch per device,
which pass 2 would hold anyway. With several, pass 1 keeps for pass 2 what a
memory budget per device allows (``JaxExecutor.keep_within``): the residuals of
all of a device's batches (which then run as one, as in memory), or only the
simulations and their θ-tangents (simulator classes), or nothing; inside
``shard_map`` each device then recomputes what was not kept one batch at a time
in pass 2 (``jax.checkpoint`` in a ``lax.map``, whose VJP accumulates the
batches' weight cotangents) before a single sum over devices.

Why one module of about 430 lines: the executor's passes and the runners that compile the
loop of iterations over them share the mesh, the batch layout and the compiler options;
splitting them would put one concern's two halves in two files.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax, tree_util
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from imnn._compilation import compiler_options
from imnn._fitting import (
    Carry,
    FitSettings,
    Problem,
    Runner,
    build_step,
    keep_going,
    run_loop,
    undo_update,
)
from imnn.contracts import Array, Exact, Kind, Network, Summaries, Weights

from . import summaries as S

AXIS = "sims"


def _flatten_batches(tree):
    return tree_util.tree_map(lambda a: a.reshape((-1,) + a.shape[2:]), tree)


def _as_batches(tree, like):
    n_batches = tree_util.tree_leaves(like)[0].shape[0]
    return tree_util.tree_map(lambda a: a.reshape((n_batches, -1) + a.shape[1:]), tree)


# One batch is called directly, not through a loop of one trip: XLA:CPU runs the
# weight gradients of convolutions inside loop bodies on a slow path
# (jax-ml/jax#12868), ~7× slower for the conv net of bench/bench_aggregation.py.
# Several batches per device need the loop: on a CPU their imnn.nn convolutions
# are then written as matrix products (network.py, ``_conv_as_product``).

def _map_batches(f, batches):
    """[f(batch) for batch in batches], stacked; one batch at a time."""
    if tree_util.tree_leaves(batches)[0].shape[0] == 1:
        return tree_util.tree_map(lambda a: a[None],
                                  f(tree_util.tree_map(lambda a: a[0], batches)))
    return lax.map(f, batches)


class JaxExecutor:
    """Pass 1 and pass 2 of a stream on JAX (see module docstring)."""

    def __init__(self, backend, network: Network, kind: Kind, mesh: Mesh | None):
        self.backend, self.network, self.kind, self.mesh = backend, network, kind, mesh
        device = jax.devices()[0] if mesh is None else mesh.devices.flat[0]
        self.platform: str = device.platform
        # The network for loop bodies: on a CPU, the form written for them where it has one.
        self.loop_network = (network._replace(apply=network.apply_in_loops)
                             if network.apply_in_loops is not None and self.platform == "cpu"
                             else network)
        # What pass 1 keeps for pass 2 (see keep_within): the budget in bytes per
        # device, the training streams' sizes, and {stream name: what it keeps}.
        self.memory_budget, self.sizes, self.kept, self._plans = DEFAULT_MEMORY_BUDGET, None, {}, {}

    def _network(self, batches):
        """The network for a loop over these batches (or a single call)."""
        n_batches = tree_util.tree_leaves(batches)[0].shape[0]
        return self.network if n_batches == 1 else self.loop_network

    def _sharded(self, local, out_specs):
        return jax.shard_map(local, mesh=self.mesh, in_specs=(P(), P(None, AXIS)),
                             out_specs=out_specs, check_vma=False)

    def summaries(self, w: Weights, inputs: Any, with_derivative: bool) -> Summaries:
        def local(w, inputs):
            network = self._network(inputs)
            return _map_batches(
                lambda batch: S.batch_summaries(network, w, self.kind, batch,
                                                with_derivative), inputs)

        if self.mesh is None:
            return _flatten_batches(local(w, inputs))
        # Gathered whole on every device: the loss needs all of them, and every
        # process (multi-host) can then read them as an ordinary array.
        return shard_batches(self.mesh, _flatten_batches(
            self._sharded(local, P(None, AXIS))(w, inputs)), P())

    # --- the aggregated gradient: what pass 1 keeps for pass 2 ----------------------

    def keep_within(self, memory_budget: int | None, sizes: dict) -> int:
        """Let pass 1 keep work for pass 2 within ``memory_budget`` bytes per
        device (None: ``DEFAULT_MEMORY_BUDGET``) for streams of these ``sizes``
        ({stream name: simulations}). Returns the budget in bytes.

        Which work each stream keeps is planned at the first gradient (it
        depends on the batch size and dtype) and recorded in ``self.kept``
        ({stream name: "everything" | "simulations" | "nothing"}), see ``_plan``.
        """
        self.memory_budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else memory_budget
        self.sizes = dict(sizes)
        self._plans = {}
        return self.memory_budget

    def summaries_and_pullback(self, w: Weights, inputs: Any, with_derivative: bool
                               ) -> tuple[Summaries, Callable[[Summaries], Weights]]:
        """Pass 1 of a stream, and pass 2 as a function of its cotangents.

        With several batches per device, what pass 2 recomputes depends on the
        plan (``keep_within``): "everything" runs the device's batches as one
        (pass 1's residuals kept, as in memory), "simulations" keeps the
        simulator's output and θ-tangents of every batch and recomputes the
        network one batch at a time, "nothing" recomputes simulation and network.
        """
        n_batches = tree_util.tree_leaves(inputs)[0].shape[0]
        keep = KEEP_ALL if n_batches == 1 else self._keeps(w, inputs, with_derivative)
        if keep == KEEP_SIMULATIONS:
            # w-independent: simulated once in pass 1, outside the VJP, and kept.
            inputs = self._map_sharded(
                lambda batch: S.simulate(self.kind, batch, with_derivative), inputs)
            kind, checkpointed = Exact(len(self.kind.θ_fid)), True
        else:
            kind, checkpointed = self.kind, keep == KEEP_NOTHING

        def local(w, inputs):
            if keep == KEEP_ALL:  # the device's batches as one batch
                one = S.batch_summaries(self.network, w, kind, _flatten_batches(inputs),
                                        with_derivative)
                return _as_batches(one, inputs)

            def summaries(w, batch):
                return S.batch_summaries(self.loop_network, w, kind, batch, with_derivative)

            if checkpointed:  # pass 2 recomputes each batch before its backward pass
                summaries = jax.checkpoint(summaries, prevent_cse=False,
                                           policy=jax.checkpoint_policies.nothing_saveable)
            return lax.map(lambda batch: summaries(w, batch), inputs)

        def pass_one(w):
            if self.mesh is None:
                return _flatten_batches(local(w, inputs))
            # Over a mesh, the transpose of shard_map sums the devices' weight cotangents.
            return shard_batches(self.mesh, _flatten_batches(
                self._sharded(local, P(None, AXIS))(w, inputs)), P())

        out, pullback = jax.vjp(pass_one, w)
        return out, lambda cotangents: pullback(cotangents)[0]

    def pullback(self, w: Weights, inputs: Any, with_derivative: bool
                 ) -> Callable[[Summaries], Weights]:
        """Pass 2 of a stream as a function of its cotangents: pass 1 is traced
        with it and its summaries dropped (the compiler removes them)."""
        return self.summaries_and_pullback(w, inputs, with_derivative)[1]

    def _map_sharded(self, f, inputs):
        """[f(batch) for batch in inputs] on the devices holding them; (n_batches, batch, ...)."""
        def local(_, inputs):
            return lax.map(f, inputs)

        if self.mesh is None:
            return local(None, inputs)
        return jax.shard_map(local, mesh=self.mesh, in_specs=(P(), P(None, AXIS)),
                             out_specs=P(None, AXIS), check_vma=False)(jnp.zeros(()), inputs)

    def _keeps(self, w, inputs, with_derivative) -> str:
        """What pass 1 keeps of this stream, from the plan."""
        if self.sizes is None:  # not told the streams (keep_within): recompute
            return KEEP_NOTHING
        leaves = tree_util.tree_leaves(inputs)
        n_per_device = leaves[0].shape[1] // self._n_devices
        plan = self._plan(w, n_per_device, self.backend.dtype)
        n = leaves[0].shape[0] * leaves[0].shape[1]
        return plan[(n, bool(with_derivative))]

    @property
    def _n_devices(self):
        return 1 if self.mesh is None else self.mesh.devices.size

    def _plan(self, w, n_per_device, dtype) -> dict:
        """Greedy, streams with θ-derivatives first: each stream keeps the most
        of pass 1 that fits what is left of the budget, per device:

        - "everything": the residuals of the device's whole stream at once
          (measured by abstract evaluation of its VJP, less what recomputing
          needs anyway: the inputs and weights), counted twice for the backward
          pass's cotangents of the whole stream;
        - "simulations" (simulator classes): the simulations and θ-tangents;
        - "nothing".

        Streams of the same size and derivative flag (finite differences with
        n_s = 2·p·n_d) share one choice: the caller cannot tell them apart.
        Records {stream name: choice} in ``self.kept``.
        """
        cached = self._plans.get((n_per_device, dtype))
        if cached is not None:
            self.kept = cached[1]
            return cached[0]
        groups = {}
        for name in sorted(self.sizes, key=lambda k: k not in self.kind.derivative_streams):
            n = self.sizes[name]
            if n:
                groups.setdefault((n, name in self.kind.derivative_streams), []).append(name)
        left, plan, kept = self.memory_budget, {}, {}
        for (n, with_derivative), names in groups.items():
            n_batches = n // (self._n_devices * n_per_device)
            keep = KEEP_ALL if n_batches == 1 else KEEP_NOTHING
            if n_batches > 1:
                inputs = self._abstract_inputs(n_batches, n_per_device, dtype, with_derivative)
                for option, cost in self._options(w, inputs, with_derivative):
                    if len(names) * cost <= left:
                        keep, left = option, left - len(names) * cost
                        break
            plan[(n, with_derivative)] = keep
            kept.update(dict.fromkeys(names, keep))
        self._plans[(n_per_device, dtype)] = (plan, kept)
        self.kept = kept
        return plan

    def _abstract_inputs(self, n_batches, n_per_device, dtype, with_derivative):
        """One device's stream inputs (n_batches, n_per_device, ...), as shapes."""
        return S.abstract_inputs(self.kind, (n_batches, n_per_device),
                                 self.network.input_shape, dtype, with_derivative)

    def _options(self, w, inputs, with_derivative):
        """(choice, bytes per device kept beyond the inputs), best first."""
        w = tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), w)

        def residuals(summaries, x):
            pullback = jax.eval_shape(lambda w, x: jax.vjp(lambda w: summaries(w, x), w)[1],
                                      w, x)
            return _nbytes(pullback)

        def one_batch(w, x):
            return S.batch_summaries(self.network, w, self.kind, x, with_derivative)

        whole = tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct((a.shape[0] * a.shape[1],) + a.shape[2:], a.dtype),
            inputs)
        recompute = jax.checkpoint(one_batch, policy=jax.checkpoint_policies.nothing_saveable)
        # Kept whole, a stream is also differentiated whole: its backward pass holds
        # cotangents of about the residuals' size while it runs, so count them twice.
        options = [(KEEP_ALL, 2 * (residuals(one_batch, whole) - residuals(recompute, whole)))]
        if self.kind.simulates:
            simulations = jax.eval_shape(
                lambda keys: S.simulate(self.kind, keys, with_derivative), whole)
            options.append((KEEP_SIMULATIONS, _nbytes(simulations)))
        return options


def _nbytes(tree) -> int:
    return sum(math.prod(a.shape) * jnp.dtype(a.dtype).itemsize
               for a in tree_util.tree_leaves(tree))


KEEP_ALL, KEEP_SIMULATIONS, KEEP_NOTHING = "everything", "simulations", "nothing"
DEFAULT_MEMORY_BUDGET = 2 ** 30  # bytes per device that pass 1 may keep for pass 2


def shard_batches(mesh: Mesh | None, tree, spec=P(None, AXIS)):
    """Lay stream inputs (n_batches, batch, ...) over the mesh's devices (or,
    with spec=P(), copy weights or gathered summaries to every device)."""
    if mesh is None:
        return tree
    sharding = NamedSharding(mesh, spec)
    return tree_util.tree_map(lambda a: lax.with_sharding_constraint(a, sharding)
                              if isinstance(a, jax.core.Tracer) else _put(a, sharding), tree)


def _put(array, sharding):
    if jax.process_count() == 1:
        return jax.device_put(array, sharding)
    # Every process holds the whole array; each contributes its addressable shards.
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


CHUNK = 128  # iterations per run: between progress updates and callbacks


def make_runner(problem: Problem, loop: str | None = None, chunk: int = CHUNK) -> Runner:
    """The compiled loop of iterations of ``problem`` (``imnn._fitting.Runner``).

    ``Runner.run(carry, data, settings, start, n_steps) -> (carry, records with a
    leading axis of the iterations run as NumPy arrays, iterations run)``, n_steps ≤
    ``chunk``. The settings (``imnn._fitting.FitSettings``), ``start`` and ``n_steps`` are
    traced, so the loop compiles once whatever the progress-bar rate, iteration budget,
    λ, ε or patience: one XLA program for every later fit of the same object
    (``Runner.programs()``).

    Args:
        problem: the static part of the fit; its executor is a ``JaxExecutor``, whose
            platform decides the compiler options and the default ``loop``.
        loop: where the iterations loop:

            - "device": the whole run is one compiled ``lax.while_loop`` that stops on
              the device when early stopping says so; the host sees one call and one
              read-back per run. Per iteration that saves a dispatch and a
              device-to-host wait, which on a GPU is most of a small problem's step
              (bench/bench_fit_step.py).
            - "host": one compiled call per iteration and a read of its keep-going flag
              (``imnn._fitting.run_loop``). XLA's CPU compiler rewrites convolutions into
              their fast forms only outside loop bodies (jax-ml/jax#12868): inside one
              the weight gradient of a convolutional network ran 7-16× slower.
            - None (default): "host" for a network with convolutions on a CPU, else
              "device".
        chunk: the most iterations one call of ``run`` may run (the size of the
            device loop's record buffers).

    Returns:
        ``Runner(run, loop, chunk, compiled)``; ``compiled`` is the jitted function (the
        whole run, or the step for "host").

    Raises:
        ValueError: ``loop`` is not "device", "host" or None.

    The programs are compiled with ``imnn._compilation.compiler_options()``
    (on a CPU: LLVM -O2, which compiles the random bits of simulator fits
    several times faster; docs/performance/compilation.md).
    """
    if loop is None:
        loop = "host" if _convolutions_on_cpu(problem) else "device"
    if loop not in ("device", "host"):
        raise ValueError(f"loop must be 'device', 'host' or None, got {loop!r}")
    build = _device_runner if loop == "device" else _host_runner
    return build(problem, problem.executor.platform, chunk)


def jit(function: Callable, platform: str | None = None) -> Callable:
    """``jax.jit`` with imnn's compiler options for ``platform`` (default: JAX's
    default backend)."""
    return jax.jit(function, compiler_options=compiler_options(platform))


def _host_records(records, n):
    # Read back once and cut on the host: slicing device arrays to a length n
    # would compile one small program per distinct n.
    return tree_util.tree_map(lambda r: np.asarray(r)[:n], jax.device_get(records))


def _host_runner(problem: Problem, platform: str, chunk: int) -> Runner:
    step = jit(build_step(problem), platform)

    def run(carry: Carry, data: dict, settings: FitSettings, start: int, n_steps: int):
        carry, records, n = run_loop(step, carry, data, settings, start, n_steps)
        if not n:
            return carry, None, n
        records = jax.device_get(records)
        return carry, tree_util.tree_map(lambda *r: np.stack(r), *records), n

    return Runner(run, "host", chunk, step)


def _typed(settings: FitSettings) -> FitSettings:
    """The settings as strongly typed arrays (int32, and the working float), so that
    the types of the first trace are those of the loop body's calls."""
    dtype = jnp.result_type(float)
    return FitSettings(jnp.asarray(settings.λ, dtype), jnp.asarray(settings.α, dtype),
                       *(jnp.asarray(a, jnp.int32) for a in settings[2:]))


def _device_runner(problem: Problem, platform: str, size: int) -> Runner:
    # Jitted on its own so that the while loop's body reuses the trace made for
    # the records' shapes (jit caches a trace per argument types): the step is
    # traced once, not twice. inline=True: its equations go straight into the loop.
    step = jax.jit(build_step(problem), inline=True)

    def chunk(carry: Carry, data: dict, settings: FitSettings, start: Array, n_steps: Array):
        # Every scalar as a strongly typed array: the types of the first trace
        # are those of the loop body's calls, so the second call hits the cache.
        settings = _typed(settings)
        start, n_steps = jnp.asarray(start, jnp.int32), jnp.asarray(n_steps, jnp.int32)
        shapes = jax.eval_shape(step, carry, start, data, settings)[1]

        def one(state):
            carry, records, k, _ = state
            carry, record, going = step(carry, start + k, data, settings)
            records = tree_util.tree_map(lambda buffer, r: buffer.at[k].set(r), records, record)
            return carry, records, k + 1, going

        records = tree_util.tree_map(lambda s: jnp.zeros((size,) + s.shape, s.dtype), shapes)
        going = keep_going(carry.stopping, start, settings.patience, settings.max_iterations)
        carry, records, n, _ = lax.while_loop(lambda state: state[3] & (state[2] < n_steps),
                                              one, (carry, records, jnp.int32(0), going))
        return carry, records, n

    compiled = jit(chunk, platform)

    def run(carry: Carry, data: dict, settings: FitSettings, start: int, n_steps: int):
        if not 0 < n_steps <= size:
            raise ValueError(f"n_steps must be in 1..{size}, got {n_steps}")
        after, records, n = compiled(carry, data, settings, start, n_steps)
        n = int(n)
        if not n:
            return after, None, n
        records = _host_records(records, n)
        if not records.finite[n - 1]:
            # The last iteration was not finite (the loop stops after such an one): its
            # update is undone by running the n - 1 iterations before it again, which
            # gives the same numbers (the same program on the same inputs). Keeping a
            # copy of the previous state in the loop instead, or a select of every leaf
            # in its body, made the loop's program a fifth larger and slower to compile
            # (docs/performance/compilation.md), for an event that should be rare.
            before = carry if n == 1 else compiled(carry, data, settings, start, n - 1)[0]
            after = undo_update(before, after)
        return after, records, n

    return Runner(run, "device", size, compiled)


def _convolutions_on_cpu(problem: Problem) -> bool:
    """Whether the fit's network convolves (lax.conv) and runs on a CPU."""
    executor = problem.executor
    if executor.platform != "cpu":
        return False
    network = executor.network
    w = network.init(jax.random.PRNGKey(0))
    d = jax.ShapeDtypeStruct(network.input_shape, executor.backend.dtype)
    return _has_convolution(jax.make_jaxpr(network.apply)(w, d).jaxpr)


def _has_convolution(jaxpr) -> bool:
    """Whether conv_general_dilated appears in jaxpr or any jaxpr nested in it."""
    def nested(param):
        if hasattr(param, "eqns"):
            yield param
        elif hasattr(param, "jaxpr") and hasattr(param.jaxpr, "eqns"):
            yield param.jaxpr
        elif isinstance(param, (tuple, list)):
            for item in param:
                yield from nested(item)

    return any(equation.primitive.name == "conv_general_dilated"
               or any(_has_convolution(inner) for param in equation.params.values()
                      for inner in nested(param))
               for equation in jaxpr.eqns)
