"""imnn.save / imnn.load / imnn.persistence.restore: round trips, evaluation on
another backend, exact continuation, and damaged files."""
import zipfile

import jax
import numpy as np
import optax
import pytest

import imnn
from imnn import persistence
from imnn.persistence import DamagedFileError, model_from_tables, model_to_tables

from conftest import INPUT_SHAPE, exact_data, mlp, numerical_data, simulator, δθ, θ_FID


pytestmark = pytest.mark.xdist_group("persistence")  # one worker: one module fixture


def gradient_imnn(n=100, backend="jax"):
    fid, der = exact_data(jax.random.PRNGKey(1), n, n)
    val = exact_data(jax.random.PRNGKey(2), n, n)
    return imnn.GradientIMNN(n, n, 2, 2, INPUT_SHAPE, θ_FID, mlp(16), optax.adam(1e-2),
                             jax.random.PRNGKey(0), fid, der, *val, backend=backend)


def simulations(n=7):
    return exact_data(jax.random.PRNGKey(9), n, 1)[0]


def leaves(tree):
    return [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]


@pytest.fixture(scope="module")
def fitted_float32(tmp_path_factory):
    fitter = gradient_imnn().fit(10.0, 0.1, min_iterations=0, max_iterations=40)
    path = imnn.save(fitter, tmp_path_factory.mktemp("float32") / "fitted.imnn")
    return fitter, path


def test_round_trip_keeps_everything(fitted_float32):
    fitter, path = fitted_float32
    loaded = imnn.load(path)
    assert loaded.class_name == "GradientIMNN" and loaded.backend == "jax"
    assert (loaded.n_s, loaded.n_d, loaded.n_params, loaded.n_summaries) == (100, 100, 2, 2)
    assert loaded.input_shape == INPUT_SHAPE and loaded.fit_iteration == 40
    np.testing.assert_array_equal(loaded.θ_fid, θ_FID)
    assert model_to_tables(loaded.model) == model_to_tables(fitter.model)
    for name in ("w", "best_w", "final_w"):
        for a, b in zip(leaves(getattr(loaded, name)), leaves(getattr(fitter, name))):
            np.testing.assert_array_equal(a, b)
    assert loaded.w is loaded.best_w  # saved once, loaded as one object
    for a, b in zip(loaded.state, leaves(fitter.state)):
        np.testing.assert_array_equal(a, b)
    assert set(loaded.history) == set(fitter.history)
    for key, value in fitter.history.items():
        np.testing.assert_array_equal(loaded.history[key], value)
    for name in ("F", "invF", "C", "invC", "μ", "dμ_dθ"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(fitter, name))
    d = simulations()
    np.testing.assert_array_equal(loaded.get_estimate(d), fitter.get_estimate(d))
    assert loaded.get_estimate(d[0]).shape == (2,)


def test_float32_jax_fit_estimates_the_same_on_numpy(fitted_float32):
    fitter, path = fitted_float32
    d = simulations()
    on_numpy = imnn.load(path, backend="numpy")
    assert on_numpy.backend == "numpy"
    np.testing.assert_allclose(on_numpy.get_estimate(d), fitter.get_estimate(d),
                               rtol=1e-5, atol=1e-5)


def test_x64_jax_fit_estimates_the_same_on_numpy(x64, tmp_path):
    fitter = gradient_imnn().fit(10.0, 0.1, min_iterations=0, max_iterations=30)
    path = imnn.save(fitter, tmp_path / "fitted.imnn")
    d = simulations()
    np.testing.assert_allclose(imnn.load(path, backend="numpy").get_estimate(d),
                               fitter.get_estimate(d), rtol=1e-10, atol=1e-10)


