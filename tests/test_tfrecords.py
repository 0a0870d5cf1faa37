"""TFRecords writer and parsers: record format, file layout, compatibility, errors."""
import glob
import os
import re
import subprocess
import sys
from functools import partial

import numpy as np
import pytest

from imnn.tfrecords import TFRecords

tf = pytest.importorskip("tensorflow")

INPUT_SHAPE = (3, 2)
N_PARAMS = 2
# on disk: 16 bytes of TFRecord framing + one serialised example of 6 floats
RECORD_BYTES = 16 + 55            # fiducial: data, seed
NUMERICAL_RECORD_BYTES = 16 + 96  # numerical derivative: data, seed, derivative, parameter


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def files(directory, stem):
    return sorted(glob.glob(os.path.join(directory, f"{stem}_*.tfrecords")))


def read(paths, parse):
    """Every example of ``paths`` (in order) through ``parse``, as numpy."""
    return np.stack([x.numpy() for x in tf.data.TFRecordDataset(paths).map(parse)])


def features(paths):
    """The raw features of every example: {name: value} with ints as ints."""
    out = []
    for raw in tf.data.TFRecordDataset(paths):
        feature = tf.train.Example.FromString(raw.numpy()).features.feature
        out.append({name: (f.bytes_list.value[0] if f.HasField("bytes_list")
                           else list(f.int64_list.value)[0])
                    for name, f in feature.items()})
    return out


def write_fiducial(writer, sims, directory, **kwargs):
    return writer.write_record(len(sims), lambda seed: sims[seed], directory=str(directory),
                               progress=False, **kwargs)


def write_numerical(writer, sims, directory, **kwargs):
    return writer.write_record(
        len(sims), lambda seed, der, param: sims[seed, der, param], fiducial=False,
        n_params=sims.shape[2], directory=str(directory), progress=False, **kwargs)


# ---------------------------------------------------------------- round trips

def test_fiducial_round_trip(tmp_path, rng):
    sims = rng.normal(size=(7,) + INPUT_SHAPE)   # float64: stored as float32
    writer = TFRecords()
    paths = write_fiducial(writer, sims, tmp_path)
    assert paths == [str(tmp_path / "fiducial_00000.tfrecords")] == files(tmp_path, "fiducial")
    assert writer.input_shape == INPUT_SHAPE
    parsed = read(paths, writer.parser)
    assert parsed.dtype == np.float32
    np.testing.assert_array_equal(parsed, sims.astype(np.float32))
    raw = features(paths)
    assert [r["seed"] for r in raw] == list(range(7))
    assert all(set(r) == {"data", "seed"} for r in raw)
    assert raw[3]["data"] == sims[3].astype("<f4").tobytes(order="C")


def test_exact_derivative_round_trip(tmp_path, rng):
    """The seed's DatasetGradientIMNN recipe: one writer writes fiducial and
    derivative records, then parses both (derivative_parser with n_params)."""
    fiducial = rng.normal(size=(6,) + INPUT_SHAPE).astype(np.float32)
    derivative = rng.normal(size=(4,) + INPUT_SHAPE + (N_PARAMS,)).astype(np.float32)
    writer = TFRecords(record_size=200)
    write_fiducial(writer, fiducial, tmp_path)
    paths = write_fiducial(writer, derivative, tmp_path, filename="derivative")
    assert writer.input_shape == INPUT_SHAPE   # still set by the first (fiducial) write
    np.testing.assert_array_equal(read(files(tmp_path, "fiducial"), writer.parser), fiducial)
    parsed = read(paths, lambda example: writer.derivative_parser(example, n_params=N_PARAMS))
    assert parsed.shape == (4,) + INPUT_SHAPE + (N_PARAMS,)
    np.testing.assert_array_equal(parsed, derivative)
    parsed = read(paths, partial(writer.derivative_parser, n_params=N_PARAMS))
    np.testing.assert_array_equal(parsed, derivative)


