"""Aggregated two-pass fitting (docs/design/behaviour.md#aggregation): its cost against the
in-memory fit, its memory as n_s grows, and its scaling over (simulated) devices.

    .venv/bin/python -m pytest bench/bench_aggregation.py --benchmark-only

(a) per-iteration time of the Aggregated classes and the in-memory ones on the
    mean/variance problem (n_s = n_d = 1000, MLP 128-128), side by side;
(b) peak memory of one two-pass gradient as n_s grows 16x at fixed n_per_device,
    each point in a fresh process: its peak RSS and XLA's buffer assignment;
(c) a conv net with 1.4e5 weights on 32×32 Gaussian random fields, with one
    batch per device and with several (on a CPU, loops over batches write
    convolutions as matrix products: see backends/jax/network.py);
(d) time per iteration on 1, 2 and 4 devices at fixed n_s and n_per_device.

Figures go in the ``extra_info`` of each benchmark (printed after the table by
bench/conftest.py). Each timing round runs a fixed number of iterations (no
early stopping) after a warm-up fit that compiles everything; in-memory rounds
run interleaved with the aggregated ones (in the benchmark's ``setup``), so
both see the same machine load, and both are taken as their fastest round.
Run as a script, this file is one point of (b):

    python bench/bench_aggregation.py memory CLASS N_S
"""
import json
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import imnn
from imnn.simulators import GaussianMeanVariance, GaussianRandomField
from imnn.utils import value_and_jacfwd

nn = imnn.nn
MEAN_VARIANCE = GaussianMeanVariance(n=10)
FIELD = GaussianRandomField(N=32)


def mlp():
    return nn.serial(nn.Dense(128), nn.LeakyRelu(), nn.Dense(128), nn.LeakyRelu(), nn.Dense(2))


def conv():
    """137 730 weights: three stride-2 3×3 convolutions (8, 16, 32 channels), then
    Dense(256) on the 4×4×32 features."""
    return nn.serial(nn.Reshape((32, 32, 1)),
                     nn.Conv(8, (3, 3), (2, 2)), nn.LeakyRelu(),
                     nn.Conv(16, (3, 3), (2, 2)), nn.LeakyRelu(),
                     nn.Conv(32, (3, 3), (2, 2)), nn.LeakyRelu(),
                     nn.Flatten, nn.Dense(256), nn.LeakyRelu(), nn.Dense(2))


def build(cls, simulator, model, n_s, layout=None, backend="jax"):
    """An in-memory (layout None) or Aggregated (layout = (n_devices,
    n_per_device)) Simulator or Gradient IMNN with n_d = n_s."""
    args = (n_s, n_s, 2, 2, simulator.input_shape, simulator.θ_fid, model, optax.adam(1e-3),
            jax.random.PRNGKey(0))
    if cls == "Simulator":
        data = (simulator.simulate if backend == "jax" else simulator.simulate_numpy,)
    else:
        keys = jax.random.split(jax.random.PRNGKey(1), n_s)
        d, dd = jax.vmap(value_and_jacfwd(simulator.simulate, argnums=1), in_axes=(0, None))(
            keys, jnp.asarray(simulator.θ_fid))
        data = (np.asarray(d), np.asarray(dd))
    if layout is None:
        return getattr(imnn, f"{cls}IMNN")(*args, *data, backend=backend)
    n_devices, n_per_device = layout
    if n_devices > len(jax.devices()):
        pytest.skip(f"needs {n_devices} devices, {len(jax.devices())} available")
    return getattr(imnn, f"Aggregated{cls}IMNN")(
        *args, *data, jax.devices()[0], jax.devices()[:n_devices], n_per_device,
        backend=backend)


def fit_kwargs(n):
    return dict(rng=jax.random.PRNGKey(2), min_iterations=10 ** 6, max_iterations=n)


def time_fit(benchmark, fitter, n, rounds, baseline=None):
    """ms per iteration of ``fitter`` (and of ``baseline``, timed interleaved)."""
    for f in (fitter, baseline):
        if f is not None:
            f.fit(10.0, 0.1, **fit_kwargs(n))  # warm-up: compile
    baseline_times = []

    def time_baseline():
        start = time.perf_counter()
        baseline.fit(10.0, 0.1, **fit_kwargs(n))
        baseline_times.append(time.perf_counter() - start)

    benchmark.pedantic(fitter.fit, args=(10.0, 0.1), kwargs=fit_kwargs(n), rounds=rounds,
                       iterations=1, setup=time_baseline if baseline is not None else None)
    ms = 1e3 * benchmark.stats.stats.min / n
    benchmark.extra_info.update({"iterations": n, "ms/it": round(ms, 3)})
    if baseline is not None:
        ms_baseline = 1e3 * min(baseline_times) / n
        benchmark.extra_info.update({"in-memory ms/it": round(ms_baseline, 3),
                                     "ratio": round(ms / ms_baseline, 3)})


# --- (a) aggregated against in memory -------------------------------------------------

