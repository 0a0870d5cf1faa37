"""Per-iteration time of the in-memory fit on the mean/variance problem, for
each backend side by side (n_s = n_d = 1000, MLP 128-128, Adam 1e-3).

    .venv/bin/python -m pytest bench/bench_backends.py --benchmark-only

The per-iteration figure is in the ``ms/it`` extra column: each round runs a
fixed number of iterations (no early stopping) after a warm-up fit that
compiles everything.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import imnn
from imnn.simulators import GaussianMeanVariance
from imnn.utils import value_and_jacfwd

SIM = GaussianMeanVariance(n=10)
N = 1000
ITERATIONS = {"jax": 200, "numpy": 5, "numba": 5}


def model():
    return imnn.nn.serial(imnn.nn.Dense(128), imnn.nn.LeakyRelu(), imnn.nn.Dense(128),
                          imnn.nn.LeakyRelu(), imnn.nn.Dense(2))


def build(cls, backend):
    args = (N, N, 2, 2, SIM.input_shape, SIM.θ_fid, model(), optax.adam(1e-3),
            jax.random.PRNGKey(0))
    if cls == "SimulatorIMNN":
        simulator = SIM.simulate if backend == "jax" else SIM.simulate_numpy
        return imnn.SimulatorIMNN(*args, simulator, backend=backend)
    keys = jax.random.split(jax.random.PRNGKey(1), N)
    d, dd = jax.vmap(value_and_jacfwd(SIM.simulate, argnums=1), in_axes=(0, None))(
        keys, jnp.asarray(SIM.θ_fid))
    return imnn.GradientIMNN(*args, np.asarray(d), np.asarray(dd), backend=backend)


@pytest.mark.parametrize("backend", ["jax", "numba", "numpy"])
@pytest.mark.parametrize("cls", ["GradientIMNN", "SimulatorIMNN"])
def test_fit_iteration(benchmark, cls, backend):
    fitter = build(cls, backend)
    n = ITERATIONS[backend]
    kwargs = dict(rng=jax.random.PRNGKey(2), min_iterations=10 ** 6, max_iterations=n)
    fitter.fit(10.0, 0.1, **kwargs)  # warm-up: compile (jax) or JIT the kernels (numba)
    benchmark.pedantic(fitter.fit, args=(10.0, 0.1), kwargs=kwargs, rounds=3, iterations=1)
    benchmark.extra_info["ms/it"] = 1e3 * benchmark.stats.stats.min / n
    benchmark.extra_info["iterations"] = n
