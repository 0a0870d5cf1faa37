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

Reading. Iterators repeat and are unshuffled; one *epoch* is the
``n_batches = n / (n_devices · n_per_device)`` batches of a device's chunk.
Every pass reads exactly one epoch of every iterator of its streams, so a fit
iteration reads each training iterator twice (pass 1: summaries; pass 2: one
vector-Jacobian product per batch) and each validation iterator once. A pass
that was abandoned half-way (an error, Ctrl-C) is finished by the next one
before it starts, so the streams stay aligned with their epochs.

Execution. The fit loop runs in Python (``imnn.fitting.run_loop``): iterators
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

Checks (the seed warned that a misbuilt dataset "will either fail or provide
the wrong result"; here it fails, with the argument and device named):

- at construction: each argument is a list of ``n_devices`` iterators, no
  iterator object used twice, and the numbers of simulations split evenly;
- every batch: its structure (pair or single array), shape and dtype (floating
  point, the same for every batch of a stream), and that the iterator has not
  ended; a TensorFlow reading error (a damaged TFRecords file) names the stream,
  the device and the file;
- the first epoch: finite values within the working precision's range (see
  ``imnn.sources.out_of_range``), and no batch equal to another one of the same
  data set (a device reading another device's chunk, e.g. a stale ``skip``
  index, or an epoch shorter than ``n_batches``); batches whose simulations are
  all equal (∂d/∂θ that does not depend on the noise) are exempt;
- the second epoch: each batch equals its first-epoch counterpart (an epoch
  longer than ``n_batches``, or shuffling).