def test_restore_continues_exactly(x64, tmp_path):
    def simulator_imnn():
        return imnn.SimulatorIMNN(50, 25, 2, 2, INPUT_SHAPE, θ_FID, mlp(8, depth=1),
                                  optax.adam(3e-3), jax.random.PRNGKey(0), simulator)

    kw = dict(rng=jax.random.PRNGKey(1), patience=1000, min_iterations=10)
    original = simulator_imnn().fit(10.0, 0.1, max_iterations=30, **kw)
    imnn.save(original, tmp_path / "half.imnn")
    resumed = persistence.restore(simulator_imnn(), tmp_path / "half.imnn")
    assert (resumed.fit_iteration, resumed.patience_counter) == (30, original.patience_counter)
    # Both carry on to 60 iterations (resume=True: as if never stopped at 30).
    for fitter in (original, resumed):
        fitter.fit(10.0, 0.1, max_iterations=60, resume=True, **kw)
    for name in ("final_w", "best_w", "state"):
        for a, b in zip(leaves(getattr(resumed, name)), leaves(getattr(original, name))):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    for key, value in original.history.items():
        np.testing.assert_array_equal(resumed.history[key], value)
    assert len(resumed.history["detF"]) == 60


def test_restore_refuses_a_different_configuration(fitted_float32):
    _, path = fitted_float32
    other = imnn.GradientIMNN(100, 100, 2, 2, INPUT_SHAPE, θ_FID, mlp(8), optax.adam(1e-2),
                              jax.random.PRNGKey(0), *exact_data(jax.random.PRNGKey(1), 100, 100))
    with pytest.raises(ValueError, match="its model is"):
        persistence.restore(other, path)
    with pytest.raises(ValueError, match="optimiser state does not fit"):
        persistence.restore(gradient_imnn().__class__(
            100, 100, 2, 2, INPUT_SHAPE, θ_FID, mlp(16), optax.sgd(1e-2), jax.random.PRNGKey(0),
            *exact_data(jax.random.PRNGKey(1), 100, 100)), path)


def test_numerical_gradient_imnn_keeps_δθ(tmp_path):
    fid, der = numerical_data(jax.random.PRNGKey(1), 40, 20)
    fitter = imnn.NumericalGradientIMNN(40, 20, 2, 2, INPUT_SHAPE, θ_FID, mlp(8),
                                        optax.adam(1e-3), jax.random.PRNGKey(0), fid, der, δθ,
                                        backend="numpy")
    fitter.set_F_statistics()
    loaded = imnn.load(imnn.save(fitter, tmp_path / "numerical.imnn"))
    assert loaded.backend == "numpy" and loaded.fit_iteration == 0
    np.testing.assert_array_equal(loaded.δθ, δθ)
    assert len(loaded.history["detF"]) == 0
    d = simulations()
    np.testing.assert_allclose(loaded.get_estimate(d), fitter.get_estimate(d), rtol=1e-12)


