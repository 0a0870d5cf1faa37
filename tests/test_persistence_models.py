"""Saving and loading every kind of model: weights restored into the model given
again (its structure, shapes and dtypes checked leaf by leaf), restore of any
kind into a rebuilt fitter, and files written by imnn 1.0 (format version 1)."""
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.example_libraries import stax

import imnn
from imnn import persistence
from imnn._leaves import first_difference

from conftest import INPUT_SHAPE, exact_data, mlp, θ_FID

pytestmark = pytest.mark.xdist_group("persistence_models")  # one worker: one module fixture

V1_FILE = Path(__file__).parent / "data" / "format_v1.imnn"


def stax_model(*hidden):
    layers = [layer for n in hidden for layer in (stax.Dense(n), stax.Elu)]
    return stax.serial(*layers, stax.Dense(2))


def gradient_imnn(model, n=20):
    fid, der = exact_data(jax.random.PRNGKey(1), n, n)
    return imnn.GradientIMNN(n, n, 2, 2, INPUT_SHAPE, θ_FID, model, optax.adam(1e-2),
                             jax.random.PRNGKey(0), fid, der)


def leaves(tree):
    return [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]


@pytest.fixture(scope="module")
def stax_fit(tmp_path_factory):
    with jax.enable_x64(True):
        fitter = gradient_imnn(stax_model(8)).fit(10.0, 0.1, min_iterations=0, max_iterations=6)
        path = imnn.save(fitter, tmp_path_factory.mktemp("stax") / "stax.imnn",
                         {"note": "stax"})
        yield fitter, path


def test_stax_fit_loads_into_the_model_given_again(stax_fit, x64):
    fitter, path = stax_fit
    loaded = imnn.load(path, model=stax_model(8))
    assert loaded.model_kind == "init_apply" and loaded.fit_iteration == 6
    assert loaded.metadata == {"note": "stax"}
    assert jax.tree.structure(loaded.w) == jax.tree.structure(fitter.w)
    for name in ("w", "best_w", "final_w"):
        for a, b in zip(leaves(getattr(loaded, name)), leaves(getattr(fitter, name))):
            np.testing.assert_array_equal(a, b)
    d = exact_data(jax.random.PRNGKey(9), 5, 1)[0]
    np.testing.assert_array_equal(loaded.get_estimate(d), fitter.get_estimate(d))
    np.testing.assert_array_equal(np.asarray(loaded.compressor()(d)),
                                  np.asarray(fitter.compressor()(d)))
    again = imnn.load(imnn.save(loaded, path.with_name("again.imnn")), model=stax_model(8))
    np.testing.assert_array_equal(again.get_estimate(d), fitter.get_estimate(d))
    assert again.state_paths == loaded.state_paths and "mu" in "".join(loaded.state_paths)


@pytest.mark.parametrize("model, message", [
    (stax_model(8, 8), r"leaf \[2\]\[0\] has shape \(8, 2\) in the file, \(8, 8\) in the model"),
    (stax_model(9), r"leaf \[0\]\[0\] has shape \(10, 8\) in the file, \(10, 9\) in the model"),
    (stax.serial(stax.Dense(8), stax.Elu, stax.Dense(2), stax.Dense(2)),
     r"leaf \[3\]\[0\] is in the model but not in the file"),
    (stax.serial(stax.Dense(8), stax.Dense(2)),
     r"leaf \[1\]\[0\] is in the model but not in the file"),
])
def test_a_model_that_differs_is_refused_naming_the_first_leaf(stax_fit, x64, model, message):
    _, path = stax_fit
    with pytest.raises(ValueError, match=r"do not fit the model given: " + message):
        imnn.load(path, model=model)
    with pytest.raises(ValueError, match=message):
        persistence.restore(gradient_imnn(model), path)


def test_extra_leaf_and_dtype_are_named():
    one = [np.zeros((2, 3), np.float32)]
    assert first_difference(["[0]", "[1]"], one * 2, ["[0]"], one) == \
        "leaf [1] is in the file but not in the model"
    assert first_difference(["[0]"], one, ["[0]"], [np.zeros((2, 3), np.int32)]) \
        == "leaf [0] has dtype float32 in the file, int32 in the model"
    # Precision is not structure: float64 weights load into a float32 model and back.
    assert first_difference(["[0]"], one, ["[0]"], [np.zeros((2, 3))]) is None