def test_numerical_derivative_round_trip(tmp_path, rng):
    sims = rng.normal(size=(3, 2, N_PARAMS) + INPUT_SHAPE).astype(np.float32)
    writer = TFRecords()
    paths = write_numerical(writer, sims, tmp_path)
    assert paths == [str(tmp_path / "derivative_00000.tfrecords")]
    assert writer.input_shape == INPUT_SHAPE
    flat = sims.reshape((-1,) + INPUT_SHAPE)   # seed-major, then below/above, then parameter
    np.testing.assert_array_equal(read(paths, writer.parser), flat)
    parsed = read(paths, partial(writer.numerical_derivative_parser, n_params=N_PARAMS))
    assert parsed.dtype == np.float32
    np.testing.assert_array_equal(parsed, flat)
    np.testing.assert_array_equal(read(paths, writer.numerical_derivative_parser), flat)
    raw = features(paths)
    order = [(r["seed"], r["derivative"], r["parameter"]) for r in raw]
    assert order == [tuple(i) for i in np.ndindex(3, 2, N_PARAMS)]
    assert all(set(r) == {"data", "seed", "derivative", "parameter"} for r in raw)


def test_seed_recipe_numerical_dataset(tmp_path, rng):
    """The seed's DatasetNumericalGradientIMNN recipe: map ``writer.parser`` over the
    sorted files, skip/take/batch per device; batches follow the C-order flattening."""
    n_d, n_devices, n_per_device = 4, 2, 4
    sims = rng.normal(size=(n_d, 2, N_PARAMS) + INPUT_SHAPE).astype(np.float32)
    writer = TFRecords.TFRecords(record_size=3e-4)   # the seed's spelling
    write_numerical(writer, sims, tmp_path, filename="numerical_derivative")
    paths = files(tmp_path, "numerical_derivative")
    assert len(paths) > 1
    per_device = 2 * N_PARAMS * n_d // n_devices
    flat = sims.reshape((-1,) + INPUT_SHAPE)
    for i in range(n_devices):
        batches = list(tf.data.TFRecordDataset(paths, num_parallel_reads=1).map(writer.parser)
                       .skip(i * per_device).take(per_device).batch(n_per_device)
                       .as_numpy_iterator())
        np.testing.assert_array_equal(np.concatenate(batches),
                                      flat[i * per_device:(i + 1) * per_device])


# ---------------------------------------------------------------- files

def test_roll_over_fiducial(tmp_path, rng):
    sims = rng.normal(size=(20,) + INPUT_SHAPE).astype(np.float32)
    limit = 3.5 * RECORD_BYTES   # 4 records per file: the 4th takes it over the limit
    writer = TFRecords(record_size=limit / 1e6)
    paths = write_fiducial(writer, sims, tmp_path)
    assert paths == files(tmp_path, "fiducial")
    assert [os.path.basename(p) for p in paths] == [f"fiducial_{i:05d}.tfrecords"
                                                    for i in range(5)]
    sizes = [os.path.getsize(p) for p in paths]
    assert sizes == [4 * RECORD_BYTES] * 5
    assert all(s > limit and s - RECORD_BYTES <= limit for s in sizes)
    np.testing.assert_array_equal(read(paths, writer.parser), sims)
    assert [r["seed"] for r in features(paths)] == list(range(20))
    # the last simulation filling a file opens no empty file
    assert len(write_fiducial(writer, sims[:8], tmp_path, filename="exact")) == 2


def test_roll_over_numerical_derivative_mid_seed(tmp_path, rng):
    """Files fill part-way through a seed's (2, n_params) block and continue there."""
    n_params = 3
    sims = rng.normal(size=(5, 2, n_params) + INPUT_SHAPE).astype(np.float32)
    writer = TFRecords(record_size=4.5 * NUMERICAL_RECORD_BYTES / 1e6)
    paths = write_numerical(writer, sims, tmp_path)
    assert paths == files(tmp_path, "derivative") and len(paths) == 6   # 30 sims, 5 a file
    assert [len(features([p])) for p in paths] == [5] * 6
    assert [os.path.getsize(p) for p in paths] == [5 * NUMERICAL_RECORD_BYTES] * 6
    np.testing.assert_array_equal(read(paths, writer.parser), sims.reshape((-1,) + INPUT_SHAPE))
    order = [(r["seed"], r["derivative"], r["parameter"]) for r in features(paths)]
    assert order == [tuple(i) for i in np.ndindex(5, 2, n_params)]


