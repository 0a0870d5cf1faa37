"""Per-iteration time of DatasetGradientIMNN by data source, side by side: the same
simulations (the seed's: n_s = 1000, n_d = 100, 10 draws, n_per_device = 100, one
device, MLP 128-128, Adam 1e-3, validation set of the same size) read

- from memory through tf.data (``from_tensor_slices``, the seed's first recipe),
- from one .npy file per simulation through a tf.data generator (second recipe),
  without and with ``.cache()``,
- from TFRecords written by ``imnn.TFRecords`` (third recipe),
- from plain Python iterators over numpy arrays (no TensorFlow),

against ``AggregatedGradientIMNN`` on the same arrays (compiled whole-fit loop).

    .venv/bin/python -m pytest bench/bench_datasets.py --benchmark-only

The per-iteration figure is in the ``ms/it`` extra column: each round runs a
fixed number of iterations (no early stopping) after a warm-up fit that
compiles everything and fills any cache. Each iteration reads every training
iterator twice (pass 1 and pass 2) and every validation iterator once.
"""
import glob
from functools import partial
from itertools import cycle

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import imnn
from imnn.utils import value_and_jacfwd

tf = pytest.importorskip("tensorflow")

N_S, N_D, N_PARAMS, INPUT_SHAPE, N_PER_DEVICE = 1000, 100, 2, (10,), 100
ITERATIONS = 100
SOURCES = ["aggregated arrays", "python iterators", "tf memory", "tf npy", "tf npy cached",
           "tf records"]


def simulator(key, θ):
    return θ[0] + jax.random.normal(key, INPUT_SHAPE) * jnp.sqrt(θ[1])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Training and validation simulations, as arrays, .npy files and TFRecords."""
    directory = tmp_path_factory.mktemp("bench_datasets")
    keys = jax.random.split(jax.random.PRNGKey(0), 2 * N_S)
    θ = jnp.array([0.0, 1.0])
    arrays = {}
    writer = imnn.TFRecords(record_size=200)
    for prefix, ks in (("", keys[:N_S]), ("validation_", keys[N_S:])):
        d, dd = jax.vmap(value_and_jacfwd(simulator, argnums=1), in_axes=(0, None))(ks, θ)
        d, dd = np.asarray(d), np.asarray(dd[:N_D])
        parts = {"fiducial": d[:N_D], "derivative": dd, "remaining": d[N_D:]}
        for name, array in parts.items():
            arrays[prefix + name] = array
            for i, simulation in enumerate(array):
                np.save(f"{directory}/{prefix}{name}_{i:04d}.npy", simulation)
            writer.write_record(len(array), lambda seed, a=array: a[seed],
                                directory=str(directory), filename=prefix + name,
                                progress=False)
    return directory, arrays, writer


def generator(directory, filename, total):
    for i in range(total):
        yield np.load(f"{directory}/{filename}_{i:04d}.npy")


def iterators(source, data, prefix, n_devices):
    """(main, remaining) lists for one data set, device j reading chunk j."""
    directory, arrays, writer = data
    sizes = {"fiducial": N_D, "derivative": N_D, "remaining": N_S - N_D}

    def batches(name, i):
        array = arrays[prefix + name]
        return np.reshape(array, (n_devices, -1, N_PER_DEVICE) + array.shape[1:])[i]

    def dataset(name, i):
        n = sizes[name] // n_devices
        if source == "tf memory":
            return tf.data.Dataset.from_tensor_slices(batches(name, i))
        if source == "tf records":
            parse = (partial(writer.derivative_parser, n_params=N_PARAMS)
                     if name == "derivative" else writer.parser)
            files = sorted(glob.glob(f"{directory}/{prefix}{name}_*.tfrecords"))
            simulations = tf.data.TFRecordDataset(files, num_parallel_reads=1).map(parse)
        else:
            simulations = tf.data.Dataset.from_generator(
                partial(generator, directory, prefix + name, sizes[name]), tf.float32)
        return simulations.skip(i * n).take(n).batch(N_PER_DEVICE)

    def stream(names, i):
        if source == "python iterators":
            parts = [batches(name, i) for name in names]
            return cycle(list(zip(*parts)) if len(parts) > 1 else list(parts[0]))
        parts = [dataset(name, i) for name in names]
        d = tf.data.Dataset.zip(tuple(parts)) if len(parts) > 1 else parts[0]
        if source == "tf npy cached":
            d = d.cache()
        return d.prefetch(tf.data.AUTOTUNE).repeat().as_numpy_iterator()

    return ([stream(("fiducial", "derivative"), i) for i in range(n_devices)],
            [stream(("remaining",), i) for i in range(n_devices)])


def build(source, data):
    devices = jax.devices()[:1]
    model = imnn.nn.serial(imnn.nn.Dense(128), imnn.nn.LeakyRelu(), imnn.nn.Dense(128),
                           imnn.nn.LeakyRelu(), imnn.nn.Dense(N_PARAMS))
    common = (N_S, N_D, N_PARAMS, N_PARAMS, INPUT_SHAPE, np.array([0.0, 1.0]), model,
              optax.adam(1e-3), jax.random.PRNGKey(1))
    aggregation = (devices[0], devices, N_PER_DEVICE)
    if source == "aggregated arrays":
        arrays = data[1]
        train, validation = (
            (np.concatenate([arrays[p + "fiducial"], arrays[p + "remaining"]]),
             arrays[p + "derivative"]) for p in ("", "validation_"))
        return imnn.AggregatedGradientIMNN(*common, *train, *aggregation, *validation)
    main, remaining = iterators(source, data, "", len(devices))
    validation_main, validation_remaining = iterators(source, data, "validation_", len(devices))
    return imnn.DatasetGradientIMNN(*common, main, remaining, *aggregation, validation_main,
                                    validation_remaining)


@pytest.mark.parametrize("source", SOURCES)
def test_fit_iteration(benchmark, source, data):
    fitter = build(source, data)
    kwargs = dict(min_iterations=10 ** 6, max_iterations=ITERATIONS)
    fitter.fit(10.0, 0.1, **kwargs)  # warm-up: compile, fill caches
    benchmark.pedantic(fitter.fit, args=(10.0, 0.1), kwargs=kwargs, rounds=3, iterations=1)
    benchmark.extra_info["ms/it"] = 1e3 * benchmark.stats.stats.min / ITERATIONS
    benchmark.extra_info["iterations"] = ITERATIONS
