"""The Dataset classes (docs/design/behaviour.md#datasets-and-tfrecords), fed by the seed's
own recipes (tf.data from memory, a .npy generator, TFRecords) and by plain Python
iterators, with every dataset check.

The recipes below are the seed document's code as written, apart from the
device list (``jax.devices()[:k]`` of the simulated CPU devices), the optimiser
(optax.adam) and ``n_per_device = 100 // k`` (100 does not split n_d = 100 over
two devices). Where a recipe as written is misbuilt, a test shows the clear
error it now gets, and a ``_fixed`` variant (the smallest change that makes it
right) fits:

- the exact-derivative data generation never saves the ``remaining``
  simulations its generator and TFRecords recipes read: saved here;
- the .npy generator recipes (both classes) give every device the same first
  chunk (``for _ in range(n_devices)``, no skip): fine for one device only;
- the exact TFRecords reader reads all n_s fiducial simulations from the
  ``fiducial`` records, which its writer filled with the n_d derivative ones,
  and never skips the derivative records per device;
- the numerical TFRecords validation readers skip by a stale ``i``
  (``for _ in range(n_devices)``): the one the save loop left behind.
"""
import contextlib
import glob
import os
import subprocess
import sys
import textwrap
from functools import partial
from itertools import count, cycle

import jax
import numpy as onp
import optax
import pytest

import imnn
from imnn.utils import value_and_jacfwd

from conftest import mlp

n_s, n_d, n_params, input_shape = 1000, 100, 2, (10,)
λ, ε = 10.0, 0.1


@contextlib.contextmanager
def cwd(path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def layout(k):
    devices = jax.devices()[:k]
    return devices, len(devices), 100 // k


def model_arguments(θ_fid, n_s=n_s, n_d=n_d):
    return dict(n_s=n_s, n_d=n_d, n_params=n_params, n_summaries=n_params,
                input_shape=input_shape, θ_fid=θ_fid, model=mlp(128, 2, imnn.nn.Elu()),
                optimiser=optax.adam(1e-3), key_or_state=jax.random.PRNGKey(0))


# --- the seed's data -----------------------------------------------------------------

def simulator(key, θ):
    import jax.numpy as np
    return θ[0] + (jax.random.normal(key, shape=input_shape) * np.sqrt(θ[1]))


def numpy_copies(*arrays):
    """Not in the seed: iterating over a jax array costs milliseconds per row, so the
    save loops below iterate over numpy copies of the same values."""
    return tuple(onp.asarray(a) for a in arrays)


def seed_exact_data():
    """The seed's data generation for DatasetGradientIMNN, run in a directory with tmp/."""
    import jax.numpy as np
    θ_fid = np.array([0., 1.])
    get_sims_and_ders = value_and_jacfwd(simulator, argnums=1)
    rng = jax.random.PRNGKey(0)
    rng, data_key = jax.random.split(rng)
    data_keys = np.array(jax.random.split(rng, num=2 * n_s))
    fiducial, derivative = jax.vmap(get_sims_and_ders)(
        data_keys[:n_d], np.repeat(np.expand_dims(θ_fid, 0), n_d, axis=0))
    remaining = jax.vmap(simulator)(
        data_keys[n_d:n_s], np.repeat(np.expand_dims(θ_fid, 0), n_s - n_d, axis=0))
    validation_fiducial, validation_derivative = jax.vmap(get_sims_and_ders)(
        data_keys[n_s:n_s + n_d], np.repeat(np.expand_dims(θ_fid, 0), n_d, axis=0))
    validation_remaining = jax.vmap(simulator)(
        data_keys[n_s + n_d:], np.repeat(np.expand_dims(θ_fid, 0), n_s - n_d, axis=0))
    (fiducial, derivative, remaining, validation_fiducial, validation_derivative,
     validation_remaining) = numpy_copies(fiducial, derivative, remaining, validation_fiducial,
                                          validation_derivative, validation_remaining)
    for i, (simulation, validation_simulation) in enumerate(zip(
            fiducial, validation_fiducial)):
        np.save(f"tmp/fiducial_{i:04d}.npy", simulation)
        np.save(f"tmp/validation_fiducial_{i:04d}.npy", validation_simulation)
    for i, (simulation, validation_simulation) in enumerate(zip(
            derivative, validation_derivative)):
        np.save(f"tmp/derivative_{i:04d}.npy", simulation)
        np.save(f"tmp/validation_derivative_{i:04d}.npy", validation_simulation)
    # Not in the seed, which reads these files but never writes them:
    for i, (simulation, validation_simulation) in enumerate(zip(
            remaining, validation_remaining)):
        np.save(f"tmp/remaining_{i:04d}.npy", simulation)
        np.save(f"tmp/validation_remaining_{i:04d}.npy", validation_simulation)
    return dict(θ_fid=θ_fid, fiducial=fiducial, derivative=derivative, remaining=remaining,
                validation_fiducial=validation_fiducial,
                validation_derivative=validation_derivative,
                validation_remaining=validation_remaining)


def seed_numerical_data():
    """The seed's data generation for DatasetNumericalGradientIMNN."""
    import jax.numpy as np
    θ_fid = np.array([0., 1.])
    δθ = np.array([0.1, 0.1])
    θ_der = (θ_fid + np.einsum(
        "i,jk->ijk", np.array([-1., 1.]), np.diag(δθ) / 2.)).reshape((-1, 2))
    rng = jax.random.PRNGKey(0)
    rng, data_key = jax.random.split(rng)
    data_keys = np.array(jax.random.split(rng, num=2 * n_s))
    fiducial = jax.vmap(simulator)(
        data_keys[:n_s], np.repeat(np.expand_dims(θ_fid, 0), n_s, axis=0))
    validation_fiducial = jax.vmap(simulator)(
        data_keys[n_s:], np.repeat(np.expand_dims(θ_fid, 0), n_s, axis=0))
    numerical_derivative = jax.vmap(simulator)(
        np.repeat(data_keys[:n_d], θ_der.shape[0], axis=0),
        np.tile(θ_der, (n_d, 1))).reshape(
            (n_d, 2, n_params) + input_shape)
    validation_numerical_derivative = jax.vmap(simulator)(
        np.repeat(data_keys[n_s:n_d + n_s], θ_der.shape[0], axis=0),
        np.tile(θ_der, (n_d, 1))).reshape(
            (n_d, 2, n_params) + input_shape)
    (fiducial, validation_fiducial, numerical_derivative,
     validation_numerical_derivative) = numpy_copies(
        fiducial, validation_fiducial, numerical_derivative, validation_numerical_derivative)
    for i, (simulation, validation_simulation) in enumerate(
            zip(fiducial, validation_fiducial)):
        np.save(f"tmp/fiducial_{i:04d}.npy", simulation)
        np.save(f"tmp/validation_fiducial_{i:04d}.npy", validation_simulation)
    for i, (simulation, validation_simulation) in enumerate(
            zip(numerical_derivative, validation_numerical_derivative)):
        np.save(f"tmp/numerical_derivative_{i:04d}.npy", simulation)
        np.save(f"tmp/validation_numerical_derivative_{i:04d}.npy", validation_simulation)
    return dict(θ_fid=θ_fid, δθ=δθ, fiducial=fiducial, numerical_derivative=numerical_derivative,
                validation_fiducial=validation_fiducial,
                validation_numerical_derivative=validation_numerical_derivative, stale_i=i)


def seed_exact_records():
    """The seed's TFRecords writer recipe for DatasetGradientIMNN."""
    import jax.numpy as np

    from imnn import TFRecords
    record_size = 200  # Mb
    writer = TFRecords.TFRecords(record_size=record_size)

    def get_simulation(seed, directory=None, filename=None):
        return np.load(f"{directory}/{filename}_{seed:04d}.npy")

    writer.write_record(
        n_sims=n_d,
        get_simulation=lambda seed: get_simulation(
            seed, directory="tmp", filename="fiducial"),
        directory="tmp",
        filename="fiducial")
    writer.write_record(
        n_sims=n_s - n_d,
        get_simulation=lambda seed: get_simulation(
            seed, directory="tmp", filename="remaining"),
        directory="tmp",
        filename="remaining")
    writer.write_record(
        n_sims=n_d,
        get_simulation=lambda seed: get_simulation(
            seed, directory="tmp", filename="derivative"),
        directory="tmp",
        filename="derivative")
    writer.write_record(
        n_sims=n_d,
        get_simulation=lambda seed: get_simulation(
            seed, directory="tmp", filename="validation_fiducial"),
        directory="tmp",
        filename="validation_fiducial")
    writer.write_record(
        n_sims=n_s - n_d,
        get_simulation=lambda seed: get_simulation(
            seed, directory="tmp", filename="validation_remaining"),
        directory="tmp",
        filename="validation_remaining")
    writer.write_record(
        n_sims=n_d,
        get_simulation=lambda seed: get_simulation(
            seed, directory="tmp", filename="validation_derivative"),
        directory="tmp",
        filename="validation_derivative")
    return writer


def seed_numerical_records():
    """The seed's TFRecords writer recipe for DatasetNumericalGradientIMNN."""
    import jax.numpy as np

    from imnn import TFRecords
    record_size = 200  # Mb
    writer = TFRecords.TFRecords(record_size=record_size)

    def get_fiducial(seed, directory=None, filename=None):
        return np.load(f"{directory}/{filename}_{seed:04d}.npy")

    def get_derivative(seed, der, params, directory=None, filename=None):
        return np.load(
            f"{directory}/{filename}_{seed:04d}.npy")[der, params]

    writer.write_record(
        n_sims=n_s,
        get_simulation=lambda seed: get_fiducial(
            seed, directory="tmp", filename="fiducial"),
        fiducial=True,
        directory="tmp",
        filename="fiducial")
    writer.write_record(
        n_sims=n_d,
        get_simulation=lambda seed, der, param: get_derivative(
            seed, der, param, directory="tmp", filename="numerical_derivative"),
        fiducial=False,
        n_params=n_params,
        directory="tmp",
        filename="numerical_derivative")
    writer.write_record(
        n_sims=n_s,
        get_simulation=lambda seed: get_fiducial(
            seed, directory="tmp", filename="validation_fiducial"),
        fiducial=True,
        directory="tmp",
        filename="validation_fiducial")
    writer.write_record(
        n_sims=n_d,
        get_simulation=lambda seed, der, param: get_derivative(
            seed, der, param, directory="tmp",
            filename="validation_numerical_derivative"),
        fiducial=False,
        n_params=n_params,
        directory="tmp",
        filename="validation_numerical_derivative")
    return writer


@pytest.fixture(scope="module")
def tf():
    """TensorFlow, with tf.data's autotuning off for this module's iterators.

    Autotuning runs a background thread per iterator, and destroying an iterator waits
    for that thread to wake (``RootDataset::Iterator`` joins it; seen with py-spy), which
    after a fit of a thousand iterations took 4-14 s per test here and up to 40 s in the
    suite, with next to no CPU. It changes no element the recipes feed, only how many
    elements ``prefetch(AUTOTUNE)`` keeps ready."""
    tf = pytest.importorskip("tensorflow")
    options = tf.data.Options()
    options.autotune.enabled = False
    as_numpy_iterator = tf.data.Dataset.as_numpy_iterator

    def without_autotuning(dataset):
        return as_numpy_iterator(dataset.with_options(options))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tf.data.Dataset, "as_numpy_iterator", without_autotuning)
        yield tf


