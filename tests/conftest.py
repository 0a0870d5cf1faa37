"""Test set-up: four simulated CPU devices, a headless matplotlib, and the
mean/variance toy problem of the analytic anchors
(docs/design/behaviour.md#analytic-anchors)."""
import functools
import os
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=4").strip()
os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402

# One persistent compilation cache for the whole test run, shared by the xdist workers:
# the many fitters of identical shapes then compile each program once (about 15 % of the
# suite's CPU). IMNN_TEST_CACHE=off switches it off; tests of the command line's own cache
# give their subprocesses their own folders.
_CACHE = os.environ.get("IMNN_TEST_CACHE") or os.path.join(
    tempfile.gettempdir(),
    f"imnn-test-jax-cache-{os.environ.get('PYTEST_XDIST_TESTRUNUID', os.getpid())}")
if _CACHE.lower() not in ("off", "0", "no", "false"):
    jax.config.update("jax_compilation_cache_dir", _CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import imnn  # noqa: E402
from imnn.utils import value_and_jacfwd  # noqa: E402

INPUT_SHAPE = (10,)
θ_FID = np.array([0.0, 1.0])
δθ = np.array([0.1, 0.1])


def simulator(key, θ):
    """10 draws of N(θ[0], θ[1]): analytic F = diag(10, 5) at θ = (0, 1)."""
    return θ[0] + jax.random.normal(key, INPUT_SHAPE) * jnp.sqrt(θ[1])


def exact_data(key, n_s, n_d):
    """(fiducial (n_s, 10), derivative (n_d, 10, 2)) with exact ∂d/∂θ."""
    keys = jax.random.split(key, n_s)
    d, dd = jax.vmap(value_and_jacfwd(simulator, argnums=1), in_axes=(0, None))(
        keys, jnp.asarray(θ_FID))
    return np.asarray(d, np.float64), np.asarray(dd[:n_d], np.float64)


def numerical_data(key, n_s, n_d):
    """(fiducial (n_s, 10), derivative (n_d, 2, 2, 10)) seed-matched at θ ∓ δθ/2."""
    keys = jax.random.split(key, n_s)
    θ = jnp.asarray(θ_FID)
    shifts = jnp.einsum("i,jk->ijk", jnp.array([-1.0, 1.0]), jnp.diag(jnp.asarray(δθ)) / 2)
    fiducial = jax.vmap(simulator, in_axes=(0, None))(keys, θ)
    derivative = jax.vmap(lambda k: jax.vmap(jax.vmap(lambda s: simulator(k, θ + s)))(shifts))(
        keys[:n_d])
    return np.asarray(fiducial, np.float64), np.asarray(derivative, np.float64)


def mlp(width=128, depth=2, activation=None, n_summaries=2):
    activation = activation or imnn.nn.LeakyRelu()
    layers = []
    for _ in range(depth):
        layers += [imnn.nn.Dense(width), activation]
    return imnn.nn.serial(*layers, imnn.nn.Dense(n_summaries))


# The tests that use fitted_simulator_imnn share a worker under make test (--dist loadgroup).
SHARES_SIMULATOR_FIT = pytest.mark.xdist_group("simulator_fit")


@functools.lru_cache(maxsize=None)
def fitted_simulator_imnn():
    """A SimulatorIMNN fitted to the mean/variance problem, once per test process: MLP
    128-128 (Elu), Adam 1e-3, λ = 10, ε = 0.1, 1000 fresh simulations per iteration,
    patience 1000 and at most 5000 iterations, in float32. test_anchors.py asserts the
    information it reaches; test_lfi.py infers with its compressor (tests marked
    SHARES_SIMULATOR_FIT)."""
    model = imnn.SimulatorIMNN(1000, 1000, 2, 2, INPUT_SHAPE, θ_FID, mlp(128, 2, imnn.nn.Elu()),
                               optax.adam(1e-3), jax.random.PRNGKey(0), simulator)
    model.fit(10.0, 0.1, rng=jax.random.PRNGKey(0), patience=1000, max_iterations=5000)
    return model


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def pytest_collection_modifyitems(config, items):
    """Modules with long fits (a test marked ``slow``) first, each module's tests kept
    together and in their order (module fixtures are made once). Under
    ``pytest -n 2 --dist loadgroup`` (make test) the longest tests then start early and
    the many short ones even out the two workers at the end."""
    first, slow = {}, set()
    for index, item in enumerate(items):
        path = item.nodeid.split("::")[0]
        first.setdefault(path, index)
        if item.get_closest_marker("slow") is not None:
            slow.add(path)
    position = {id(item): index for index, item in enumerate(items)}

    def key(item):
        path = item.nodeid.split("::")[0]
        return path not in slow, first[path], position[id(item)]

    items.sort(key=key)