LAYOUTS = {"1dev-1batch": (1, 1000), "1dev-4batches": (1, 250), "4dev-1batch": (4, 250)}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cls", ["Simulator", "Gradient"])
def test_a_aggregated_vs_in_memory(benchmark, cls, layout):
    benchmark.group = f"(a) {cls}: aggregated vs in memory, n_s = n_d = 1000, MLP 128-128"
    aggregated = build(cls, MEAN_VARIANCE, mlp(), 1000, LAYOUTS[layout])
    in_memory = build(cls, MEAN_VARIANCE, mlp(), 1000)
    time_fit(benchmark, aggregated, n=25, rounds=20, baseline=in_memory)


# --- (b) memory as n_s grows -----------------------------------------------------------

N_S_POINTS = (250, 1000, 4000)  # 16x
N_PER_DEVICE = 50


def memory_point(cls, n_s):
    """One two-pass gradient of the conv net on n_s = n_d fields, n_per_device
    at a time on one device (or all at once in memory). Returns the process's
    peak RSS, XLA's temporary buffers for the gradient, and the size of the
    summaries x and ∂x/∂θ it must hold."""
    layout = None if cls == "Simulator" else (1, N_PER_DEVICE)
    fitter = build("Simulator", FIELD, conv(), n_s, layout)
    data = fitter.source.data(fitter.runtime, jax.random.PRNGKey(2))
    α = imnn.get_α(10.0, 0.1)
    gradient = jax.jit(lambda w, data: imnn.fitting.loss_and_gradient(
        fitter.executor, w, fitter.source.training_streams(data, 0), fitter.source.sizes,
        10.0, α))
    compiled = gradient.lower(fitter.w, data).compile()
    jax.block_until_ready(compiled(fitter.w, data))
    itemsize = np.dtype(fitter.runtime.dtype).itemsize
    return {"peak_rss_MiB": peak_rss_MiB(),
            "xla_temp_MiB": compiled.memory_analysis().temp_size_in_bytes / 2 ** 20,
            "summaries_MiB": n_s * 2 * (1 + 2) * itemsize / 2 ** 20}


def peak_rss_MiB():
    """This process's peak resident memory. On Linux from VmHWM: ru_maxrss
    would also count the pytest process this one was forked from."""
    try:
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_memory_point(cls, n_s):
    process = subprocess.run([sys.executable, __file__, "memory", cls, str(n_s)],
                             capture_output=True, text=True, timeout=600)
    if process.returncode:
        raise RuntimeError(f"memory point {cls} n_s={n_s} failed:\n{process.stderr}")
    return json.loads(process.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("cls", ["AggregatedSimulator", "Simulator"])
def test_b_peak_memory_as_n_s_grows(benchmark, cls):
    benchmark.group = (f"(b) peak memory of one gradient, conv net on 32×32 fields, n_s = n_d "
                       f"in {N_S_POINTS}, n_per_device = {N_PER_DEVICE} on one device")
    points = benchmark.pedantic(lambda: {n: run_memory_point(cls, n) for n in N_S_POINTS},
                                rounds=1, iterations=1)
    for key in ("peak_rss_MiB", "xla_temp_MiB", "summaries_MiB"):
        benchmark.extra_info[key] = [round(points[n][key], 1) for n in N_S_POINTS]
    benchmark.extra_info["n_s"] = list(N_S_POINTS)
    if cls == "AggregatedSimulator":
        # Flat apart from the (n_s, s) summaries (and their cotangents), up to rounding.
        first, last = points[N_S_POINTS[0]], points[N_S_POINTS[-1]]
        growth = last["xla_temp_MiB"] - first["xla_temp_MiB"]
        assert growth <= 4 * (last["summaries_MiB"] - first["summaries_MiB"]) + 0.5, points


# --- (c) a conv net on 32×32 inputs ------------------------------------------------------

@pytest.mark.parametrize("layout", [(1, 200), (4, 50), (1, 50), (1, 25), (2, 25)],
                         ids=["1dev-1batch", "4dev-1batch", "1dev-4batches", "1dev-8batches",
                              "2dev-4batches"])
def test_c_conv_net(benchmark, layout):
    benchmark.group = "(c) conv net (137 730 weights) on 32×32 fields, n_s = n_d = 200"
    aggregated = build("Simulator", FIELD, conv(), 200, layout)
    in_memory = build("Simulator", FIELD, conv(), 200)
    time_fit(benchmark, aggregated, n=5, rounds=7, baseline=in_memory)


# --- (d) devices -----------------------------------------------------------------------

@pytest.mark.parametrize("n_devices", [1, 2, 4])
def test_d_iteration_time_vs_devices(benchmark, n_devices):
    benchmark.group = ("(d) AggregatedSimulatorIMNN over devices, n_s = n_d = 1000, "
                       "n_per_device = 250, MLP 128-128")
    time_fit(benchmark, build("Simulator", MEAN_VARIANCE, mlp(), 1000, (n_devices, 250)),
             n=25, rounds=20)


if __name__ == "__main__":
    assert sys.argv[1] == "memory", sys.argv
    print(json.dumps(memory_point(sys.argv[2], int(sys.argv[3]))))