@pytest.fixture(autouse=True)
def _release_readers(monkeypatch):
    """Free a test's tf.data iterators (kept alive by reference cycles or a caught
    exception's frames) while the working directory is still the one their relative
    file names point into: otherwise their prefetch threads go on reading after the
    test, from the wrong directory, alongside the next tests."""
    yield
    import gc
    gc.collect()


@pytest.fixture(scope="module")
def exact_seed(tmp_path_factory, tf):
    base = tmp_path_factory.mktemp("exact")
    (base / "tmp").mkdir()
    with cwd(base):
        data = seed_exact_data()
        data["writer"] = seed_exact_records()
    return base, data


@pytest.fixture(scope="module")
def numerical_seed(tmp_path_factory, tf):
    base = tmp_path_factory.mktemp("numerical")
    (base / "tmp").mkdir()
    with cwd(base):
        data = seed_numerical_data()
        data["writer"] = seed_numerical_records()
    return base, data


def generator(directory, filename, total):
    """The seed's generator, loading with numpy rather than jax.numpy: JAX called from
    TensorFlow's generator threads can deadlock (seen here: a hung next() and a hung
    interpreter exit)."""
    np = onp
    i = 0
    while i < total:
        yield np.load(f"{directory}/{filename}_{i:04d}.npy")
        i += 1


# --- DatasetGradientIMNN recipes ---------------------------------------------------------
# Each returns (main, remaining, validation_main, validation_remaining).

def exact_memory(tf, devices, n_per_device, data):
    n_devices = len(devices)
    fiducial, derivative, remaining = data["fiducial"], data["derivative"], data["remaining"]
    validation_fiducial = data["validation_fiducial"]
    validation_derivative = data["validation_derivative"]
    validation_remaining = data["validation_remaining"]
    batch_shape = (
        n_devices,
        n_d // (n_devices * n_per_device),
        n_per_device) + input_shape
    remaining_batch_shape = (
        n_devices,
        (n_s - n_d) // (n_devices * n_per_device),
        n_per_device) + input_shape
    main = [
        tf.data.Dataset.from_tensor_slices(
            (fiducial, derivative)).repeat().as_numpy_iterator()
        for fiducial, derivative in zip(
            fiducial.reshape(batch_shape),
            derivative.reshape(batch_shape + (n_params,)))]
    remaining = [
        tf.data.Dataset.from_tensor_slices(fiducial
                                           ).repeat().as_numpy_iterator()
        for fiducial in remaining.reshape(
            remaining_batch_shape)]
    validation_main = [
        tf.data.Dataset.from_tensor_slices(
            (fiducial, derivative)).repeat().as_numpy_iterator()
        for fiducial, derivative in zip(
            validation_fiducial.reshape(batch_shape),
            validation_derivative.reshape(batch_shape + (n_params,)))]
    validation_remaining = [
        tf.data.Dataset.from_tensor_slices(fiducial
                                           ).repeat().as_numpy_iterator()
        for fiducial in validation_remaining.reshape(
            remaining_batch_shape)]
    return main, remaining, validation_main, validation_remaining