def test_padding_and_default_names(tmp_path, monkeypatch, rng):
    sims = rng.normal(size=(2,) + INPUT_SHAPE)
    nsims = rng.normal(size=(2, 2, 1) + INPUT_SHAPE)
    writer = TFRecords(padding=3)
    write_fiducial(writer, sims, tmp_path)
    write_fiducial(writer, sims, tmp_path, validation=True)
    write_numerical(writer, nsims, tmp_path)
    write_numerical(writer, nsims, tmp_path, validation=True)
    write_fiducial(writer, sims, tmp_path, validation=True, filename="mine")
    assert sorted(os.listdir(tmp_path)) == [
        "derivative_000.tfrecords", "fiducial_000.tfrecords", "mine_000.tfrecords",
        "validation_derivative_000.tfrecords", "validation_fiducial_000.tfrecords"]
    # no directory: the current one, names without a directory part
    monkeypatch.chdir(tmp_path)
    paths = TFRecords(padding=1).write_record(2, lambda seed: sims[seed], progress=False)
    assert paths == ["fiducial_0.tfrecords"] and os.path.isfile("fiducial_0.tfrecords")


def test_padding_overflow_raises(tmp_path, rng):
    """More files than ``padding`` digits can number would sort out of order."""
    sims = rng.normal(size=(12,) + INPUT_SHAPE)
    writer = TFRecords(record_size=1e-6, padding=1)   # one record a file
    with pytest.raises(ValueError, match="padding"):
        write_fiducial(writer, sims, tmp_path)
    assert len(files(tmp_path, "fiducial")) == 10


def test_start(tmp_path, rng):
    sims = rng.normal(size=(7,) + INPUT_SHAPE).astype(np.float32)
    writer = TFRecords()
    paths = writer.write_record(7, lambda seed: sims[seed], directory=str(tmp_path),
                                start=4, progress=False)
    assert [r["seed"] for r in features(paths)] == [4, 5, 6]
    np.testing.assert_array_equal(read(paths, writer.parser), sims[4:])
    nsims = rng.normal(size=(3, 2, N_PARAMS) + INPUT_SHAPE).astype(np.float32)
    paths = write_numerical(writer, nsims, tmp_path, start=2)
    assert [r["seed"] for r in features(paths)] == [2] * 2 * N_PARAMS
    np.testing.assert_array_equal(read(paths, writer.parser),
                                  nsims[2:].reshape((-1,) + INPUT_SHAPE))


def test_other_instance_parses(tmp_path, rng):
    sims = rng.normal(size=(5,) + INPUT_SHAPE).astype(np.float32)
    paths = write_fiducial(TFRecords(), sims, tmp_path)
    reader = TFRecords(input_shape=INPUT_SHAPE)
    np.testing.assert_array_equal(read(paths, reader.parser), sims)
    with pytest.raises(ValueError, match="input_shape"):
        read(paths, TFRecords().parser)


def test_given_input_shape_is_kept(tmp_path, rng):
    """With input_shape given, an exact derivative may be written first."""
    derivative = rng.normal(size=(3,) + INPUT_SHAPE + (N_PARAMS,)).astype(np.float32)
    writer = TFRecords(input_shape=list(INPUT_SHAPE))
    paths = write_fiducial(writer, derivative, tmp_path, filename="derivative")
    assert writer.input_shape == INPUT_SHAPE
    np.testing.assert_array_equal(
        read(paths, partial(writer.derivative_parser, n_params=N_PARAMS)), derivative)


def test_parsers_eager_on_bytes(tmp_path, rng):
    sims = rng.normal(size=(1,) + INPUT_SHAPE).astype(np.float32)
    writer = TFRecords()
    (path,) = write_fiducial(writer, sims, tmp_path)
    raw = next(iter(tf.data.TFRecordDataset([path]))).numpy()
    np.testing.assert_array_equal(writer.parser(raw).numpy(), sims[0])