def test_truncated_file_is_detected(fitted_float32, tmp_path):
    _, path = fitted_float32
    data = path.read_bytes()
    damaged = tmp_path / "truncated.imnn"
    damaged.write_bytes(data[:len(data) // 2])
    with pytest.raises(DamagedFileError, match="truncated.imnn is damaged"):
        imnn.load(damaged)


def test_changed_array_fails_its_checksum(fitted_float32, tmp_path):
    _, path = fitted_float32
    damaged = tmp_path / "changed.imnn"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(damaged, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "arrays/0.npy":  # θ_fid
                data = data[:-8] + np.float64(7.0).tobytes()
            target.writestr(item, data)
    with pytest.raises(DamagedFileError, match="does not match its checksum"):
        persistence.read(damaged)
    other = tmp_path / "other.imnn"
    other.write_bytes(b"not a zip")
    with pytest.raises(DamagedFileError):
        persistence.read(other)
    with pytest.raises(FileNotFoundError):
        persistence.read(tmp_path / "missing.imnn")


def test_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")

    def fail(file):
        file.write(b"half of the new")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        persistence.write_atomically(path, fail)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_model_tables_round_trip_and_errors():
    model = imnn.nn.serial(imnn.nn.Reshape((4, 4, 1)), imnn.nn.Conv(3, (2, 2), (2, 1), "VALID"),
                           imnn.nn.LeakyRelu(0.2), imnn.nn.Flatten, imnn.nn.Dense(5),
                           imnn.nn.Elu(0.5), imnn.nn.Tanh, imnn.nn.Sigmoid, imnn.nn.Softplus,
                           imnn.nn.Relu, imnn.nn.Dense(2))
    tables = model_to_tables(model)
    assert tables[1] == {"type": "Conv", "features": 3, "kernel": [2, 2], "strides": [2, 1],
                         "padding": "VALID"}
    assert model_from_tables(tables) == model
    assert model_from_tables([{"type": "Dense", "features": 3}, {"type": "Elu"}]) == \
        imnn.nn.serial(imnn.nn.Dense(3), imnn.nn.Elu())
    for tables, message in [
            ([{"type": "Dense", "featurs": 3}], r"model\[0\]: unknown key 'featurs'"),
            ([{"type": "Dense"}], r"model\[0\]: a Dense layer needs 'features'"),
            ([{"type": "Dense", "features": "3"}], r"model\[0\].features must be an integer"),
            ([{"type": "Dense", "features": 0}], r"model\[0\]: Dense features must be"),
            ([{"type": "Pool"}], r"model\[0\].type must be one of"),
            ([], "non-empty list")]:
        with pytest.raises(ValueError, match=message):
            model_from_tables(tables)


def test_other_model_kinds_save_and_need_the_model_to_load(tmp_path):
    # imnn 1.0 saved only imnn.nn models; now every kind saves, and kinds that the file
    # cannot describe load only into the model given again (tests/test_persistence_models.py).
    from jax.example_libraries import stax
    fid, der = exact_data(jax.random.PRNGKey(1), 20, 20)
    fitter = imnn.GradientIMNN(20, 20, 2, 2, INPUT_SHAPE, θ_FID,
                               stax.serial(stax.Dense(8), stax.Elu, stax.Dense(2)),
                               optax.adam(1e-3), jax.random.PRNGKey(0), fid, der)
    path = imnn.save(fitter, tmp_path / "stax.imnn")
    assert persistence.read(path).model_kind == "init_apply"
    with pytest.raises(ValueError, match=r"model of kind init_apply.*imnn.load\(path, model=...\)"):
        imnn.load(path)


def test_loaded_compressor_equals_the_live_one(fitted_float32):
    fitter, path = fitted_float32
    d = simulations()
    compressed = np.asarray(imnn.load(path).compressor()(d))
    assert compressed.shape == (7, 2)
    np.testing.assert_array_equal(compressed, np.asarray(fitter.compressor()(d)))
    np.testing.assert_allclose(compressed, fitter.get_estimate(d), rtol=1e-5, atol=1e-6)


def test_dataset_gradient_imnn_saves_and_restores(tmp_path):
    # The Dataset classes read iterators, which are not saved: what is saved (weights,
    # optimiser state, statistics, history) loads into a FittedIMNN and restores into a
    # freshly built DatasetGradientIMNN that then continues like the original.
    from itertools import cycle
    n, n_per_device = 40, 10
    fid, der = (np.asarray(a) for a in exact_data(jax.random.PRNGKey(1), n, n))

    def build():
        main = [cycle(list(zip(np.split(fid[:20], 2), np.split(der[:20], 2)))),
                cycle(list(zip(np.split(fid[20:], 2), np.split(der[20:], 2))))]
        return imnn.DatasetGradientIMNN(n, n, 2, 2, INPUT_SHAPE, θ_FID, mlp(8),
                                        optax.adam(1e-2), jax.random.PRNGKey(0), main, None,
                                        jax.devices()[0], jax.devices()[:2], n_per_device)

    original = build().fit(10.0, 0.1, min_iterations=0, max_iterations=10)
    path = imnn.save(original, tmp_path / "dataset.imnn")
    loaded = imnn.load(path)
    assert loaded.class_name == "DatasetGradientIMNN" and loaded.fit_iteration == 10
    d = simulations()
    np.testing.assert_allclose(loaded.get_estimate(d), original.get_estimate(d), rtol=1e-6)
    resumed = persistence.restore(build(), path)
    for fitter in (original, resumed):
        fitter.fit(10.0, 0.1, min_iterations=0, max_iterations=20, resume=True)
    for a, b in zip(leaves(resumed.final_w), leaves(original.final_w)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(resumed.history["detF"], original.history["detF"], rtol=1e-6)
