"""Time per iteration against the number of simulations n_s, per variant.

    .venv/bin/python -m pytest bench/bench_scaling.py --benchmark-only

The mean/variance problem (MLP 128-128, Adam 1e-3, n_d = n_s) fitted for a fixed
number of iterations (no early stopping) after a warm-up fit that compiles
everything, for every variant a user chooses between: the JAX backend in
memory (arrays and on-the-fly simulations), aggregated (n_per_device = 250 on
one device, and spread over four simulated devices), and the two reference
backends. Each point records ``variant`` and ``n_s`` in its ``extra_info``;
``make bench`` (bench/conftest.py) draws them as docs/bench_scaling.png and
lists them in bench/results.md.
"""
import jax
import pytest

from imnn.simulators import GaussianMeanVariance

import bench_aggregation

SIM = GaussianMeanVariance(n=10)
N_S = (250, 500, 1000, 2000, 4000)
N_PER_DEVICE = 250
VARIANTS = {  # name: (class, backend, layout (n_devices, n_per_device) or None)
    "jax GradientIMNN": ("Gradient", "jax", None),
    "jax SimulatorIMNN": ("Simulator", "jax", None),
    "jax AggregatedSimulatorIMNN, 1 device": ("Simulator", "jax", (1, N_PER_DEVICE)),
    "jax AggregatedSimulatorIMNN, 4 devices": ("Simulator", "jax", (4, N_PER_DEVICE)),
    "numba GradientIMNN": ("Gradient", "numba", None),
    "numpy GradientIMNN": ("Gradient", "numpy", None),
}


def iterations(backend, n_s):
    """About a quarter of a second per round on a 2-core CPU."""
    per_1000 = 100 if backend == "jax" else 1
    return max(2, per_1000 * 1000 // n_s)


def build(variant, n_s):
    cls, backend, layout = VARIANTS[variant]
    if layout is not None and n_s % (layout[0] * layout[1]):
        pytest.skip(f"n_s = {n_s} does not split into {layout[0]} × {layout[1]}")
    return bench_aggregation.build(cls, SIM, bench_aggregation.mlp(), n_s, layout, backend)


@pytest.mark.parametrize("n_s", N_S)
@pytest.mark.parametrize("variant", VARIANTS)
def test_time_per_iteration_vs_n_s(benchmark, variant, n_s):
    benchmark.group = "time per iteration against n_s (mean/variance, MLP 128-128)"
    fitter = build(variant, n_s)
    n = iterations(VARIANTS[variant][1], n_s)
    kwargs = dict(rng=jax.random.PRNGKey(2), min_iterations=10 ** 6, max_iterations=n)
    fitter.fit(10.0, 0.1, **kwargs)  # warm-up: compile (jax) or JIT the kernels (numba)
    benchmark.pedantic(fitter.fit, args=(10.0, 0.1), kwargs=kwargs, rounds=3, iterations=1)
    benchmark.extra_info.update({"variant": variant, "n_s": n_s, "iterations": n,
                                 "ms/it": round(1e3 * benchmark.stats.stats.min / n, 3)})