# ---------------------------------------------------------------- the earlier library's format

def earlier_example(array, seed, **indices):
    """An example exactly as the earlier imnn wrote it: ``data`` the float32 bytes
    (C order), ``seed`` and, for numerical derivatives, ``derivative`` and
    ``parameter`` as int64 features."""
    feature = {"data": tf.train.Feature(bytes_list=tf.train.BytesList(
        value=[np.asarray(array, np.float32).tobytes()])),
        "seed": tf.train.Feature(int64_list=tf.train.Int64List(value=[seed]))}
    for name, value in indices.items():
        feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_reads_earlier_records(tmp_path, rng):
    fiducial = rng.normal(size=(3,) + INPUT_SHAPE).astype(np.float32)
    derivative = rng.normal(size=(3,) + INPUT_SHAPE + (N_PARAMS,)).astype(np.float32)
    numerical = rng.normal(size=(2, 2, N_PARAMS) + INPUT_SHAPE).astype(np.float32)
    paths = {name: str(tmp_path / f"{name}_00000.tfrecords")
             for name in ("fiducial", "derivative", "numerical")}
    with tf.io.TFRecordWriter(paths["fiducial"]) as w:
        for seed, sim in enumerate(fiducial):
            w.write(earlier_example(sim, seed))
    with tf.io.TFRecordWriter(paths["derivative"]) as w:
        for seed, sim in enumerate(derivative):
            w.write(earlier_example(sim, seed))
    with tf.io.TFRecordWriter(paths["numerical"]) as w:
        for seed, der, param in np.ndindex(numerical.shape[:3]):
            w.write(earlier_example(numerical[seed, der, param], seed,
                                    derivative=der, parameter=param))
    reader = TFRecords(input_shape=INPUT_SHAPE)
    np.testing.assert_array_equal(read([paths["fiducial"]], reader.parser), fiducial)
    np.testing.assert_array_equal(
        read([paths["derivative"]], partial(reader.derivative_parser, n_params=N_PARAMS)),
        derivative)
    np.testing.assert_array_equal(
        read([paths["numerical"]], partial(reader.numerical_derivative_parser,
                                           n_params=N_PARAMS)),
        numerical.reshape((-1,) + INPUT_SHAPE))


def test_earlier_parser_reads_our_records(tmp_path, rng):
    """The earlier parser: parse ``data`` as a string, decode_raw float32, reshape."""
    sims = rng.normal(size=(4,) + INPUT_SHAPE).astype(np.float32)
    paths = write_fiducial(TFRecords(), sims, tmp_path)

    def earlier_parser(example):
        parsed = tf.io.parse_single_example(
            example, {"data": tf.io.FixedLenFeature([], tf.string)})
        return tf.reshape(tf.io.decode_raw(parsed["data"], tf.float32), INPUT_SHAPE)

    np.testing.assert_array_equal(read(paths, earlier_parser), sims)
    assert features(paths)[2] == {"data": sims[2].tobytes(), "seed": 2}


# ---------------------------------------------------------------- helpers and errors

def test_helpers(tmp_path):
    writer = TFRecords(padding=2)
    assert writer.get_file(str(tmp_path), None, True, False) == str(tmp_path / "fiducial")
    assert writer.get_file(tmp_path, None, False, True) == str(tmp_path / "validation_derivative")
    assert writer.get_file(None, "name", False, True) == "name"
    assert writer.get_initial_seed(True, 3) == 3
    assert writer.get_initial_seed(False, 3) == (3, 0, 0)
    assert writer.get_seed(5, True) == 5 and writer.get_seed((5, 1, 0), False) == 5
    assert writer.get_serialiser(True, lambda s: s, None) is not None
    writer.file = str(tmp_path / "x")
    (tmp_path / "x_01.tfrecords").write_bytes(b"0" * 1_000_001)
    (tmp_path / "x_02.tfrecords").write_bytes(b"0" * 10)
    writer.record_size = 1.
    assert writer.check_size(1) and not writer.check_size(2)
    assert writer._int64_feature(7).int64_list.value == [7]
    assert writer._bytes_feature(tf.constant(b"ab")).bytes_list.value == [b"ab"]
    assert TFRecords.TFRecords is TFRecords and writer.TFRecords is TFRecords