def test_model_kinds_do_not_mix(stax_fit, tmp_path):
    _, stax_path = stax_fit
    with pytest.raises(ValueError, match=r"model of kind init_apply; model= is of kind imnn.nn"):
        imnn.load(stax_path, model=mlp(8, depth=1))
    with pytest.raises(TypeError, match=r"(only run|runs only) imnn.nn models"):
        imnn.load(stax_path, backend="numpy", model=stax_model(8))
    nn_fitter = gradient_imnn(mlp(4, depth=1))
    nn_path = imnn.save(nn_fitter, tmp_path / "nn.imnn")
    with pytest.raises(ValueError, match="model of kind imnn.nn; model= is of kind init_apply"):
        imnn.load(nn_path, model=stax_model(4))
    with pytest.raises(ValueError, match="its model_kind is 'imnn.nn', here it is 'init_apply'"):
        persistence.restore(gradient_imnn(stax_model(4)), nn_path)
    with pytest.raises(ValueError, match="model= is not the model of"):
        imnn.load(nn_path, model=mlp(5, depth=1))
    d = exact_data(jax.random.PRNGKey(9), 3, 1)[0]
    nn_fitter.set_F_statistics()
    imnn.save(nn_fitter, nn_path)
    np.testing.assert_array_equal(imnn.load(nn_path, model=mlp(4, depth=1)).get_estimate(d),
                                  nn_fitter.get_estimate(d))


def test_format_version_1_files_still_load(tmp_path, x64):
    # tests/data/format_v1.imnn: written by imnn 1.0's save (format version 1), carrying
    # in its metadata simulations and the estimates imnn 1.0 computed for them.
    saved = persistence.read(V1_FILE)
    assert saved.manifest["version"] == 1 and saved.model_kind == "imnn.nn"
    d, expected = (np.asarray(saved.metadata[k]) for k in ("d", "estimate"))
    for backend in ("numpy", "jax"):
        loaded = imnn.load(V1_FILE, backend=backend)
        assert loaded.fit_iteration == 5 and loaded.w is loaded.best_w
        np.testing.assert_allclose(loaded.get_estimate(d), expected, rtol=1e-12, atol=1e-14)
    fitter = persistence.restore(gradient_imnn(mlp(4, depth=1)), V1_FILE)
    np.testing.assert_allclose(fitter.get_estimate(d), expected, rtol=1e-12, atol=1e-14)
    fitter.fit(10.0, 0.1, min_iterations=0, max_iterations=7, resume=True)
    assert len(fitter.history["detF"]) == 7
    # Written again, it is a version 2 file with the same content.
    again = persistence.read(imnn.save(loaded, tmp_path / "v2.imnn"))
    assert again.manifest["version"] == 2
    assert again.manifest["weight_paths"] == ["[0][0]", "[0][1]", "[2][0]", "[2][1]"]
    np.testing.assert_allclose(imnn.load(again.path).get_estimate(d), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="optimiser state does not fit .*leaves"):
        persistence.restore(imnn.GradientIMNN(
            20, 20, 2, 2, INPUT_SHAPE, θ_FID, mlp(4, depth=1), optax.sgd(1e-2),
            jax.random.PRNGKey(0), *exact_data(jax.random.PRNGKey(1), 20, 20)), V1_FILE)


def test_stax_fit_restores_and_continues(stax_fit, x64):
    # Last in this module: it carries the module's live fit on.
    fitter, path = stax_fit
    resumed = persistence.restore(gradient_imnn(stax_model(8)), path)
    assert resumed.fit_iteration == 6 and resumed.patience_counter == fitter.patience_counter
    for one in (fitter, resumed):  # from the file, and the live fit it was saved from
        one.fit(10.0, 0.1, min_iterations=0, max_iterations=9, resume=True)
    assert len(resumed.history["detF"]) == 9
    for name in ("final_w", "best_w", "state"):
        for a, b in zip(leaves(getattr(resumed, name)), leaves(getattr(fitter, name))):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(resumed.history["detF"], fitter.history["detF"])


# --- flax.linen, flax.nnx, equinox, plain functions (the models branch's kinds) ------------