Training streams are verified by pass 1 and pass 2 of the first iteration;
validation streams, read once per iteration, are read a second time the
first time they are used. So every check has run by the end of the first
iteration. A stream that failed a check refuses to be read again (its
iterators are no longer aligned with their epochs): rebuild its iterators.
TensorFlow is never imported here: any iterator of numpy-convertible arrays works.
"""
from __future__ import annotations

import hashlib

import jax
import jax.numpy as jnp
import numpy as np
from jax import tree_util
from jax.sharding import NamedSharding, PartitionSpec

from .classes import _IMNN, _aggregation, _finite_difference
from .contracts import Exact, Optimiser, Summaries, stream_sizes
from .runtime import python_runner
from .sources import QUANTITY, Layout, StoredStreams, out_of_range

# --- one stream, with its checks ------------------------------------------------

class IteratorStream:
    """One stream read from per-device iterators, checked as it is read.

    argument: the constructor argument it came from (named in every error)
    iterators: one per device
    n_batches: batches per device per epoch
    shapes: the shape of each component of a batch, one for simulations, two for
        (simulations, ∂d/∂θ) pairs
    seen: first-epoch fingerprints of the streams of one data set, shared between
        them so that no batch may equal another one anywhere in the data set
    dtype: the working precision, whose range the first epoch's values must fit
    """

    def __init__(self, argument: str, iterators: list, n_batches: int, shapes: tuple,
                 seen: dict, dtype=np.float32):
        self.argument, self.iterators, self.n_batches = argument, iterators, n_batches
        self.shapes, self.seen, self.dtype = shapes, seen, np.dtype(dtype)
        self.n_devices = len(iterators)
        self.read = [0] * self.n_devices     # batches read from each device's iterator
        self.dtypes = [None] * len(shapes)
        self.first_epoch = {}                # (device, batch) -> fingerprints, until confirmed
        self.error = None

    def epoch(self):
        """Yield one epoch: ``n_batches`` lists of per-device batches."""
        for j in range(self.n_devices):      # finish any abandoned pass first
            while self.read[j] % self.n_batches:
                self._next(j)
        for _ in range(self.n_batches):
            yield [self._next(j) for j in range(self.n_devices)]

    def settle(self):
        """Read until the second epoch has confirmed the first (validation streams
        are otherwise read once per iteration)."""
        while min(self.read) < 2 * self.n_batches:
            for _ in self.epoch():
                pass

    def _next(self, j):
        if self.error is not None:
            raise ValueError(f"{self.argument} cannot be read after an earlier error (its "
                             f"iterators no longer line up with their epochs): {self.error} "
                             "Rebuild its iterators.")
        epoch, b = divmod(self.read[j], self.n_batches)
        where = (f"{self.argument}[{j}] (the iterator of device {j}), batch {b} of its "
                 f"{self.n_batches} per epoch")
        try:
            batch = next(self.iterators[j])
        except StopIteration:
            self._fail(f"{where}: the iterator ended after {self.read[j]} batch(es). It must "
                       f"repeat (end the dataset with .repeat()) and serve {self.n_batches} "
                       "batch(es) of n_per_device simulations per epoch; an empty dataset "
                       "(e.g. skipping past the end of the data) ends at once.")
        except Exception as error:  # noqa: BLE001 - a reading error of the user's data
            if not _is_tensorflow_error(error):
                raise
            from .tfrecords import describe_damage
            self._fail(f"{where}: reading failed: {describe_damage(self.iterators[j], error)}",
                       cause=error)
        arrays = self._checked(batch, where)
        if epoch < 2:
            self._verify(arrays, j, b, epoch, where)
        self.read[j] += 1
        return arrays if len(arrays) > 1 else arrays[0]

    def _checked(self, batch, where) -> tuple:
        if len(self.shapes) == 2:
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                self._fail(f"{where}: expected a (fiducial_batch, derivative_batch) pair, got "
                           f"{_describe(batch)}. Zip the two datasets, e.g. "
                           "tf.data.Dataset.zip((fiducial, derivative)).", TypeError)
            parts = tuple(batch)
        elif isinstance(batch, (tuple, list)):
            self._fail(f"{where}: expected one array of simulations, got {_describe(batch)}",
                       TypeError)
        else:
            parts = (batch,)
        arrays = []
        for c, (part, shape) in enumerate(zip(parts, self.shapes)):
            what = ("" if len(parts) == 1 else
                    (" (fiducial_batch)", " (derivative_batch)")[c])
            try:
                array = np.asarray(part)
            except Exception as error:  # noqa: BLE001 - report what the iterator gave
                self._fail(f"{where}{what}: not an array ({type(part).__name__}: {error})",
                           TypeError)
            if array.dtype.kind not in "fiu":
                self._fail(f"{where}{what}: expected real numbers, got dtype {array.dtype}",
                           TypeError)
            if array.dtype.kind != "f":
                self._fail(f"{where}{what}: expected floating-point simulations, got dtype "
                           f"{array.dtype} (the network is differentiated with respect to "
                           "them): cast the dataset, e.g. .map(lambda x: tf.cast(x, "
                           "tf.float32))", TypeError)
            if self.dtypes[c] is None:
                self.dtypes[c] = array.dtype
            elif array.dtype != self.dtypes[c]:
                self._fail(f"{where}{what}: dtype {array.dtype}, but earlier batches of "
                           f"{self.argument} had dtype {self.dtypes[c]}", TypeError)
            if array.shape != shape:
                hint = (" Batch the dataset with .batch(n_per_device) after .take()ing a whole "
                        "number of batches." if array.shape[1:] == shape[1:] else "")
                expected = "input_shape" if c == 0 else "input_shape + (n_params,)"
                self._fail(f"{where}{what}: shape {array.shape}, expected {shape} = "
                           f"(n_per_device,) + {expected}.{hint}")
            arrays.append(array)
        return tuple(arrays)

    def _verify(self, arrays, j, b, epoch, where):
        prints = tuple(_fingerprint(a) for a in arrays)
        if epoch == 1:
            if self.first_epoch.pop((j, b)) != prints:
                self._fail(f"{where}: the second epoch does not repeat the first. Iterators "
                           "must repeat without shuffling, and an epoch must be exactly "
                           f"{self.n_batches} batch(es) of device {j}'s chunk (this one is "
                           "longer, or shuffled).")
            return
        if not all(np.isfinite(a).all() for a in arrays):
            self._fail(f"{where}: contains non-finite values (NaN or inf)")
        for a in arrays:
            problem = out_of_range(a, self.dtype)
            if problem:
                self._fail(f"{where}: {problem}")
        for c, (array, print_) in enumerate(zip(arrays, prints)):
            if (array == array[:1]).all():
                continue   # e.g. ∂d/∂θ that does not depend on the noise: equal batches are right
            other = self.seen.setdefault((c, print_), (self.argument, j, b))
            if other != (self.argument, j, b):
                self._fail(f"{where} is identical to {_identical(other, self.argument, j)}. "
                           "Each device's iterator must serve its own contiguous chunk of the "
                           "data (device j: simulations j·n/n_devices to (j+1)·n/n_devices − 1, "
                           "e.g. .skip(j * n // n_devices).take(n // n_devices) with the "
                           f"device's own j), and an epoch must hold {self.n_batches} "
                           "distinct batch(es).")
        self.first_epoch[(j, b)] = prints

    def _fail(self, message, error=ValueError, cause=None):
        self.error = message
        raise error(message) from cause


def _is_tensorflow_error(error) -> bool:
    """Whether TensorFlow raised it (checked without importing TensorFlow)."""
    return any(cls.__module__.startswith("tensorflow") for cls in type(error).__mro__)


def _identical(other, argument, j):
    other_argument, other_j, other_b = other
    if other_argument == argument and other_j == j:
        return (f"batch {other_b} of the same iterator: it repeats sooner than one epoch "
                "(check n_per_device and the .take() before .batch())")
    return f"{other_argument}[{other_j}] (device {other_j}) batch {other_b}"


def _fingerprint(array) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=16).digest()


def _describe(value) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"{type(value).__name__} of shape {getattr(value, 'shape', '?')}"


# --- where the iterators come from -------------------------------------------------

class IteratorSource(StoredStreams):
    """Streams read from per-device iterators (the Dataset classes).

    train / validation: {stream name: list of iterators (or None)}; the
    validation lists are prefixed ``validation_`` in errors. Streams of no
    simulations (``remaining`` when n_s == n_d) are never read.
    """

    def __init__(self, kind, n_s, n_d, n_params, input_shape, layout: Layout,
                 train: dict, validation: dict, dtype=np.float32):
        self.kind, self.sizes = kind, stream_sizes(kind, n_s, n_d, n_params)
        simulation = (layout.n_per_device,) + tuple(input_shape)
        shapes = {name: (simulation, simulation + (n_params,)) if name in kind.derivative_streams
                  else (simulation,) for name in self.sizes}
        used = {name for name, n in self.sizes.items() if n}
        self.validate = any(validation[name] is not None for name in used)
        sets = {"train": ("", train)}
        if self.validate:
            sets["validation"] = ("validation_", validation)
        owners = {}
        self.streams = {}
        for key, (prefix, lists) in sets.items():
            seen = {}
            self.streams[key] = {}
            for name in self.sizes:
                if name not in used:
                    continue
                argument = prefix + name
                iterators = _iterator_list(argument, lists[name], layout.n_devices,
                                           validation=key == "validation")
                for j, iterator in enumerate(iterators):
                    owner = owners.setdefault(id(iterator), f"{argument}[{j}]")
                    if owner != f"{argument}[{j}]":
                        raise ValueError(f"{argument}[{j}] is the same iterator object as "
                                         f"{owner}: every stream and device needs its own "
                                         "iterator (call .as_numpy_iterator() for each)")
                n_batches = layout.n_batches(name, self.sizes[name], QUANTITY[name])
                self.streams[key][name] = IteratorStream(argument, iterators, n_batches,
                                                         shapes[name], seen, dtype)

    def data(self, runtime, rng=None):
        return self.streams


def _iterator_list(argument, value, n_devices, validation) -> list:
    if value is None:
        need = ("validation needs every validation_ stream once one is given" if validation
                else "a list of iterators, one per device")
        raise ValueError(f"{argument} must be given: {need}")
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{argument} must be a list of {n_devices} iterator(s), element j "
                        f"serving devices[j]; got {_kind_of(value)}")
    if len(value) != n_devices:
        raise ValueError(f"{argument} holds {len(value)} iterator(s), but there are {n_devices} "
                         "device(s): element j serves devices[j]")
    for j, iterator in enumerate(value):
        if not hasattr(iterator, "__next__"):
            raise TypeError(f"{argument}[{j}] (device {j}) must be an iterator of numpy "
                            f"batches, got {_kind_of(iterator)}")
    return list(value)


def _kind_of(value) -> str:
    name = type(value).__name__
    if "Dataset" in name or hasattr(value, "as_numpy_iterator"):
        return (f"a {name}: pass dataset.repeat().as_numpy_iterator() (batched with "
                ".batch(n_per_device)) instead")
    return name


# --- running passes over the iterators ----------------------------------------------

class IteratorExecutor:
    """Pass 1 and pass 2 of streams read from iterators, one global batch at a
    time (see the module docstring). ``backend`` serves ``imnn.fitting`` the
    small per-iteration steps, compiled."""

    def __init__(self, runtime, network, kind):
        self.network, self.kind = network, kind
        self.backend = _CompiledSteps(runtime, kind)
        compile = runtime.compile
        self._jax = runtime.name == "jax"
        mesh = getattr(runtime, "mesh", None)
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

    def summaries(self, w, stream: IteratorStream, with_derivative) -> Summaries:
        outputs = self._pass_one(w, stream, with_derivative)
        stream.settle()
        return outputs

    def summaries_and_pullback(self, w, stream: IteratorStream, with_derivative):
        return (self._pass_one(w, stream, with_derivative),
                self.pullback(w, stream, with_derivative))

    def pullback(self, w, stream: IteratorStream, with_derivative):
        """Pass 2 of a stream: cotangents (n, …) in the data's order -> Σ over the
        epoch's batches of their VJPs (reads one epoch when called)."""
        def pullback(cotangents: Summaries):
            total, per_batch = self._batch_order(stream.n_devices, stream.n_batches)(
                w, cotangents)
            for b, batch in enumerate(stream.epoch()):
                total = self._accumulate[with_derivative](total, w, self._place(batch),
                                                          per_batch, b)
            return total

        return pullback

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
    """What ``imnn.fitting`` asks of ``executor.backend`` between the passes
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
    the host, so the fit loop runs in Python (``imnn.fitting.run_loop``) and the
    whole-pass compilation ``_IMNN`` asks for is declined; the executor compiles
    the per-batch passes and the small steps instead. Everything else is the
    wrapped runtime's."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.chunk, self.where = runtime.chunk, runtime.where
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
        return self.runtime.name

    @property
    def dtype(self):
        return self.runtime.dtype

    def executor(self, network, kind):
        return IteratorExecutor(self.runtime, network, kind)

    def compile(self, function):
        return function

    def make_runner(self, problem):
        compile, optimiser = self.runtime.compile, problem.optimiser
        return python_runner(problem._replace(
            optimiser=Optimiser(optimiser.init, compile(optimiser.update)),
            where=compile(problem.where)), self.chunk)


# --- the public classes -------------------------------------------------------------

def _check_local(devices):
    for j, device in enumerate(devices):
        if device.process_index != jax.process_index():
            raise ValueError(f"devices[{j}] = {device} belongs to another process: the Dataset "
                             "classes read their iterators in one process, so every device "
                             "must be local (jax.local_devices())")


class _DatasetIMNN(_IMNN):
    """What the two Dataset classes share: local devices and the iterator runtime."""

    def _set_up(self, n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model, optimiser,
                key_or_state, host, devices, n_per_device, backend) -> Layout:
        layout, devices = _aggregation(host, devices, n_per_device)
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

    def __init__(self, n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                 optimiser, key_or_state, main, remaining, host, devices, n_per_device,
                 validation_main=None, validation_remaining=None, *, backend="jax"):
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

    def __init__(self, n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                 optimiser, key_or_state, fiducial, derivative, δθ, host, devices,
                 n_per_device, validation_fiducial=None, validation_derivative=None, *,
                 backend="jax"):
        layout = self._set_up(n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model,
                              optimiser, key_or_state, host, devices, n_per_device, backend)
        kind = _finite_difference(δθ, self.n_params)
        self.δθ = np.asarray(kind.δθ)
        self._attach(IteratorSource(
            kind, self.n_s, self.n_d, self.n_params, self.input_shape, layout,
            {"fiducial": fiducial, "derivative": derivative},
            {"fiducial": validation_fiducial, "derivative": validation_derivative},
            self.runtime.dtype), kind)
        self._seed_shapes(layout)


__all__ = ["DatasetGradientIMNN", "DatasetNumericalGradientIMNN", "IteratorSource",
           "IteratorStream", "IteratorExecutor", "IteratorRuntime"]