def test_progress_bar(tmp_path, rng, capsys):
    sims = rng.normal(size=(3,) + INPUT_SHAPE)
    TFRecords().write_record(3, lambda seed: sims[seed], directory=str(tmp_path))
    assert "3/3" in capsys.readouterr().err
    write_fiducial(TFRecords(), sims, tmp_path)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("kwargs, error, name", [
    (dict(record_size=0), ValueError, "record_size"),
    (dict(record_size=-1.), ValueError, "record_size"),
    (dict(record_size=float("inf")), ValueError, "record_size"),
    (dict(record_size="150"), TypeError, "record_size"),
    (dict(record_size=True), TypeError, "record_size"),
    (dict(padding=0), ValueError, "padding"),
    (dict(padding=2.), TypeError, "padding"),
    (dict(input_shape=(3, 0)), ValueError, "input_shape"),
    (dict(input_shape=(3., 2)), ValueError, "input_shape"),
    (dict(input_shape=3), TypeError, "input_shape"),
    (dict(input_shape="3"), TypeError, "input_shape"),
])
def test_constructor_errors(kwargs, error, name):
    with pytest.raises(error, match=name):
        TFRecords(**kwargs)


def fid(seed):
    return np.zeros(INPUT_SHAPE)


def der(seed, derivative, parameter):
    return np.zeros(INPUT_SHAPE)


@pytest.mark.parametrize("kwargs, error, name", [
    (dict(n_sims=0), ValueError, "n_sims"),
    (dict(n_sims=2.), TypeError, "n_sims"),
    (dict(n_sims=None), TypeError, "n_sims"),
    (dict(start=-1), ValueError, "start"),
    (dict(start=4), ValueError, "start"),
    (dict(start=1.), TypeError, "start"),
    (dict(get_simulation=None), TypeError, "get_simulation"),
    (dict(get_simulation=der), TypeError, "get_simulation"),
    (dict(get_simulation=lambda: 0), TypeError, "get_simulation"),
    (dict(get_simulation=fid, fiducial=False, n_params=2), TypeError, "get_simulation"),
    (dict(get_simulation=der, fiducial=False), ValueError, "n_params"),
    (dict(get_simulation=der, fiducial=False, n_params=0), ValueError, "n_params"),
    (dict(get_simulation=der, fiducial=False, n_params="2"), TypeError, "n_params"),
    (dict(fiducial=1), TypeError, "fiducial"),
    (dict(validation="yes"), TypeError, "validation"),
    (dict(progress=None), TypeError, "progress"),
    (dict(filename=""), ValueError, "filename"),
    (dict(filename=3), TypeError, "filename"),
    (dict(filename="sub/"), ValueError, "filename"),
    (dict(directory=3), TypeError, "directory"),
    (dict(directory="does/not/exist"), ValueError, "directory"),
    (dict(filename="does_not_exist/fiducial"), ValueError, "directory"),
    (dict(get_simulation=lambda seed: "text"), TypeError, "get_simulation"),
    (dict(get_simulation=lambda seed: np.zeros(seed + 1)), ValueError, "get_simulation"),
])
def test_write_record_errors(tmp_path, monkeypatch, kwargs, error, name):
    monkeypatch.chdir(tmp_path)
    args = dict(n_sims=3, get_simulation=fid, progress=False)
    args.update(kwargs)
    with pytest.raises(error, match=name):
        TFRecords().write_record(**args)


def test_get_simulation_with_defaults_accepted(tmp_path):
    """Arity is checked by binding, so extra defaulted arguments are fine."""
    def get(seed, directory=None):
        return np.full(INPUT_SHAPE, seed)
    paths = TFRecords().write_record(2, get, directory=str(tmp_path), progress=False)
    assert len(paths) == 1


