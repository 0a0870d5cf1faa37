"""The streams of the Dataset classes: per-device iterators read one epoch per
pass, and checked as they are read (``IteratorStream``), and the source that
builds them from the constructor arguments (``IteratorSource``). The layout of
the data is described in ``imnn.datasets``.

Reading. Iterators repeat and are unshuffled; one *epoch* is the
``n_batches = n / (n_devices · n_per_device)`` batches of a device's chunk.
Every pass reads exactly one epoch of every iterator of its streams, so a fit
iteration reads each training iterator twice (pass 1: summaries; pass 2: one
vector-Jacobian product per batch) and each validation iterator once. A pass
that was abandoned half-way (an error, Ctrl-C) is finished by the next one
before it starts, so the streams stay aligned with their epochs.

Checks (the seed warned that a misbuilt dataset "will either fail or provide
the wrong result"; here it fails, with the argument and device named):

- at construction: each argument is a list of ``n_devices`` iterators, no
  iterator object used twice, and the numbers of simulations split evenly;
- every batch: its structure (pair or single array), shape and dtype (floating
  point, the same for every batch of a stream), and that the iterator has not
  ended; a TensorFlow reading error (a damaged TFRecords file) names the stream,
  the device and the file;
- the first epoch: finite values within the working precision's range (see
  ``imnn._sources.out_of_range``), and no batch equal to another one of the same
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
from collections.abc import Iterator
from typing import Any

import numpy as np

from ._sources import QUANTITY, Layout, StoredStreams, out_of_range
from ._types import Key, Shape
from .contracts import Kind, Runtime, stream_sizes

# --- one stream, with its checks ------------------------------------------------

class IteratorStream:
    """One stream read from per-device iterators, checked as it is read.

    Args:
        argument: the constructor argument it came from (named in every error).
        iterators: one iterator per device, each yielding batches of
            ``(n_per_device,) + input_shape`` (and ``+ (p,)`` for derivatives).
        n_batches: batches per device per epoch.
        shapes: the shape of each component of a batch, one for simulations, two for
            (simulations, ∂d/∂θ) pairs.
        seen: first-epoch fingerprints of the streams of one data set, shared between
            them so that no batch may equal another one anywhere in the data set.
        dtype: the working precision, whose range the first epoch's values must fit
            (default float32).
    """

    def __init__(self, argument: str, iterators: list[Iterator[Any]], n_batches: int,
                 shapes: tuple[Shape, ...], seen: dict[tuple[int, bytes], tuple[str, int, int]],
                 dtype: np.dtype | type = np.float32) -> None:
        self.argument, self.iterators, self.n_batches = argument, iterators, n_batches
        self.shapes, self.seen, self.dtype = shapes, seen, np.dtype(dtype)
        self.n_devices = len(iterators)
        self.read = [0] * self.n_devices     # batches read from each device's iterator
        self.dtypes = [None] * len(shapes)
        self.first_epoch = {}                # (device, batch) -> fingerprints, until confirmed
        self.error = None

    def epoch(self) -> Iterator[list[Any]]:
        """Read one epoch, finishing first any epoch an earlier pass abandoned.

        Returns:
            An iterator over ``n_batches`` lists of per-device batches (one checked
            batch, or a tuple of its components, per device).

        Raises:
            ValueError, TypeError: a batch of the wrong shape, type or range, an
                epoch that differs from the first, or an iterator that ran out.
        """
        for j in range(self.n_devices):      # finish any abandoned pass first
            while self.read[j] % self.n_batches:
                self._next(j)
        for _ in range(self.n_batches):
            yield [self._next(j) for j in range(self.n_devices)]

    def settle(self) -> None:
        """Read until the second epoch has confirmed the first (validation streams
        are otherwise read once per iteration).

        Raises:
            ValueError, TypeError: as ``epoch``.
        """
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
            from ._tfrecord_damage import describe_damage
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

    Streams of no simulations (``remaining`` when n_s == n_d) are never read.

    Args:
        kind: the derivative kind (``Exact`` or ``FiniteDifference``).
        n_s: simulations for the covariance.
        n_d: simulations (or seeds) for the mean's derivative.
        n_params: number of parameters p.
        input_shape: the shape of one simulation.
        layout: how simulations are spread over devices and batches.
        train: {stream name: list of iterators, one per device (or None)}.
        validation: as ``train``, for the validation set; its arguments are
            prefixed ``validation_`` in errors.
        dtype: the working precision (default float32).

    Raises:
        TypeError, ValueError: a missing or wrong iterator list, or one iterator
            object used for two streams or devices.
    """

    def __init__(self, kind: Kind, n_s: int, n_d: int, n_params: int, input_shape: Shape,
                 layout: Layout, train: dict[str, Any], validation: dict[str, Any],
                 dtype: np.dtype | type = np.float32) -> None:
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

    def data(self, runtime: Runtime, rng: Key | None = None) -> dict[str, dict[str, IteratorStream]]:
        """The streams, read on the host (neither placed nor random).

        Args:
            runtime: unused (iterators are read as each pass runs).
            rng: unused.

        Returns:
            ``{"train": {stream name: IteratorStream}, "validation": {...}}``.
        """
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