def exact_npy(tf, devices, n_per_device, data):
    n_devices = len(devices)
    main = [
        tf.data.Dataset.zip((
            tf.data.Dataset.from_generator(
                partial(
                    generator,
                    "tmp",
                    "fiducial",
                    n_d),
                tf.float32),
            tf.data.Dataset.from_generator(
                partial(
                    generator,
                    "tmp",
                    "derivative",
                    n_d),
                tf.float32))
        ).take(n_d // n_devices
               ).batch(n_per_device
                       ).repeat(
        ).as_numpy_iterator()
        for _ in range(n_devices)]
    remaining = [
        tf.data.Dataset.from_generator(
            partial(
                generator,
                "tmp",
                "remaining",
                n_s - n_d),
            tf.float32
        ).take((n_s - n_d) // n_devices
               ).batch(n_per_device
                       ).repeat(
        ).as_numpy_iterator()
        for _ in range(n_devices)]
    validation_main = [
        tf.data.Dataset.zip((
            tf.data.Dataset.from_generator(
                partial(
                    generator,
                    "tmp",
                    "validation_fiducial",
                    n_d),
                tf.float32),
            tf.data.Dataset.from_generator(
                partial(
                    generator,
                    "tmp",
                    "validation_derivative",
                    n_d),
                tf.float32))
        ).take(n_d // n_devices
               ).batch(n_per_device
                       ).repeat(
        ).as_numpy_iterator()
        for _ in range(n_devices)]
    validation_remaining = [
        tf.data.Dataset.from_generator(
            partial(
                generator,
                "tmp",
                "validation_remaining",
                n_s - n_d),
            tf.float32
        ).take((n_s - n_d) // n_devices
               ).batch(n_per_device
                       ).repeat(
        ).as_numpy_iterator()
        for _ in range(n_devices)]
    return main, remaining, validation_main, validation_remaining