def test_parser_errors(tmp_path, rng):
    sims = rng.normal(size=(2,) + INPUT_SHAPE).astype(np.float32)
    nsims = rng.normal(size=(1, 2, N_PARAMS) + INPUT_SHAPE).astype(np.float32)
    writer = TFRecords()
    with pytest.raises(ValueError, match="input_shape"):
        writer.parser(b"")
    fiducial = write_fiducial(writer, sims, tmp_path)
    numerical = write_numerical(writer, nsims, tmp_path)
    for bad, error in ((None, ValueError), (0, ValueError), (1.5, TypeError)):
        with pytest.raises(error, match="n_params"):
            read(fiducial, partial(writer.derivative_parser, n_params=bad))
    with pytest.raises(TypeError, match="n_params"):
        read(numerical, partial(writer.numerical_derivative_parser, n_params="2"))
    # wrong record kinds or sizes fail loudly, never silently
    with pytest.raises(tf.errors.InvalidArgumentError, match="derivative"):
        read(fiducial, writer.numerical_derivative_parser)
    with pytest.raises(tf.errors.InvalidArgumentError, match="n_params"):
        read(numerical, partial(writer.numerical_derivative_parser, n_params=N_PARAMS - 1))
    with pytest.raises(tf.errors.InvalidArgumentError):
        read(fiducial, partial(writer.derivative_parser, n_params=N_PARAMS))


def test_serialiser_needs_open_record():
    with pytest.raises(RuntimeError, match="write_record"):
        TFRecords().fiducial_serialiser(0, 0, fid)


def test_import_does_not_import_tensorflow():
    code = ("import sys, imnn.tfrecords; from imnn.tfrecords import TFRecords; "
            "w = TFRecords(input_shape=(2,)); w.get_file(None, None, True, False); "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- damaged files

@pytest.mark.parametrize("damage, what", [
    (lambda raw: raw[:-30], r"truncated record at \d+"),
    (lambda raw: raw[:150] + bytes([raw[150] ^ 0x10]) + raw[151:], r"corrupted record at \d+"),
])
def test_damaged_file_is_reported_with_its_path_and_stream(tmp_path, rng, damage, what):
    import jax
    import optax

    import imnn
    n_s, n_d, n_per_device = 4, 2, 2
    writer = TFRecords(record_size=1.0)
    streams = {}
    for prefix in ("", "validation_"):
        fiducial = rng.normal(size=(n_s,) + INPUT_SHAPE)
        derivative = rng.normal(size=(n_d, 2, N_PARAMS) + INPUT_SHAPE)
        paths = (write_fiducial(writer, fiducial, tmp_path, filename=prefix + "fiducial")
                 + write_numerical(writer, derivative, tmp_path, filename=prefix + "derivative"))
        streams[prefix] = paths
    damaged = streams["validation_"][1]
    with open(damaged, "rb") as file:
        raw = file.read()
    with open(damaged, "wb") as file:
        file.write(damage(raw))

    def iterators(path, parse):
        return [tf.data.TFRecordDataset([path]).map(parse).batch(n_per_device).repeat()
                .as_numpy_iterator()]

    model = imnn.DatasetNumericalGradientIMNN(
        n_s, n_d, N_PARAMS, 2, INPUT_SHAPE, np.zeros(N_PARAMS),
        imnn.nn.serial(imnn.nn.Flatten, imnn.nn.Dense(2)), optax.adam(1e-3),
        jax.random.PRNGKey(0), iterators(streams[""][0], writer.parser),
        iterators(streams[""][1], writer.parser), np.full(N_PARAMS, 0.1),
        jax.devices()[0], jax.devices()[:1], n_per_device,
        validation_fiducial=iterators(streams["validation_"][0], writer.parser),
        validation_derivative=iterators(damaged, writer.parser))
    model.get_summaries(validate=False)               # the training files are intact
    with pytest.raises(ValueError, match=(
            r"^validation_derivative\[0\] \(the iterator of device 0\), batch \d of its 4 per "
            r"epoch: reading failed: the TFRecords file " + re.escape(damaged)
            + r" is damaged \(" + what + r"[^)]*\)\. Rewrite it")):
        model.get_summaries(validate=True)
