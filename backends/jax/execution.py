"""Running streams over devices and compiling the fit loop.

A stream's inputs carry two leading axes, (n_batches, batch). With one batch
the pass-1 ``jax.vjp`` keeps its residuals and pass 2 reuses them (the cost of
a plain value_and_grad). With several, the batch axis is sharded over a mesh
of devices (``NamedSharding``, axis "sims"); inside ``shard_map`` every device
maps over its own batches in pass 1, then recomputes them one at a time in
pass 2, accumulating one VJP per batch before a single ``psum``.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax, tree_util
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from imnn.contracts import Summaries
from imnn.fitting import fit_step, keep_going

from . import summaries as S

AXIS = "sims"


def _flatten_batches(tree):
    return tree_util.tree_map(lambda a: a.reshape((-1,) + a.shape[2:]), tree)


def _as_batches(tree, like):
    n_batches = tree_util.tree_leaves(like)[0].shape[0]
    return tree_util.tree_map(lambda a: a.reshape((n_batches, -1) + a.shape[1:]), tree)


class JaxExecutor:
    """Pass 1 and pass 2 of a stream on JAX (see module docstring)."""

    def __init__(self, backend, network, kind, mesh: Mesh | None):
        self.backend, self.network, self.kind, self.mesh = backend, network, kind, mesh

    def _sharded(self, local, out_specs):
        return jax.shard_map(local, mesh=self.mesh, in_specs=(P(), P(None, AXIS)),
                             out_specs=out_specs, check_vma=False)

    def summaries(self, w, inputs, with_derivative) -> Summaries:
        def local(w, inputs):
            return lax.map(
                lambda batch: S.batch_summaries(self.network, w, self.kind, batch,
                                                with_derivative), inputs)

        if self.mesh is None:
            return _flatten_batches(local(w, inputs))
        return _flatten_batches(self._sharded(local, P(None, AXIS))(w, inputs))

    def summaries_and_pullback(self, w, inputs, with_derivative):
        n_batches = tree_util.tree_leaves(inputs)[0].shape[0]
        if n_batches == 1 and self.mesh is None:
            one = tree_util.tree_map(lambda a: a[0], inputs)
            out, pullback = jax.vjp(
                lambda w: S.batch_summaries(self.network, w, self.kind, one, with_derivative), w)
            return out, lambda cotangents: pullback(cotangents)[0]

        def pass_two(cotangents: Summaries):
            def local(w, batched):
                inputs, cotangents = batched

                def accumulate(total, batch):
                    g = S.batch_weight_gradient(self.network, w, self.kind, batch[0],
                                                with_derivative, batch[1])
                    return tree_util.tree_map(jnp.add, total, g), None

                total, _ = lax.scan(accumulate, tree_util.tree_map(jnp.zeros_like, w),
                                    (inputs, cotangents))
                return total if self.mesh is None else lax.psum(total, AXIS)

            batched = (inputs, _as_batches(cotangents, inputs))
            if self.mesh is None:
                return local(w, batched)
            return self._sharded(local, P())(w, batched)

        return self.summaries(w, inputs, with_derivative), pass_two


def shard_batches(mesh: Mesh | None, tree, spec=P(None, AXIS)):
    """Lay stream inputs (n_batches, batch, ...) over the mesh's devices (or,
    with spec=P(), copy weights to every device)."""
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


CHUNK = 128


def make_runner(problem):
    """A compiled function running up to CHUNK iterations of ``fit_step``.

    run(carry, data, λ, α, min_iterations, patience, max_iterations, start, n_steps)
      -> (carry, records with a leading axis of CHUNK, iterations run)
    The loop bounds are traced values, so the step compiles once whatever the
    progress-bar rate or iteration budget.
    """
    @jax.jit
    def run(carry, data, λ, α, min_iterations, patience, max_iterations, start, n_steps):
        step = partial(fit_step, problem)
        record_shape = jax.eval_shape(
            lambda: step(carry, start, data, λ, α, min_iterations)[1])
        buffers = tree_util.tree_map(lambda s: jnp.zeros((CHUNK,) + s.shape, s.dtype),
                                     record_shape)

        def cond(state):
            carry, i, _ = state
            return keep_going(carry.stopping, i, patience, max_iterations) & (i < start + n_steps)

        def body(state):
            carry, i, buffers = state
            carry, record = step(carry, i, data, λ, α, min_iterations)
            buffers = tree_util.tree_map(lambda b, v: b.at[i - start].set(v), buffers, record)
            return carry, i + 1, buffers

        carry, i, buffers = lax.while_loop(cond, body, (carry, start, buffers))
        return carry, buffers, i - start

    return run