def linen_model():
    import flax.linen as linen

    class MLP(linen.Module):
        @linen.compact
        def __call__(self, x):
            return linen.Dense(2)(linen.elu(linen.Dense(8)(x)))

    return MLP()


def equinox_model():
    import equinox as eqx
    return eqx.nn.MLP(10, 2, 8, 1, activation=jax.nn.elu, key=jax.random.PRNGKey(3))


def nnx_model():
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.hidden, self.out = nnx.Linear(10, 8, rngs=rngs), nnx.Linear(8, 2, rngs=rngs)

        def __call__(self, x):
            return self.out(jax.nn.elu(self.hidden(x)))

    return MLP(nnx.Rngs(3))


def function_model():
    params = {"W": jax.random.normal(jax.random.PRNGKey(3), (10, 2)) * 0.3, "b": jnp.zeros(2)}
    return imnn.nn.from_function(lambda p, d: jnp.tanh(d @ p["W"] + p["b"]), params)


KIND_MODELS = {"flax.linen": linen_model, "flax.nnx": nnx_model, "equinox": equinox_model,
               "function": function_model}


@pytest.fixture(scope="module")
def kind_files(tmp_path_factory):
    """kind -> (fitter with statistics, its file); no fit, to keep them cheap."""
    pytest.importorskip("flax")
    pytest.importorskip("equinox")
    files = {}
    for kind, make in KIND_MODELS.items():
        fitter = gradient_imnn(make(), n=8)
        fitter.set_F_statistics()
        files[kind] = fitter, imnn.save(fitter, tmp_path_factory.mktemp("kinds") / "fit.imnn")
    return files


@pytest.mark.parametrize("kind", list(KIND_MODELS))
def test_every_kind_saves_and_loads_into_its_model(kind_files, kind):
    fitter, path = kind_files[kind]
    saved = persistence.read(path)
    assert saved.model_kind == kind and saved.manifest["model"] is None
    with pytest.raises(ValueError, match=f"model of kind {kind}.*model=..."):
        imnn.load(path)
    loaded = imnn.load(path, model=KIND_MODELS[kind]())
    assert jax.tree.structure(loaded.w) == jax.tree.structure(fitter.w)
    for a, b in zip(leaves(loaded.w), leaves(fitter.w)):
        np.testing.assert_array_equal(a, b)
    d = exact_data(jax.random.PRNGKey(9), 3, 1)[0]
    np.testing.assert_array_equal(loaded.get_estimate(d), fitter.get_estimate(d))
    np.testing.assert_array_equal(np.asarray(loaded.compressor()(d)),
                                  np.asarray(fitter.compressor()(d)))


def test_a_linen_fit_does_not_load_into_an_equinox_model(kind_files):
    _, path = kind_files["flax.linen"]
    with pytest.raises(ValueError, match=r"holds the weights of a model of kind flax.linen "
                                         r"\(.*MLP\); model= is of kind equinox"):
        imnn.load(path, model=equinox_model())
    with pytest.raises(ValueError, match="its model_kind is 'flax.linen', here it is 'equinox'"):
        persistence.restore(gradient_imnn(equinox_model(), n=8), path)


def test_an_equinox_fit_names_the_leaf_another_module_lacks(kind_files):
    import equinox as eqx
    _, path = kind_files["equinox"]
    wider = eqx.nn.MLP(10, 2, 9, 1, activation=jax.nn.elu, key=jax.random.PRNGKey(3))
    with pytest.raises(ValueError, match=r"leaf \.layers\[0\]\.weight has shape \(8, 10\) in "
                                         r"the file, \(9, 10\) in the model"):
        imnn.load(path, model=wider)


def test_a_linen_fit_restores(kind_files):
    fitter, path = kind_files["flax.linen"]
    resumed = persistence.restore(gradient_imnn(linen_model(), n=8), path)
    assert jax.tree.structure(resumed.w) == jax.tree.structure(fitter.w)
    assert jax.tree.structure(resumed.state) == jax.tree.structure(fitter.state)
    for name in ("w", "final_w", "state"):
        for a, b in zip(leaves(getattr(resumed, name)), leaves(getattr(fitter, name))):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(resumed.F, fitter.F)