def exact_npy_fixed(tf, devices, n_per_device, data):
    """exact_npy with each device skipping to its own chunk (and cache/prefetch, as the
    seed suggests)."""
    n_devices = len(devices)

    def simulations(filename, n, i):
        return tf.data.Dataset.from_generator(
            partial(generator, "tmp", filename, n), tf.float32
        ).skip(i * n // n_devices).take(n // n_devices)

    def main_set(prefix):
        return [tf.data.Dataset.zip((simulations(prefix + "fiducial", n_d, i),
                                     simulations(prefix + "derivative", n_d, i))
                                    ).batch(n_per_device).cache().prefetch(tf.data.AUTOTUNE
                                                                           ).repeat(
                                    ).as_numpy_iterator()
                for i in range(n_devices)]

    def remaining_set(prefix):
        return [simulations(prefix + "remaining", n_s - n_d, i).batch(n_per_device).cache(
        ).prefetch(tf.data.AUTOTUNE).repeat().as_numpy_iterator() for i in range(n_devices)]

    return main_set(""), remaining_set(""), main_set("validation_"), remaining_set("validation_")


def exact_tfrecords(tf, devices, n_per_device, data):
    n_devices = len(devices)
    writer = data["writer"]
    fiducial = [
        tf.data.TFRecordDataset(
            sorted(glob.glob("tmp/fiducial_*.tfrecords")),
            num_parallel_reads=1
        ).map(writer.parser
              ).skip(i * n_s // n_devices
                     ).take(n_s // n_devices)
        for i in range(n_devices)]
    main = [
        tf.data.Dataset.zip((
            fiducial[i],
            tf.data.TFRecordDataset(
                sorted(glob.glob("tmp/derivative_*.tfrecords")),
                num_parallel_reads=1).map(
                    lambda example: writer.derivative_parser(
                        example, n_params=n_params)))
        ).take(n_d // n_devices
               ).batch(n_per_device
                       ).repeat(
        ).as_numpy_iterator()
        for i in range(n_devices)]
    remaining = [
        fiducial[i].skip(n_d // n_devices
                         ).take((n_s - n_d) // n_devices
                                ).batch(n_per_device
                                        ).repeat(
        ).as_numpy_iterator()
        for i in range(n_devices)]
    validation_fiducial = [
        tf.data.TFRecordDataset(
            sorted(glob.glob("tmp/validation_fiducial_*.tfrecords")),
            num_parallel_reads=1
        ).map(writer.parser
              ).skip(i * n_s // n_devices
                     ).take(n_s // n_devices)
        for i in range(n_devices)]
    validation_main = [
        tf.data.Dataset.zip((
            validation_fiducial[i],
            tf.data.TFRecordDataset(
                sorted(glob.glob("tmp/validation_derivative_*.tfrecords")),
                num_parallel_reads=1).map(
                    lambda example: writer.derivative_parser(
                        example, n_params=n_params)))
        ).take(n_d // n_devices
               ).batch(n_per_device
                       ).repeat(
        ).as_numpy_iterator()
        for i in range(n_devices)]
    validation_remaining = [
        validation_fiducial[i].skip(n_d // n_devices
                                    ).take((n_s - n_d) // n_devices
                                           ).batch(n_per_device
                                                   ).repeat(
        ).as_numpy_iterator()
        for i in range(n_devices)]
    return main, remaining, validation_main, validation_remaining


def exact_tfrecords_fixed(tf, devices, n_per_device, data):
    """exact_tfrecords reading the records its writer wrote: main from the fiducial
    and derivative records, remaining from the remaining records, each device
    skipping to its own chunk (and cache, as the seed suggests)."""
    n_devices = len(devices)
    writer = data["writer"]

    def records(name, n, i, parse=writer.parser):
        return tf.data.TFRecordDataset(sorted(glob.glob(f"tmp/{name}_*.tfrecords")),
                                       num_parallel_reads=1).map(parse).skip(
            i * n // n_devices).take(n // n_devices)

    derivative_parser = partial(writer.derivative_parser, n_params=n_params)
    sets = []
    for prefix in ("", "validation_"):
        sets.append([tf.data.Dataset.zip((
            records(prefix + "fiducial", n_d, i),
            records(prefix + "derivative", n_d, i, derivative_parser))
        ).batch(n_per_device).cache().repeat().as_numpy_iterator() for i in range(n_devices)])
        sets.append([records(prefix + "remaining", n_s - n_d, i).batch(n_per_device).cache(
        ).repeat().as_numpy_iterator() for i in range(n_devices)])
    return tuple(sets)


# --- DatasetNumericalGradientIMNN recipes ---------------------------------------------
# Each returns (fiducial, derivative, validation_fiducial, validation_derivative).

def numerical_memory(tf, devices, n_per_device, data):
    n_devices = len(devices)
    fiducial, numerical_derivative = data["fiducial"], data["numerical_derivative"]
    validation_fiducial = data["validation_fiducial"]
    validation_numerical_derivative = data["validation_numerical_derivative"]
    fiducial_shape = (
        n_devices,
        n_s // (n_devices * n_per_device),
        n_per_device) + input_shape
    derivative_shape = (
        n_devices,
        2 * n_params * n_d // (n_devices * n_per_device),
        n_per_device) + input_shape
    fiducial = [
        tf.data.Dataset.from_tensor_slices(
            fid).repeat().as_numpy_iterator()
        for fid in fiducial.reshape(fiducial_shape)]
    numerical_derivative = [
        tf.data.Dataset.from_tensor_slices(
            der).repeat().as_numpy_iterator()
        for der in numerical_derivative.reshape(derivative_shape)]
    validation_fiducial = [
        tf.data.Dataset.from_tensor_slices(
            fid).repeat().as_numpy_iterator()
        for fid in validation_fiducial.reshape(fiducial_shape)]
    validation_numerical_derivative = [
        tf.data.Dataset.from_tensor_slices(
            der).repeat().as_numpy_iterator()
        for der in validation_numerical_derivative.reshape(
            derivative_shape)]
    return (fiducial, numerical_derivative, validation_fiducial,
            validation_numerical_derivative)


def numerical_npy(tf, devices, n_per_device, data):
    n_devices = len(devices)
    fiducial = [
        tf.data.Dataset.from_generator(
            partial(
                generator,
                "tmp",
                "fiducial",
                n_s),
            tf.float32
        ).take(n_s // n_devices
               ).batch(n_per_device
                       ).repeat(
        ).as_numpy_iterator()
        for _ in range(n_devices)]
    numerical_derivative = [
        tf.data.Dataset.from_generator(
            partial(
                generator,
                "tmp",
                "numerical_derivative",
                n_d),
            tf.float32
        ).flat_map(
            lambda x: tf.data.Dataset.from_tensor_slices(x)
        ).flat_map(
            lambda x: tf.data.Dataset.from_tensor_slices(x)
        ).take(2 * n_params * n_d // n_devices
               ).batch(n_per_device
                       ).repeat(
        ).as_numpy_iterator()
        for _ in range(n_devices)]
    validation_fiducial = [
        tf.data.Dataset.from_generator(
            partial(
                generator,
                "tmp",
                "validation_fiducial",
                n_s),
            tf.float32
        ).take(n_s // n_devices
               ).batch(n_per_device
                       ).repeat(
        ).as_numpy_iterator()
        for _ in range(n_devices)]
    validation_numerical_derivative = [
        tf.data.Dataset.from_generator(
            partial(
                generator,
                "tmp",
                "validation_numerical_derivative",
                n_d),
            tf.float32
        ).flat_map(
            lambda x: tf.data.Dataset.from_tensor_slices(x)
        ).flat_map(
            lambda x: tf.data.Dataset.from_tensor_slices(x)
        ).take(2 * n_params * n_d // n_devices
               ).batch(n_per_device
                       ).repeat(
        ).as_numpy_iterator()
        for _ in range(n_devices)]
    return (fiducial, numerical_derivative, validation_fiducial,
            validation_numerical_derivative)


def numerical_npy_fixed(tf, devices, n_per_device, data):
    """numerical_npy with each device skipping to its own chunk (and cache/prefetch,
    as the seed suggests)."""
    n_devices = len(devices)

    def per_device(simulations, n, i):
        return simulations.skip(i * n // n_devices).take(n // n_devices).batch(
            n_per_device).cache().prefetch(tf.data.AUTOTUNE).repeat().as_numpy_iterator()

    def fiducial_set(name):
        return [per_device(tf.data.Dataset.from_generator(
            partial(generator, "tmp", name, n_s), tf.float32), n_s, i)
            for i in range(n_devices)]

    def derivative_set(name):
        return [per_device(tf.data.Dataset.from_generator(
            partial(generator, "tmp", name, n_d), tf.float32
        ).flat_map(tf.data.Dataset.from_tensor_slices
                   ).flat_map(tf.data.Dataset.from_tensor_slices), 2 * n_params * n_d, i)
            for i in range(n_devices)]

    return (fiducial_set("fiducial"), derivative_set("numerical_derivative"),
            fiducial_set("validation_fiducial"), derivative_set("validation_numerical_derivative"))


def numerical_tfrecords(tf, devices, n_per_device, data, i=None):
    """As written, the validation readers use the ``i`` left in scope: by default the
    one the seed's save loop left behind."""
    n_devices = len(devices)
    writer = data["writer"]
    i = data["stale_i"] if i is None else i
    fiducial = [
        tf.data.TFRecordDataset(
            sorted(glob.glob("tmp/fiducial_*.tfrecords")),
            num_parallel_reads=1
        ).map(writer.parser
              ).skip(i * n_s // n_devices
                     ).take(n_s // n_devices
                            ).batch(n_per_device
                                    ).repeat(
        ).as_numpy_iterator()
        for i in range(n_devices)]
    numerical_derivative = [
        tf.data.TFRecordDataset(
            sorted(glob.glob("tmp/numerical_derivative_*.tfrecords")),
            num_parallel_reads=1
        ).map(writer.parser
              ).skip(i * 2 * n_params * n_d // n_devices
                     ).take(2 * n_params * n_d // n_devices
                            ).batch(n_per_device
                                    ).repeat(
        ).as_numpy_iterator()
        for i in range(n_devices)]
    validation_fiducial = [
        tf.data.TFRecordDataset(
            sorted(glob.glob("tmp/validation_fiducial_*.tfrecords")),
            num_parallel_reads=1
        ).map(writer.parser
              ).skip(i * n_s // n_devices
                     ).take(n_s // n_devices
                            ).batch(n_per_device
                                    ).repeat(
        ).as_numpy_iterator()
        for _ in range(n_devices)]
    validation_numerical_derivative = [
        tf.data.TFRecordDataset(
            sorted(glob.glob(
                "tmp/validation_numerical_derivative_*.tfrecords")),
            num_parallel_reads=1
        ).map(writer.parser
              ).skip(i * 2 * n_params * n_d // n_devices
                     ).take(2 * n_params * n_d // n_devices
                            ).batch(n_per_device
                                    ).repeat(
        ).as_numpy_iterator()
        for _ in range(n_devices)]
    return (fiducial, numerical_derivative, validation_fiducial,
            validation_numerical_derivative)


def numerical_tfrecords_fixed(tf, devices, n_per_device, data):
    """numerical_tfrecords with the validation readers' own device index (and cache,
    as the seed suggests)."""
    writer, n_devices = data["writer"], len(devices)

    def records(name, n):
        return [tf.data.TFRecordDataset(sorted(glob.glob(f"tmp/{name}_*.tfrecords")),
                                        num_parallel_reads=1).map(writer.parser).skip(
            i * n // n_devices).take(n // n_devices).batch(n_per_device).cache().repeat(
        ).as_numpy_iterator() for i in range(n_devices)]

    return (records("fiducial", n_s), records("numerical_derivative", 2 * n_params * n_d),
            records("validation_fiducial", n_s),
            records("validation_numerical_derivative", 2 * n_params * n_d))


RECIPES = {
    "exact": {"memory": exact_memory, "npy": exact_npy, "npy_fixed": exact_npy_fixed,
              "tfrecords": exact_tfrecords, "tfrecords_fixed": exact_tfrecords_fixed},
    "numerical": {"memory": numerical_memory, "npy": numerical_npy,
                  "npy_fixed": numerical_npy_fixed, "tfrecords": numerical_tfrecords,
                  "tfrecords_fixed": numerical_tfrecords_fixed},
}

# What each recipe as written does with k devices: None if it is right, else the error.
MISBUILT = {
    ("exact", "npy", 2): (ValueError, r"main\[1\] \(the iterator of device 1\), batch 0 .* "
                                      r"is identical to main\[0\] \(device 0\) batch 0"),
    ("exact", "tfrecords", 1): (ValueError, r"remaining\[0\] .* the iterator ended after 0"),
    ("exact", "tfrecords", 2): (ValueError, r"main\[1\] .* the iterator ended after 0"),
    ("numerical", "npy", 2): (ValueError, r"fiducial\[1\] .* is identical to fiducial\[0\]"),
    ("numerical", "tfrecords", 1): (ValueError, r"validation_fiducial\[0\] .* ended after 0"),
    ("numerical", "tfrecords", 2): (ValueError, r"validation_fiducial\[0\] .* ended after 0"),
}


def build(kind, recipe, k, seed, tf):
    """The Dataset class fed by a recipe, and the Aggregated class on the same arrays.
    Run in the seed's directory (the recipes read tmp/ lazily)."""
    base, data = seed
    devices, n_devices, n_per_device = layout(k)
    streams = None
    if recipe is not None:
        assert os.path.samefile(os.getcwd(), base)
        streams = RECIPES[kind][recipe](tf, devices, n_per_device, data)
    arguments = model_arguments(data["θ_fid"])
    aggregation = dict(host=devices[0], devices=devices, n_per_device=n_per_device)
    if kind == "exact":
        train, validation = (onp.concatenate([data[p + "fiducial"], data[p + "remaining"]])
                             for p in ("", "validation_"))
        aggregated = imnn.AggregatedGradientIMNN(
            **arguments, **aggregation, fiducial=train, derivative=data["derivative"],
            validation_fiducial=validation, validation_derivative=data["validation_derivative"])
        dataset = streams and imnn.DatasetGradientIMNN(**arguments, **aggregation, **dict(zip(
            ("main", "remaining", "validation_main", "validation_remaining"), streams)))
    else:
        aggregated = imnn.AggregatedNumericalGradientIMNN(
            **arguments, **aggregation, δθ=data["δθ"], fiducial=data["fiducial"],
            derivative=data["numerical_derivative"],
            validation_fiducial=data["validation_fiducial"],
            validation_derivative=data["validation_numerical_derivative"])
        dataset = streams and imnn.DatasetNumericalGradientIMNN(
            **arguments, **aggregation, δθ=data["δθ"], **dict(zip(
                ("fiducial", "derivative", "validation_fiducial", "validation_derivative"),
                streams)))
    return dataset, aggregated


def flat(tree):
    return onp.concatenate([onp.ravel(onp.asarray(a, onp.float64))
                            for a in jax.tree.leaves(tree)])


def summaries(model, which):
    """Pass-1 summaries of the training or validation streams, in the order the
    statistics see them."""
    data = model._data(None)
    streams = (model.source.training_streams(data, 0) if which == "train"
               else model.source.validation_streams(data))
    return imnn._fitting.summaries_of(model.executor, model.w, streams, model.source.sizes)


def assert_same_summaries(got, expected, rtol=1e-5):
    for a, b in zip(got, expected):
        a, b = onp.asarray(a, onp.float64), onp.asarray(b, onp.float64)
        onp.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * onp.abs(b).max())


def assert_same_loss_and_gradient(got, expected, rtol):
    (parts, grads), (expected_parts, expected_grads) = got, expected
    for a, b in zip(parts, expected_parts):
        onp.testing.assert_allclose(float(a), float(b), rtol=rtol, atol=rtol)
    g, e = flat(grads), flat(expected_grads)
    assert onp.linalg.norm(g - e) <= rtol * onp.linalg.norm(e)


KINDS = ["exact", "numerical"]
SEEDS = {"exact": "exact_seed", "numerical": "numerical_seed"}
# The tests of one kind's seed data share a worker (make test: --dist loadgroup), so its
# module fixtures (the files, the Aggregated class's statistics) are made once.
SEED_GROUP = {kind: pytest.mark.xdist_group(f"datasets_{kind}_seed") for kind in KINDS}
SEED_KINDS = [pytest.param(kind, marks=SEED_GROUP[kind]) for kind in KINDS]


@pytest.fixture(scope="module")
def aggregated(request):
    """The Aggregated class's statistics on the seed's arrays, per (kind, k)."""
    cache = {}

    def get(kind, k):
        if (kind, k) not in cache:
            model = build(kind, None, k, request.getfixturevalue(SEEDS[kind]), None)[1]
            cache[kind, k] = dict(train=summaries(model, "train"),
                                  validation=summaries(model, "validation"),
                                  loss_and_gradient=model.loss_and_gradient(λ, ε))
        return cache[kind, k]
    return get


def check_recipe(kind, recipe, k, request, tf, aggregated, monkeypatch):
    seed = request.getfixturevalue(SEEDS[kind])
    monkeypatch.chdir(seed[0])
    dataset, _ = build(kind, recipe, k, seed, tf)
    if (kind, recipe, k) in MISBUILT:
        error, message = MISBUILT[kind, recipe, k]
        with pytest.raises(error, match=message):
            dataset.fit(λ, ε, max_iterations=1)
        assert len(dataset.history["detF"]) == 0
        return
    expected = aggregated(kind, k)
    # Two passes: each reads the next epoch of every stream, as each pass of a fit does, and
    # the second epoch must be the first again.
    for _ in range(2):
        assert_same_summaries(summaries(dataset, "train"), expected["train"])
        assert_same_summaries(summaries(dataset, "validation"), expected["validation"])
    if recipe == "memory" and k == 2:
        assert_same_loss_and_gradient(dataset.loss_and_gradient(λ, ε),
                                      expected["loss_and_gradient"], rtol=1e-4)


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("recipe", ["memory", "npy", "tfrecords"])
@pytest.mark.parametrize("kind", SEED_KINDS)
def test_seed_recipe_as_written(kind, recipe, k, request, tf, aggregated, monkeypatch):
    """Right recipes feed the Aggregated class's data in its order (summaries equal
    element by element; with two devices, loss and gradient too); misbuilt ones
    fail clearly during the first iteration."""
    check_recipe(kind, recipe, k, request, tf, aggregated, monkeypatch)


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("recipe", ["npy_fixed", "tfrecords_fixed"])
@pytest.mark.parametrize("kind", SEED_KINDS)
def test_fixed_seed_recipe_feeds_the_aggregated_data(kind, recipe, k, request, tf, aggregated,
                                                     monkeypatch):
    check_recipe(kind, recipe, k, request, tf, aggregated, monkeypatch)


@SEED_GROUP["numerical"]
def test_stale_device_index_in_seed_validation_recipe_is_caught(numerical_seed, tf,
                                                                 monkeypatch):
    """The seed's numerical TFRecords validation readers skip by an ``i`` that is
    not the device's: with i = 0 every device reads chunk 0."""
    base, data = numerical_seed
    monkeypatch.chdir(base)
    devices, _, n_per_device = layout(2)
    streams = numerical_tfrecords(tf, devices, n_per_device, data, i=0)
    dataset = imnn.DatasetNumericalGradientIMNN(
        **model_arguments(data["θ_fid"]), δθ=data["δθ"], host=devices[0], devices=devices,
        n_per_device=n_per_device, fiducial=streams[0], derivative=streams[1],
        validation_fiducial=streams[2], validation_derivative=streams[3])
    with pytest.raises(ValueError, match=r"validation_fiducial\[1\] \(the iterator of device "
                                         r"1\), batch 0 .* is identical to "
                                         r"validation_fiducial\[0\] \(device 0\) batch 0"):
        dataset.fit(λ, ε, max_iterations=1)
    assert len(dataset.history["detF"]) == 0


# The _fixed recipes fit with .cache() (as the seed suggests): uncached, every
# iteration loads or parses each of the ~3000 files or records three times
# (bench/bench_datasets.py measures that). On two devices only the in-memory recipe
# fits: test_fixed_seed_recipe_feeds_the_aggregated_data shows that the file recipes
# feed the very same data on two devices, element by element, so their fits would
# repeat it (and took a quarter of the suite's time). The same test shows it for one
# device, over two epochs: the file recipes' fits on one device repeat the in-memory
# recipe's fit of the same kind. The in-memory recipe on two devices feeds the data, loss
# and gradient of the Aggregated class (test_seed_recipe_as_written[...-memory-2]), a
# Dataset class fits as the Aggregated class does (test_fit_equals_aggregated_fit) and
# the number of devices does not change the gradient (test_aggregation.py): its fit
# repeats the one-device fit. And the in-memory recipe on one device feeds the Aggregated
# class's data element by element (test_seed_recipe_as_written[...-memory-1]), a Dataset
# class fits as the Aggregated class does, the Aggregated class's gradient is the
# in-memory class's (test_aggregation.py), and the in-memory classes reach the analytic
# Fisher information (test_anchors.py): so the one-device in-memory fits repeat what make
# test proves too. All these fits are marked redundant (`pytest -m redundant` runs them,
# 40-100 CPU seconds each), which keeps CI inside its time limit.
FITS = [(kind, recipe, k) for kind in KINDS for k in (1, 2)
        for recipe in ("memory", "npy_fixed", "tfrecords_fixed")
        if k == 1 or recipe == "memory"]
FIT_MARKS = {(kind, recipe, k): [SEED_GROUP[kind], pytest.mark.redundant]
             for kind, recipe, k in FITS}


@pytest.mark.slow
@pytest.mark.parametrize("kind, recipe, k", [pytest.param(*fit, marks=FIT_MARKS[fit])
                                            for fit in FITS])
def test_seed_recipe_fits_the_analytic_fisher(kind, recipe, k, request, tf, monkeypatch):
    """Validation det F ≥ 40 (80 % of the analytic 50) within 1500 iterations. With
    n_d = 100 derivative simulations the validation det F of even the optimal
    summaries scatters by ~±15 % around 50, so 40 leaves room for that and for an
    unfinished fit; a misordered or mispaired stream stays far below."""
    seed = request.getfixturevalue(SEEDS[kind])
    monkeypatch.chdir(seed[0])
    dataset, _ = build(kind, recipe, k, seed, tf)
    dataset.fit(λ, ε, patience=100, min_iterations=100, max_iterations=1500)
    print(f"{kind}-{recipe}-{k}: max val det F {dataset.history['max_detF']:.1f} after "
          f"{len(dataset.history['detF'])} iterations")
    assert dataset.history["max_detF"] >= 40.0, dataset.history["max_detF"]
    assert onp.linalg.det(dataset.F) == pytest.approx(dataset.history["max_detF"], rel=1e-3)


# --- plain Python iterators: the two passes, the fit, the checks ------------------------

N_S, N_D = 48, 24


def per_device(array, n_devices, n_per_device):
    """The seed's in-memory layout without TensorFlow: iterator j cycles through the
    batches of the j-th contiguous chunk."""
    n_batches = len(array) // (n_devices * n_per_device)
    chunks = onp.reshape(array, (n_devices, n_batches, n_per_device) + array.shape[1:])
    return [cycle(list(chunk)) for chunk in chunks]


def pairs(fiducial, derivative, n_devices, n_per_device):
    return [cycle(list(zip(a, b))) for a, b in zip(
        *(onp.reshape(x, (n_devices, -1, n_per_device) + x.shape[1:])
          for x in (fiducial, derivative)))]


def small(kind, n_devices, n_per_device, n_s=N_S, n_d=N_D, validation=False, backend="jax",
          model=None, change=None):
    """(Dataset class, Aggregated class) on the same small arrays, built from plain
    iterators. ``change(streams)`` may alter the Dataset class's streams first."""
    from conftest import exact_data, numerical_data, δθ, θ_FID
    devices = jax.devices()[:n_devices]
    arguments = dict(n_s=n_s, n_d=n_d, n_params=2, n_summaries=2, input_shape=(10,),
                     θ_fid=θ_FID, model=model or mlp(16, 2, imnn.nn.Tanh),
                     optimiser=optax.adam(1e-3), key_or_state=jax.random.PRNGKey(0),
                     host=devices[0], devices=devices, n_per_device=n_per_device,
                     backend=backend)
    sets = [("", 1)] + ([("validation_", 2)] if validation else [])
    streams, arrays = {}, {}
    for prefix, seed in sets:
        if kind == "exact":
            fid, der = exact_data(jax.random.PRNGKey(seed), n_s, n_d)
            streams[prefix + "main"] = pairs(fid[:n_d], der, n_devices, n_per_device)
            streams[prefix + "remaining"] = (per_device(fid[n_d:], n_devices, n_per_device)
                                             if n_s > n_d else None)
        else:
            fid, der = numerical_data(jax.random.PRNGKey(seed), n_s, n_d)
            streams[prefix + "fiducial"] = per_device(fid, n_devices, n_per_device)
            streams[prefix + "derivative"] = per_device(
                der.reshape((-1, 10)), n_devices, n_per_device)
        arrays[prefix + "fiducial"], arrays[prefix + "derivative"] = fid, der
    if change is not None:
        change(streams)
    if kind == "exact":
        return (imnn.DatasetGradientIMNN(**arguments, **streams),
                imnn.AggregatedGradientIMNN(**arguments, **arrays))
    return (imnn.DatasetNumericalGradientIMNN(**arguments, δθ=δθ, **streams),
            imnn.AggregatedNumericalGradientIMNN(**arguments, δθ=δθ, **arrays))


@pytest.mark.parametrize("kind, n_s, n_d, n_devices, n_per_device, backend", [
    ("exact", N_S, N_D, 2, 6, "jax"),
    ("exact", N_S, N_D, 4, 3, "jax"),
    ("exact", N_D, N_D, 2, 6, "jax"),         # n_s == n_d: no remaining stream
    ("numerical", N_S, 6, 4, 3, "jax"),       # a seed's 2p = 4 simulations straddle devices
    ("numerical", N_S, N_D, 1, 12, "jax"),
    ("numerical", N_S, 6, 2, 3, "numpy"),
])
def test_two_pass_gradient_equals_aggregated(kind, n_s, n_d, n_devices, n_per_device, backend,
                                             x64):
    """Device j's iterator holds chunk j, so the Dataset classes see the simulations
    in another order than the Aggregated classes' batches; restored before the loss,
    the loss and gradient agree to float64 round-off, the finite differences pair
    each seed's simulations, and every summary is in the arrays' order."""
    dataset, aggregated = small(kind, n_devices, n_per_device, n_s, n_d, backend=backend)
    assert_same_loss_and_gradient(dataset.loss_and_gradient(λ, ε),
                                  aggregated.loss_and_gradient(λ, ε), rtol=1e-10)
    assert_same_summaries(dataset.get_summaries(), aggregated.get_summaries(), rtol=1e-12)


def test_fit_equals_aggregated_fit(x64):
    """Same fit semantics: history, best weights and Fisher statistics (with validation)."""
    dataset, aggregated = small("exact", 2, 6, validation=True)
    for model in (dataset, aggregated):
        model.fit(λ, ε, patience=3, min_iterations=5, max_iterations=25)
    for key in ("detF", "detC", "Λ2", "val_detF", "val_detinvC", "val_r"):
        onp.testing.assert_allclose(dataset.history[key], aggregated.history[key], rtol=1e-8)
    assert dataset.history["max_detF"] == pytest.approx(aggregated.history["max_detF"], 1e-8)
    onp.testing.assert_allclose(flat(dataset.best_w), flat(aggregated.best_w), rtol=1e-8,
                                atol=1e-8)
    onp.testing.assert_allclose(dataset.F, aggregated.F, rtol=1e-8)


class Interrupting:
    """An iterator that raises KeyboardInterrupt (once) at its n-th read."""

    def __init__(self, iterator, n):
        self.iterator, self.n, self.reads = iterator, n, 0

    def __next__(self):
        self.reads += 1
        if self.reads == self.n:
            raise KeyboardInterrupt
        return next(self.iterator)


def test_interrupted_pass_is_finished_before_the_next_one(x64):
    """Ctrl-C in the middle of a pass leaves the iterators mid-epoch; the next pass
    finishes that epoch first, so a resumed fit equals an uninterrupted one."""
    def interrupt(streams):   # device 1's remaining: 2 batches per epoch, 2 epochs per
        # iteration; read 10 is the second batch of iteration 2's pass 1
        streams["remaining"][1] = Interrupting(streams["remaining"][1], 2 * 2 * 2 + 2)

    whole, _ = small("exact", 2, 6, validation=True)
    broken, _ = small("exact", 2, 6, validation=True, change=interrupt)
    kwargs = dict(patience=50, min_iterations=50, max_iterations=8, print_rate=2)
    whole.fit(λ, ε, **kwargs)
    with pytest.warns(RuntimeWarning, match="fit interrupted after 2 iterations"):
        broken.fit(λ, ε, **kwargs)
    broken.fit(λ, ε, resume=True, **kwargs)
    onp.testing.assert_allclose(broken.history["val_detF"], whole.history["val_detF"],
                                rtol=1e-10)
    onp.testing.assert_allclose(broken.F, whole.F, rtol=1e-10)


def test_reading_is_one_epoch_per_pass():
    """Training iterators: two epochs per iteration (pass 1, pass 2); validation
    iterators: one per iteration, plus one the first time (checking the epoch)."""
    class Counting:
        def __init__(self, iterator):
            self.iterator, self.reads = iterator, 0

        def __next__(self):
            self.reads += 1
            return next(self.iterator)

    def count(streams):
        for name, iterators in streams.items():
            streams[name] = [Counting(i) for i in iterators]

    dataset, _ = small("numerical", 2, 6, validation=True, change=count)
    source = dataset.source.streams
    dataset.fit(λ, ε, min_iterations=10, max_iterations=3)   # + set_F_statistics at the end
    per_epoch = {"fiducial": N_S // 12, "derivative": 4 * N_D // 12}
    for name, batches in per_epoch.items():
        assert [i.reads for i in source["train"][name].iterators] == [2 * 3 * batches] * 2
        # 3 iterations, the first-time check, set_F_statistics after the fit
        assert [i.reads for i in source["validation"][name].iterators] == [5 * batches] * 2


# --- the checks -----------------------------------------------------------------------

class FakeDataset:
    def as_numpy_iterator(self):
        return iter(())


def set_stream(name, value):
    def change(streams):
        streams[name] = value(streams) if callable(value) else value
    return change


def first(name, j=0, transform=None, first_only=True):
    """Change device j's iterator of a stream: transform each batch (or the first)."""
    def change(streams):
        iterator = streams[name][j]

        def changed():
            for n, batch in enumerate(iterator):
                yield transform(batch) if (n == 0 or not first_only) else batch
        streams[name][j] = changed()
    return change


def cycle_of(batches):
    return cycle(list(batches))


CONSTRUCTION_ERRORS = [
    ("exact", set_stream("main", lambda s: s["main"][0]), TypeError,
     r"main must be a list of 2 iterator\(s\), element j serving devices\[j\]; got cycle"),
    ("exact", set_stream("main", [FakeDataset(), FakeDataset()]), TypeError,
     r"main\[0\] \(device 0\) must be an iterator of numpy batches, got a FakeDataset: pass "
     r"dataset.repeat\(\).as_numpy_iterator\(\)"),
    ("exact", set_stream("remaining", lambda s: s["remaining"][:1]), ValueError,
     r"remaining holds 1 iterator\(s\), but there are 2 device\(s\)"),
    ("numerical", set_stream("derivative", lambda s: [s["derivative"][0], onp.zeros(3)]),
     TypeError, r"derivative\[1\] \(device 1\) must be an iterator of numpy batches, got ndarray"),
    ("numerical", set_stream("derivative", lambda s: [s["derivative"][0]] * 2), ValueError,
     r"derivative\[1\] is the same iterator object as derivative\[0\]"),
    ("exact", set_stream("validation_remaining", lambda s: s["remaining"]), ValueError,
     r"validation_remaining\[0\] is the same iterator object as remaining\[0\]"),
    ("exact", set_stream("validation_remaining", None), ValueError,
     r"validation_remaining must be given: validation needs every validation_ stream"),
    ("exact", set_stream("main", None), ValueError, r"main must be given: a list of iterators"),
]


@pytest.mark.parametrize("kind, change, error, message", CONSTRUCTION_ERRORS)
def test_misbuilt_lists_are_refused_at_construction(kind, change, error, message):
    with pytest.raises(error, match=message):
        small(kind, 2, 6, validation=True, change=change)


def test_uneven_split_names_the_quantity():
    devices = jax.devices()[:4]
    common = (48, 24, 2, 2, (10,), onp.array([0., 1.]), mlp(4, 1, imnn.nn.Tanh),
              optax.adam(1e-3), jax.random.PRNGKey(0))

    def never(n):   # construction reads nothing
        return [iter(()) for _ in range(n)]

    with pytest.raises(ValueError, match=r"n_d = 24 cannot be split evenly over 2 device\(s\) "
                                         r"with n_per_device = 5"):
        imnn.DatasetGradientIMNN(*common, never(2), never(2), devices[0], devices[:2], 5)
    with pytest.raises(ValueError, match=r"2·p·n_d .* = 20 cannot be split evenly over 4 "
                                         r"device\(s\) with n_per_device = 2"):
        imnn.DatasetNumericalGradientIMNN(*common[:1], 5, *common[2:], never(4), never(4),
                                          onp.array([.1, .1]), devices[0], devices, 2)


def reordered(streams, name, n):
    """Device 0 of a stream, its n batches in another order every epoch."""
    batches = [next(streams[name][0]) for _ in range(n)]

    def epochs():
        for e in count():
            yield from batches[e % n:] + batches[:e % n]
    return [epochs(), streams[name][1]]


def ends(streams, name, n):
    """Device 1 without .repeat(): its n batches, once."""
    return [streams[name][0], iter([next(streams[name][1]) for _ in range(n)])]


def short_epoch(streams, name, n):
    """Device 0 repeating its first n - 1 batches only."""
    return [cycle_of([next(streams[name][0]) for _ in range(n - 1)]), streams[name][1]]


def long_epoch(streams, name, n):
    """Device 0 serving n + 1 distinct batches per epoch."""
    batches = [next(streams[name][0]) for _ in range(n)]
    return [cycle_of(batches + [batches[0] + 1.0]), streams[name][1]]


def same_chunk(streams, name, n):
    """The seed's stale device index: every device reads chunk 0."""
    return [streams[name][0], cycle_of([next(streams[name][0]) for _ in range(n)])]


# Per device and epoch (2 devices, n_per_device 6): main, remaining 2 batches;
# fiducial 4; derivative 8.
READ_ERRORS = [
    ("exact", first("main", 1, lambda b: (b[0][:4], b[1][:4])), ValueError,
     r"main\[1\] \(the iterator of device 1\), batch 0 of its 2 per epoch \(fiducial_batch\): "
     r"shape \(4, 10\), expected \(6, 10\) = \(n_per_device,\) \+ input_shape. Batch the "
     r"dataset with .batch\(n_per_device\)"),
    ("exact", first("main", 0, lambda b: (b[0], b[1][..., :1])), ValueError,
     r"main\[0\] .* \(derivative_batch\): shape \(6, 10, 1\), expected \(6, 10, 2\) = "
     r"\(n_per_device,\) \+ input_shape \+ \(n_params,\)"),
    ("exact", first("main", 0, lambda b: b[0]), TypeError,
     r"main\[0\] .*: expected a \(fiducial_batch, derivative_batch\) pair, got ndarray of "
     r"shape \(6, 10\). Zip the two datasets"),
    ("exact", first("remaining", 1, lambda b: (b, b)), TypeError,
     r"remaining\[1\] .*: expected one array of simulations, got a tuple of 2"),
    ("numerical", first("fiducial", 0, lambda b: b[:, :5]), ValueError,
     r"fiducial\[0\] .*: shape \(6, 5\), expected \(6, 10\)"),
    ("numerical", first("fiducial", 1, lambda b: b.astype(complex)), TypeError,
     r"fiducial\[1\] .*: expected real numbers, got dtype complex128"),
    ("numerical", first("derivative", 0, lambda b: b.astype(onp.float32)), TypeError,
     r"derivative\[1\] \(the iterator of device 1\), batch 0 .*: dtype float64, but earlier "
     r"batches of derivative had dtype float32"),
    ("numerical", first("fiducial", 1, lambda b: b * onp.nan), ValueError,
     r"fiducial\[1\] .* batch 0 .*: contains non-finite values"),
    ("exact", set_stream("remaining", lambda s: ends(s, "remaining", 2)), ValueError,
     r"remaining\[1\] \(the iterator of device 1\), batch 0 of its 2 per epoch: the iterator "
     r"ended after 2 batch\(es\). It must repeat"),
    ("numerical", set_stream("fiducial", lambda s: short_epoch(s, "fiducial", 4)), ValueError,
     r"fiducial\[0\] .* batch 3 of its 4 per epoch is identical to batch 0 of the same "
     r"iterator: it repeats sooner than one epoch"),
    ("exact", set_stream("remaining", lambda s: long_epoch(s, "remaining", 2)), ValueError,
     r"remaining\[0\] .* batch 0 of its 2 per epoch: the second epoch does not repeat the "
     r"first"),
    ("exact", set_stream("validation_remaining",
                         lambda s: long_epoch(s, "validation_remaining", 2)),
     ValueError, r"validation_remaining\[0\] .* the second epoch does not repeat the first"),
    ("numerical", set_stream("fiducial", lambda s: reordered(s, "fiducial", 4)), ValueError,
     r"fiducial\[0\] .* batch 0 .* the second epoch does not repeat the first.* or shuffled"),
    ("numerical", set_stream("validation_derivative",
                             lambda s: same_chunk(s, "validation_derivative", 8)), ValueError,
     r"validation_derivative\[1\] \(the iterator of device 1\), batch 0 of its 8 per epoch is "
     r"identical to validation_derivative\[0\] \(device 0\) batch 0"),
    ("exact", set_stream("remaining", lambda s: [s["remaining"][0], cycle_of(
        [next(s["main"][0])[0] for _ in range(2)])]), ValueError,
     r"remaining\[1\] .* batch 0 .* is identical to main\[0\] \(device 0\) batch 0"),
]


@pytest.mark.parametrize("kind, change, error, message", READ_ERRORS)
def test_misbuilt_batches_fail_in_the_first_iteration(kind, change, error, message):
    """Every batch's structure, shape and dtype; finite values, distinct batches and
    the epoch length, checked by the end of the first iteration. A stream that
    failed refuses to be read again (its iterators no longer line up)."""
    dataset, _ = small(kind, 2, 6, validation=True, change=change,
                       model=mlp(4, 1, imnn.nn.Tanh))
    with pytest.raises(error, match=message):
        dataset.fit(λ, ε, max_iterations=1)
    assert len(dataset.history["detF"]) == 0
    with pytest.raises(ValueError, match="cannot be read after an earlier error"):
        dataset.fit(λ, ε, max_iterations=1)


def test_derivatives_that_do_not_depend_on_the_noise_are_not_duplicates():
    """∂d/∂θ equal for every simulation (a pure mean model) makes every derivative
    batch equal: that is right, and not flagged."""
    def constant_derivative(streams):
        streams["main"] = [cycle_of([(f, onp.ones_like(d)) for f, d in
                                     (next(iterator) for _ in range(2))])
                           for iterator in streams["main"]]

    dataset, _ = small("exact", 2, 6, change=constant_derivative,
                       model=mlp(4, 1, imnn.nn.Tanh))
    x, dx_dθ = dataset.get_summaries()
    assert x.shape == (N_S, 2) and dx_dθ.shape == (N_D, 2, 2)


def test_tf_dataset_instead_of_iterator_gets_a_hint(tf):
    datasets = [tf.data.Dataset.from_tensor_slices(onp.zeros((12, 6, 10)))] * 2
    with pytest.raises(TypeError, match=r"main\[0\] \(device 0\) must be an iterator of "
                                        r"numpy batches, got a .*Dataset.*: pass "
                                        r"dataset.repeat\(\).as_numpy_iterator\(\)"):
        small("exact", 2, 6, change=set_stream("main", datasets))


def test_plain_iterators_do_not_import_tensorflow(tmp_path):
    """A generator over .npy files fits with no TensorFlow import (a fresh process)."""
    code = textwrap.dedent(f"""
        import sys
        import jax, numpy as np, optax
        import imnn
        from imnn.utils import value_and_jacfwd

        def simulator(key, θ):
            return θ[0] + jax.random.normal(key, (10,)) * jax.numpy.sqrt(θ[1])

        n_s, n_d, θ = 40, 20, np.array([0., 1.])
        keys = jax.random.split(jax.random.PRNGKey(0), n_s)
        d, dd = jax.vmap(value_and_jacfwd(simulator, argnums=1), in_axes=(0, None))(keys, θ)
        for i in range(n_s):
            np.save(f"{tmp_path}/fiducial_{{i:04d}}.npy", np.asarray(d[i]))
            np.save(f"{tmp_path}/derivative_{{i:04d}}.npy", np.asarray(dd[i]))

        def batches(names, start, stop, size=10):
            while True:   # repeat, unshuffled
                for b in range(start, stop, size):
                    loaded = [np.stack([np.load(f"{tmp_path}/{{n}}_{{i:04d}}.npy")
                                        for i in range(b, b + size)]) for n in names]
                    yield tuple(loaded) if len(loaded) > 1 else loaded[0]

        devices = jax.devices()[:1]
        model = imnn.nn.serial(imnn.nn.Dense(8), imnn.nn.Tanh, imnn.nn.Dense(2))
        imnn_ = imnn.DatasetGradientIMNN(
            n_s, n_d, 2, 2, (10,), θ, model, optax.adam(1e-3), jax.random.PRNGKey(1),
            main=[batches(("fiducial", "derivative"), 0, n_d)],
            remaining=[batches(("fiducial",), n_d, n_s)],
            host=devices[0], devices=devices, n_per_device=10)
        imnn_.fit(10., 0.1, max_iterations=3)
        assert len(imnn_.history["detF"]) == 3 and np.isfinite(imnn_.F).all()
        print("tensorflow" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "False"
