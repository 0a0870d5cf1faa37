"""Writing simulations to TFRecords, and parsing them back, for the dataset IMNNs.

Record format (the same as the earlier public ``imnn``, so records move both ways):

- one ``tf.train.Example`` per simulation, with features
  ``data`` (bytes: the simulation as little-endian float32, C order) and
  ``seed`` (int64: the simulation's seed index);
- numerical-derivative records add ``derivative`` (int64: 0 below, 1 above the
  fiducial) and ``parameter`` (int64: which parameter is perturbed), and are
  written seed-major, then below/above, then parameter: the C-order flattening
  of an ``(n_sims, 2, n_params) + input_shape`` array;
- files are ``{directory}/{filename}_{counter:0{padding}d}.tfrecords``; the
  next file starts once the current one exceeds ``record_size`` MB (10⁶ bytes),
  so each file holds at most one simulation beyond the limit.

``data`` is raw bytes, so the parsers need the shape of a simulation:
``input_shape`` is given to the constructor, or set by ``write_record`` from the
first simulation it writes (a fiducial one, or one part of a numerical
derivative), so a writer that has written its records can parse them. An
exact derivative has shape ``input_shape + (n_params,)``: a fresh writer that
writes one before any fiducial record needs ``input_shape`` given.

The diagnosis of damaged files when a dataset reads them is in
``imnn._tfrecord_damage``.

TensorFlow is imported only when a record is written or parsed. The module is
one class, a little under 500 lines (half of them its documentation): its writer and its parsers share the record
format, the file names and ``input_shape``, so they stay together.
"""
from __future__ import annotations

import inspect
import numbers
import os
from typing import Any, Callable, Sequence

import numpy as np

from ._checks import is_int, quoted_bool, quoted_int

Example = Any        # a serialised tf.train.Example: a scalar tf.string tensor or bytes
Index = Any          # int (fiducial) or (seed, derivative, parameter) (numerical derivative)
Tensor = Any         # a tf.Tensor (TensorFlow is imported on first use, not for annotations)


def _tf():
    """TensorFlow, imported on first use (it is an optional dependency)."""
    import tensorflow
    return tensorflow


class TFRecords:
    """Writes simulations to TFRecords and parses them back (format: module docstring).

    Needs TensorFlow, imported on first use. The files feed the Dataset classes
    (docs/design/behaviour.md#datasets-and-tfrecords).

    Args:
        record_size: Approximate largest size of one file, in MB (10⁶ bytes); a new
            file is started once it is exceeded. A positive number (default 150).
        padding: Number of digits of the zero-padded file counter in the file names
            (default 5), so that at most 10**padding files are written.
        input_shape: Shape of one simulation, a tuple of positive ints; if None
            (default), set by the first ``write_record``. The parsers need it.

    Attributes:
        file: Path stem of the records last written (``{directory}/{filename}``), or None.
        writer: The ``tf.io.TFRecordWriter`` of the file being written, only during
            ``write_record``; otherwise None.

    Raises:
        TypeError, ValueError: ``record_size`` not a positive number, ``padding`` not a
            positive int, or ``input_shape`` not a tuple of positive ints.
    """

    def __init__(self, record_size: float = 150., padding: int = 5,
                 input_shape: Sequence[int] | None = None) -> None:
        if not isinstance(record_size, numbers.Real) or isinstance(record_size, (bool, np.bool_)):
            raise TypeError(f"`record_size` must be a number of MB, got {record_size!r}")
        if not np.isfinite(record_size) or record_size <= 0:
            raise ValueError(f"`record_size` must be a positive number of MB, got {record_size}")
        self.record_size = float(record_size)
        self.padding = quoted_int("padding", padding, 1)
        self.input_shape = None if input_shape is None else self._check_shape(input_shape)
        self.file = None
        self.writer = None
        self._bar = None
        self._write_shape = None

    @staticmethod
    def _check_shape(input_shape) -> tuple[int, ...]:
        if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
            raise TypeError(f"`input_shape` must be a tuple of ints, got {input_shape!r}")
        if not all(is_int(d) and d > 0 for d in input_shape):
            raise ValueError(f"`input_shape` must contain positive ints, got {input_shape!r}")
        return tuple(int(d) for d in input_shape)

    # ------------------------------------------------------------------ writing

    def write_record(self, n_sims: int, get_simulation: Callable, fiducial: bool = True,
                     n_params: int | None = None, validation: bool = False,
                     directory: str | None = None, filename: str | None = None,
                     start: int = 0, *, progress: bool = True) -> list[str]:
        """Write the simulations at seeds ``start, …, n_sims - 1`` to a set of files.

        Args:
            n_sims: The seed to stop at (exclusive): the number of simulations when
                ``start`` is 0. A positive int.
            get_simulation: ``get_simulation(seed)`` (``fiducial=True``) or
                ``get_simulation(seed, derivative, parameter)`` (``fiducial=False``;
                ``derivative`` 0 below and 1 above θ_fid, ``parameter`` in
                ``range(n_params)``), returning one simulation as an array; every call of
                one write must return the same shape.
            fiducial: True (default): one simulation per seed (fiducial simulations, or
                exact derivatives of shape ``input_shape + (n_params,)``); False: the
                ``2 * n_params`` simulations of a numerical derivative per seed.
            n_params: Number of parameters, a positive int; required when ``fiducial``
                is False (default None).
            validation: Prefix the default filename with ``validation_`` (default False).
            directory: An existing directory to write to (default None: the current one).
            filename: Stem of the file names (default None: ``fiducial`` or
                ``derivative``, after ``fiducial``).
            start: The first seed to write (default 0); file numbering still starts at 0,
                so earlier files of the same name are overwritten.
            progress: Keyword-only. Show a tqdm progress bar (default True).

        Returns:
            The paths written, in order (a list of str).

        Raises:
            TypeError: a flag that is not a bool, ``directory`` or ``filename`` not a str,
                ``get_simulation`` that does not take 1 (fiducial) or 3 arguments, or a
                simulation that is not a real numeric array.
            ValueError: ``start >= n_sims``, ``n_params`` missing for a numerical
                derivative, a directory that does not exist, simulations whose shape changes
                or differs from ``input_shape``, or more than 10**padding files needed.
        """
        n_sims = quoted_int("n_sims", n_sims, 1)
        start = quoted_int("start", start, 0)
        if start >= n_sims:
            raise ValueError(f"`start` ({start}) must be less than `n_sims` ({n_sims}): "
                             "seeds start, …, n_sims - 1 are written")
        fiducial = quoted_bool("fiducial", fiducial)
        validation = quoted_bool("validation", validation)
        progress = quoted_bool("progress", progress)
        self.check_func(get_simulation, fiducial)
        self.check_params(n_params, fiducial)
        self.file = self.get_file(directory, filename, fiducial, validation)
        serialise = self.get_serialiser(fiducial, get_simulation, n_params)

        from tqdm.auto import tqdm
        tf = _tf()
        per_seed = 1 if fiducial else 2 * n_params
        self._bar = tqdm(total=(n_sims - start) * per_seed, disable=not progress,
                         desc=os.path.basename(self.file), unit="sim")
        self._write_shape = None
        paths = []
        index = self.get_initial_seed(fiducial, start)
        try:
            while self.get_seed(index, fiducial) < n_sims:
                counter = len(paths)
                if counter >= 10 ** self.padding:
                    raise ValueError(
                        f"more than 10**{self.padding} files needed: their names would not "
                        "sort in order; increase `padding` or `record_size`")
                paths.append(self._path(counter))
                with tf.io.TFRecordWriter(paths[-1]) as self.writer:
                    full = False
                    while not full and self.get_seed(index, fiducial) < n_sims:
                        index = serialise(index, counter)
                        full = self.check_size(counter)
        finally:
            self.writer = None
            self._bar.close()
            self._bar = None
        return paths

    def fiducial_serialiser(self, seed: int, counter: int, get_simulation: Callable) -> int:
        """Write the simulation at ``seed`` to the open file (number ``counter``).

        Args:
            seed: the seed to write, passed to ``get_simulation``.
            counter: the number of the open file (for the progress bar).
            get_simulation: ``get_simulation(seed)``, returning one simulation.

        Returns:
            The next seed, ``seed + 1``.
        """
        self._write(get_simulation(seed), counter, seed=seed)
        return seed + 1

    def derivative_serialiser(self, simulation: tuple[int, int, int], counter: int,
                              get_simulation: Callable, n_params: int) -> tuple[int, int, int]:
        """Write the rest of one seed's numerical-derivative simulations.

        Starting from ``simulation = (seed, derivative, parameter)``, writes
        ``get_simulation(seed, derivative, parameter)`` in the record order
        (below/above, then parameter) until the seed is complete or file
        ``counter`` is full.

        Args:
            simulation: ``(seed, derivative, parameter)`` of the first simulation to write.
            counter: the number of the open file.
            get_simulation: ``get_simulation(seed, derivative, parameter)``, returning
                one simulation.
            n_params: the number of parameters.

        Returns:
            ``(seed, derivative, parameter)`` of the next simulation to write.
        """
        seed, derivative, parameter = simulation
        position = derivative * n_params + parameter   # within the seed's (2, n_params) block
        while position < 2 * n_params:
            derivative, parameter = divmod(position, n_params)
            self._write(get_simulation(seed, derivative, parameter), counter,
                        seed=seed, derivative=derivative, parameter=parameter)
            position += 1
            if position < 2 * n_params and self.check_size(counter):
                return (seed, *divmod(position, n_params))
        return (seed + 1, 0, 0)

    def _write(self, simulation, counter: int, **indices: int):
        """Serialise one simulation with its integer indices and write it."""
        if self.writer is None:
            raise RuntimeError("no record is open: serialisers are called by `write_record`")
        array = np.asarray(simulation)
        if array.dtype.kind not in "biuf":
            raise TypeError("`get_simulation` must return a real numeric array, got dtype "
                            f"{array.dtype} at {indices}")
        if self._write_shape is None:
            self._write_shape = array.shape
            if self.input_shape is None:
                self.input_shape = array.shape
        elif array.shape != self._write_shape:
            raise ValueError(f"`get_simulation` returned shape {array.shape} at {indices}, "
                             f"but {self._write_shape} earlier in this record")
        tf = _tf()
        feature = {"data": self._bytes_feature(array.astype("<f4").tobytes(order="C"))}
        feature.update((name, self._int64_feature(value)) for name, value in indices.items())
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        self.writer.write(example.SerializeToString())
        self._bar.set_postfix(file=counter, refresh=False)
        self._bar.update()

    def get_serialiser(self, fiducial: bool, get_simulation: Callable,
                       n_params: int | None) -> Callable[[Index, int], Index]:
        """The serialiser for the record kind.

        Args:
            fiducial: True for one simulation per seed, False for numerical derivatives.
            get_simulation: the user's function returning one simulation.
            n_params: the number of parameters (numerical derivatives), or None.

        Returns:
            ``serialise(index, counter) -> next index``.
        """
        if fiducial:
            return lambda seed, counter: self.fiducial_serialiser(seed, counter, get_simulation)
        return lambda simulation, counter: self.derivative_serialiser(
            simulation, counter, get_simulation, n_params)

    # ------------------------------------------------------------------ parsing

    def parser(self, example: Example) -> Tensor:
        """Parse one serialised simulation.

        Args:
            example: one serialised ``tf.train.Example`` (a scalar tf.string), as a
                ``tf.data.TFRecordDataset`` yields them.

        Returns:
            The simulation, a float32 tensor of shape ``input_shape``.

        Raises:
            ValueError: ``input_shape`` is unknown.
        """
        shape = self._shape()
        return self._decode(self._parse(example)["data"], shape)

    def derivative_parser(self, example: Example, n_params: int | None = None) -> Tensor:
        """Parse one exact derivative (written with ``fiducial=True``).

        Args:
            example: one serialised ``tf.train.Example`` (a scalar tf.string).
            n_params: number of parameters, a positive int; required (a keyword so that
                ``functools.partial`` can fix it).

        Returns:
            The derivative ∂d/∂θ, a float32 tensor of shape ``input_shape + (n_params,)``.

        Raises:
            ValueError: ``n_params`` not given, or ``input_shape`` unknown.
        """
        if n_params is None:
            raise ValueError("`n_params` must be given to parse a derivative record")
        shape = self._shape() + (quoted_int("n_params", n_params, 1),)
        return self._decode(self._parse(example)["data"], shape)

    def numerical_derivative_parser(self, example: Example, n_params: int | None = None
                                    ) -> Tensor:
        """One simulation of a numerical-derivative record as float32 of shape
        ``input_shape``.

        Each example holds one simulation; in file order they are the C-order
        flattening of ``(n_d, 2, n_params) + input_shape``, as the numerical-
        derivative dataset classes consume them. Unlike ``parser``, the example
        must carry ``derivative`` and ``parameter`` (so a fiducial record is
        rejected), and, if ``n_params`` is given, they must be in range.

        Args:
            example: one serialised ``tf.train.Example`` (a scalar tf.string).
            n_params: number of parameters; when given (default None), the record's
                ``parameter`` must be below it and its ``derivative`` 0 or 1.

        Returns:
            The simulation, a float32 tensor of shape ``input_shape``.

        Raises:
            ValueError: ``input_shape`` unknown. A record out of range fails when the
                dataset is read (a TensorFlow InvalidArgumentError).
        """
        tf = _tf()
        shape = self._shape()
        features = self._parse(example, "derivative", "parameter")
        if n_params is not None:
            n_params = quoted_int("n_params", n_params, 1)
            tf.debugging.assert_less(features["parameter"], tf.constant(n_params, tf.int64),
                                     message="`parameter` of the record is not below `n_params`")
            tf.debugging.assert_non_negative(features["parameter"])
            tf.debugging.assert_less(features["derivative"], tf.constant(2, tf.int64),
                                     message="`derivative` of the record is not 0 or 1")
            tf.debugging.assert_non_negative(features["derivative"])
        return self._decode(features["data"], shape)

    def _shape(self) -> tuple[int, ...]:
        if self.input_shape is None:
            raise ValueError("`input_shape` is unknown: pass it to TFRecords(input_shape=...) "
                             "or write a record with this instance first")
        return tuple(self.input_shape)

    @staticmethod
    def _parse(example: Example, *int64_features: str) -> dict:
        tf = _tf()
        spec = {"data": tf.io.FixedLenFeature([], tf.string)}
        spec.update((name, tf.io.FixedLenFeature([], tf.int64)) for name in int64_features)
        return tf.io.parse_single_example(example, spec)

    @staticmethod
    def _decode(data, shape: tuple[int, ...]):
        tf = _tf()
        return tf.reshape(tf.io.decode_raw(data, tf.float32, little_endian=True), shape)

    # ------------------------------------------------------------------ helpers

    def get_file(self, directory: str | None, filename: str | None, fiducial: bool,
                 validation: bool) -> str:
        """The path stem ``{directory}/{filename}`` the records are written to.

        ``filename`` defaults to ``fiducial`` or ``derivative`` (after
        ``fiducial``), prefixed ``validation_`` if ``validation``; a given
        ``filename`` is used as it is. ``directory`` must exist.

        Args:
            directory: an existing directory, or None for the current one.
            filename: the stem of the file names, or None for the default.
            fiducial: whether the records are fiducial (the default name).
            validation: whether to prefix the default name with ``validation_``.

        Returns:
            The path stem, a str.

        Raises:
            TypeError: ``directory`` or ``filename`` not a str.
            ValueError: ``filename`` names a directory, or ``directory`` does not exist.
        """
        if filename is None:
            filename = ("validation_" if validation else "") + \
                ("fiducial" if fiducial else "derivative")
        elif not isinstance(filename, str):
            raise TypeError(f"`filename` must be a str, got {filename!r}")
        if not os.path.basename(filename):
            raise ValueError(f"`filename` must name a file, not a directory: {filename!r}")
        if directory is None:
            stem = filename
        elif isinstance(directory, (str, os.PathLike)):
            stem = os.path.join(os.fspath(directory), filename)
        else:
            raise TypeError(f"`directory` must be a str, got {directory!r}")
        parent = os.path.dirname(stem) or os.curdir
        if not os.path.isdir(parent):
            raise ValueError(f"`directory` {parent!r} does not exist")
        return stem

    def _path(self, counter: int) -> str:
        return f"{self.file}_{counter:0{self.padding}d}.tfrecords"

    def check_size(self, counter: int) -> bool:
        """Whether file ``counter`` has exceeded ``record_size`` MB.

        Args:
            counter: the number of the file.

        Returns:
            True once the file on disk is larger than ``record_size`` MB.
        """
        if self.writer is not None:
            self.writer.flush()   # the writer buffers: the size on disk lags without it
        return os.path.getsize(self._path(counter)) > self.record_size * 1e6

    def get_initial_seed(self, fiducial: bool, start: int) -> Index:
        """The index of the first simulation to write.

        Args:
            fiducial: True for one simulation per seed, False for numerical derivatives.
            start: the first seed.

        Returns:
            ``start`` (fiducial) or ``(start, 0, 0)`` (numerical derivative).
        """
        return start if fiducial else (start, 0, 0)

    def get_seed(self, simulation: Index, fiducial: bool) -> int:
        """The seed of an index from ``get_initial_seed`` or a serialiser.

        Args:
            simulation: the index, an int (fiducial) or ``(seed, derivative, parameter)``.
            fiducial: True for one simulation per seed, False for numerical derivatives.

        Returns:
            The seed, an int.
        """
        return simulation if fiducial else simulation[0]

    def check_func(self, get_simulation: Callable, fiducial: bool) -> None:
        """Check that ``get_simulation`` takes 1 (fiducial) or 3 arguments.

        Args:
            get_simulation: the user's function returning one simulation.
            fiducial: True for ``get_simulation(seed)``, False for
                ``get_simulation(seed, derivative, parameter)``.

        Raises:
            TypeError: ``get_simulation`` is not callable that way.
        """
        if not callable(get_simulation):
            raise TypeError(f"`get_simulation` must be callable, got {get_simulation!r}")
        n_args, expected = (1, "(seed)") if fiducial else (3, "(seed, derivative, parameter)")
        try:
            signature = inspect.signature(get_simulation)
        except (TypeError, ValueError):
            return   # no introspectable signature (some builtins): trust the caller
        try:
            signature.bind(*range(n_args))
        except TypeError:
            raise TypeError(f"`get_simulation` must be callable as get_simulation{expected} "
                            f"when fiducial={fiducial}, but its signature is {signature}") from None

    def check_params(self, n_params: int | None, fiducial: bool) -> None:
        """Check that ``n_params`` is a positive int when writing a numerical derivative.

        Args:
            n_params: the number of parameters, or None.
            fiducial: True for fiducial records (then ``n_params`` is not needed).

        Raises:
            TypeError, ValueError: ``n_params`` missing or not a positive int while
                ``fiducial`` is False.
        """
        if fiducial:
            return
        if n_params is None:
            raise ValueError("`n_params` must be given when writing a numerical-derivative "
                             "record (fiducial=False)")
        quoted_int("n_params", n_params, 1)

    def _bytes_feature(self, value):
        """A ``tf.train.Feature`` holding ``value`` (bytes, or a tf.string tensor)."""
        tf = _tf()
        if hasattr(value, "numpy"):
            value = value.numpy()
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def _int64_feature(self, value: int):
        """A ``tf.train.Feature`` holding the int ``value``."""
        tf = _tf()
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


# The seed's examples write ``from imnn import TFRecords`` then
# ``TFRecords.TFRecords(...)``; that spelling works next to ``imnn.TFRecords(...)``.
TFRecords.TFRecords = TFRecords
