"""Aggregated two-pass fitting (docs/design/behaviour.md#aggregation): its cost against the
in-memory fit, its memory as n_s grows, and its scaling over (simulated) devices.

    .venv/bin/python -m pytest bench/bench_aggregation.py --benchmark-only

(a) per-iteration time of the Aggregated classes and the in-memory ones on the
    mean/variance problem (n_s = n_d = 1000, MLP 128-128), side by side;
(b) peak memory of one two-pass gradient as n_s grows 16x at fixed n_per_device
    (with memory_budget=0: pass 1 keeps nothing), each point in a fresh process:
    its peak RSS and XLA's buffer assignment;
(c) a conv net with 1.4e5 weights on 32×32 Gaussian random fields, with one
    batch per device and with several (on a CPU, loops over batches write
    convolutions as matrix products: see backends/jax/network.py);
(d) time per iteration on 1, 2 and 4 devices at fixed n_s and n_per_device;
(e) several batches on one device (n_s = 1000, n_d = 200, validation): in memory
    against aggregated with the default memory budget, with none (pass 2
    recomputes everything) and, for the simulator class, with room for the
    simulations only; wall and CPU time, interleaved, and XLA's memory for one
    gradient (peak RSS of a fresh process: the ``many`` script mode below).
    docs/performance/aggregation.md has the figures.

Figures go in the ``extra_info`` of each benchmark (printed after the table by
bench/conftest.py). Each timing round runs a fixed number of iterations (no
early stopping) after a warm-up fit that compiles everything; in-memory rounds
run interleaved with the aggregated ones (in the benchmark's ``setup``), so
both see the same machine load, and both are taken as their fastest round.
Run as a script, this file is one point of (b), of (e)'s memory, the stage
timings of one iteration, or one point of examples/gpu_aggregation.sh:

    python bench/bench_aggregation.py memory CLASS N_S
    python bench/bench_aggregation.py many CLASS DTYPE N_PER_DEVICE MEMORY_BUDGET
    python bench/bench_aggregation.py stages CLASS DTYPE
    python bench/bench_aggregation.py field VARIANT N_S N N_PER_DEVICE ITERATIONS [TRIES]
"""
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

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


def build(cls, simulator, model, n_s, layout=None, backend="jax", **aggregated):
    """An in-memory (layout None) or Aggregated (layout = (n_devices,
    n_per_device)) Simulator or Gradient IMNN with n_d = n_s; ``aggregated``:
    keyword arguments of the Aggregated class (memory_budget)."""
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
        backend=backend, **aggregated)


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
    if cls == "Simulator":
        fitter = build("Simulator", FIELD, conv(), n_s)
    else:  # keeping nothing of pass 1: the memory that stays flat whatever n_s
        fitter = build("Simulator", FIELD, conv(), n_s, (1, N_PER_DEVICE), memory_budget=0)
    data = fitter.source.data(fitter.runtime, jax.random.PRNGKey(2))
    α = imnn.get_α(10.0, 0.1)
    gradient = jax.jit(lambda w, data: imnn._fitting.loss_and_gradient(
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


# --- (e) several batches per device: what pass 1 keeps for pass 2 ----------------------

MANY_N_S, MANY_N_D = 1000, 200  # with a validation set of the same size (array classes)
MANY_BATCHES = {"5-batches": 200, "20-batches": 50}  # n_per_device on one device
MANY_ITERATIONS, MANY_ROUNDS = 20, 5


def many_batches_build(cls, n_per_device=None, memory_budget=None):
    """The mean/variance problem with n_s = 1000, n_d = 200 (and, for the array
    classes, a validation set): in memory (n_per_device None) or aggregated on
    one device."""
    sim, n_s, n_d = MEAN_VARIANCE, MANY_N_S, MANY_N_D
    args = (n_s, n_d, 2, 2, sim.input_shape, sim.θ_fid, mlp(), optax.adam(1e-3),
            jax.random.PRNGKey(0))
    aggregated = () if n_per_device is None else (jax.devices()[0], jax.devices()[:1],
                                                  n_per_device)
    kwargs = {} if n_per_device is None else {"memory_budget": memory_budget}
    if cls == "Simulator":
        data, validation = (sim.simulate,), ()
    else:
        def arrays(seed):
            keys = jax.random.split(jax.random.PRNGKey(seed), n_s)
            θ = jnp.asarray(sim.θ_fid)
            d = jax.vmap(sim.simulate, in_axes=(0, None))(keys, θ)
            if cls == "Gradient":
                dd = jax.vmap(jax.jacfwd(sim.simulate, argnums=1), in_axes=(0, None))(
                    keys[:n_d], θ)
                return np.asarray(d), np.asarray(dd)
            shifts = np.array([-1.0, 1.0])[:, None, None] * np.diag([0.05, 0.05])
            dd = jax.vmap(lambda k: jax.vmap(jax.vmap(lambda t: sim.simulate(k, θ + t)))(
                jnp.asarray(shifts, θ.dtype)))(keys[:n_d])
            return np.asarray(d), np.asarray(dd)

        data, validation = arrays(1), arrays(3)
        if cls == "NumericalGradient":
            data = data + (np.array([0.1, 0.1]),)
    if n_per_device is None:
        return getattr(imnn, f"{cls}IMNN")(*args, *data, *validation)
    return getattr(imnn, f"Aggregated{cls}IMNN")(*args, *data, *aggregated, *validation,
                                                 **kwargs)


def many_batches_variants(cls, n_per_device):
    """{label: (n_per_device, memory_budget)}: in memory, then aggregated with the
    default budget, with no budget (recompute everything), and for the simulator
    class with a budget for the simulations only."""
    variants = {"in memory": (None, None), "default budget": (n_per_device, None),
                "budget 0": (n_per_device, 0)}
    if cls == "Simulator":  # (d, ∂d/∂θ) of the n_d and d of the others, float64
        variants["simulations only"] = (n_per_device,
                                        (MANY_N_D * 3 + MANY_N_S - MANY_N_D) * 10 * 8)
    return variants


def fit_seconds(fitter):
    wall, cpu = time.perf_counter(), time.process_time()
    fitter.fit(10.0, 0.1, **fit_kwargs(MANY_ITERATIONS))
    return time.perf_counter() - wall, time.process_time() - cpu


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batches", MANY_BATCHES)
@pytest.mark.parametrize("cls", ["Gradient", "NumericalGradient", "Simulator"])
def test_e_many_batches(benchmark, cls, batches, dtype):
    """Per variant: ms per iteration (wall and process CPU time, each the fastest of
    interleaved rounds), its ratio to in memory, what each stream kept, and the
    memory XLA assigns to one compiled gradient (its temporary buffers, and
    everything: arguments, outputs and temporaries). The peak RSS of a fresh
    process per variant is ``python bench/bench_aggregation.py many ...``."""
    benchmark.group = (f"(e) several batches on one device: {cls}, n_s = 1000, n_d = 200, "
                       "MLP 128-128, mean/variance")
    n_per_device = MANY_BATCHES[batches]
    variants = many_batches_variants(cls, n_per_device)
    with jax.enable_x64(dtype == "float64"):
        fitters = {label: many_batches_build(cls, *v) for label, v in variants.items()}
        for fitter in fitters.values():
            fitter.fit(10.0, 0.1, **fit_kwargs(MANY_ITERATIONS))  # warm-up: compile
        times = {label: [] for label in fitters}

        def one_round():  # A, B, C, A, B, C, ...: the same machine load for all
            for label, fitter in fitters.items():
                times[label].append(fit_seconds(fitter))

        benchmark.pedantic(one_round, rounds=MANY_ROUNDS, iterations=1)
        memory = {label: gradient_memory(fitter) for label, fitter in fitters.items()}
    best = {label: [1e3 * min(t[k] for t in times[label]) / MANY_ITERATIONS for k in (0, 1)]
            for label in times}
    for label, (wall, cpu) in best.items():
        figures = {"ms/it": round(wall, 2), "cpu ms/it": round(cpu, 2),
                   "ratio": round(wall / best["in memory"][0], 3),
                   "cpu ratio": round(cpu / best["in memory"][1], 3)}
        if label != "in memory":
            figures["kept"] = fitters[label].executor.kept
        figures.update(memory[label])
        benchmark.extra_info[label] = figures


def gradient_memory(fitter):
    """XLA's buffer assignment for one compiled two-pass gradient of ``fitter``:
    temporaries, and temporaries with arguments and outputs, in MiB."""
    data = fitter._data(jax.random.PRNGKey(2))
    α = imnn.get_α(10.0, 0.1)
    compiled = jax.jit(lambda w, data: imnn._fitting.loss_and_gradient(
        fitter.executor, w, fitter.source.training_streams(data, 0), fitter.source.sizes,
        10.0, α)).lower(fitter.w, data).compile()
    analysis = compiled.memory_analysis()
    total = (analysis.temp_size_in_bytes + analysis.argument_size_in_bytes
             + analysis.output_size_in_bytes - analysis.alias_size_in_bytes)
    return {"xla_temp_MiB": round(analysis.temp_size_in_bytes / 2 ** 20, 2),
            "xla_total_MiB": round(total / 2 ** 20, 2)}


def many_batches_memory(cls, dtype, n_per_device, memory_budget):
    """One variant of (e) in this (fresh) process: its peak RSS after a compiled
    gradient and a few fit iterations, and XLA's temporary buffers for the gradient."""
    jax.config.update("jax_enable_x64", dtype == "float64")
    fitter = many_batches_build(cls, n_per_device, memory_budget)
    data = fitter._data(jax.random.PRNGKey(2))
    α = imnn.get_α(10.0, 0.1)
    gradient = jax.jit(lambda w, data: imnn._fitting.loss_and_gradient(
        fitter.executor, w, fitter.source.training_streams(data, 0), fitter.source.sizes,
        10.0, α))
    compiled = gradient.lower(fitter.w, data).compile()
    jax.block_until_ready(compiled(fitter.w, data))
    fitter.fit(10.0, 0.1, **fit_kwargs(3))
    return {"peak_rss_MiB": round(peak_rss_MiB(), 1),
            "xla_temp_MiB": round(compiled.memory_analysis().temp_size_in_bytes / 2 ** 20, 2)}


def stages(cls, dtype, rounds=5, repeats=20):
    """Process CPU ms of each stage of one iteration, in memory and aggregated on
    one device with 5 to 40 batches and memory_budget=0 (and the default budget
    at 20 batches): pass 1 of the training streams, both passes (the gradient),
    the validation pass (array classes), and a fit iteration; each the fastest of
    ``rounds`` interleaved rounds. Returns the Markdown table of
    docs/performance/aggregation.md ("Where the time went")."""
    jax.config.update("jax_enable_x64", dtype == "float64")
    α = imnn.get_α(10.0, 0.1)
    variants = {"in memory": (None, None)}
    variants.update({f"{MANY_N_S // n} batches of {n}": (n, 0) for n in (200, 100, 50, 25)})
    variants["20 batches of 50, default budget"] = (50, None)
    fitters = {label: many_batches_build(cls, *v) for label, v in variants.items()}

    def compiled(fitter):
        ex, source = fitter.executor, fitter.source
        data = fitter._data(jax.random.PRNGKey(2))
        functions = {
            "pass 1": lambda w, d: imnn._fitting.summaries_of(
                ex, w, source.training_streams(d, 0), source.sizes),
            "pass 1 + 2": lambda w, d: imnn._fitting.loss_and_gradient(
                ex, w, source.training_streams(d, 0), source.sizes, 10.0, α)}
        if fitter.validate:
            functions["validation"] = lambda w, d: imnn._fitting.summaries_of(
                ex, w, source.validation_streams(d), source.sizes)
        return {name: jax.jit(f) for name, f in functions.items()}, data

    def cpu_ms(f, *args):
        jax.block_until_ready(f(*args))
        start = time.process_time()
        for _ in range(repeats):
            jax.block_until_ready(f(*args))
        return 1e3 * (time.process_time() - start) / repeats

    stages = {label: compiled(fitter) for label, fitter in fitters.items()}
    best = {label: {} for label in fitters}
    for r in range(rounds):
        for label, (functions, data) in stages.items():
            for name, f in functions.items():
                best[label][name] = min(best[label].get(name, math.inf),
                                        cpu_ms(f, fitters[label].w, data))
        for label, fitter in fitters.items():
            if r == 0:
                fitter.fit(10.0, 0.1, **fit_kwargs(MANY_ITERATIONS))  # compiles
            start = time.process_time()
            fitter.fit(10.0, 0.1, **fit_kwargs(MANY_ITERATIONS))
            best[label]["fit iteration"] = min(
                best[label].get("fit iteration", math.inf),
                1e3 * (time.process_time() - start) / MANY_ITERATIONS)
    names = list(best["in memory"])
    lines = ["| configuration | kept | " + " | ".join(names) + " | fit ÷ in memory |",
             "|---|---|" + "---|" * (len(names) + 1)]
    for label, figures in best.items():
        kept = ", ".join(fitters[label].executor.kept.values()) if label != "in memory" else "-"
        ratio = figures["fit iteration"] / best["in memory"]["fit iteration"]
        lines.append(f"| {label} | {kept} | " + " | ".join(f"{figures[n]:.2f}" for n in names)
                     + f" | {ratio:.2f} |")
    return "\n".join(lines)


# --- the 128×128 field on a GPU (examples/gpu_aggregation.sh) ---------------------------

def field_point(variant, n_s, N, n_per_device, iterations, tries=2):
    """ms per iteration and peak memory of one configuration of
    examples/gpu_aggregation.sh, in this (fresh) process: the Gaussian random field
    of side N and the quadratic network of examples/field_inference.py (8 5×5
    filters), n_s = n_d, one device. ``variant``: "in-memory" (SimulatorIMNN) or
    "budget-B" (AggregatedSimulatorIMNN with memory_budget B bytes, "default" for
    the default). Per iteration: (t(3k) − t(k)) / 2k over fits of k and 3k
    iterations after a compiling one, so that what ``fit`` does once (the Fisher
    statistics at the end) cancels; the fastest of ``tries``."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from field_inference import quadratic_network

    field = GaussianRandomField(N=N)
    args = (n_s, n_s, 2, 2, field.input_shape, field.θ_fid, quadratic_network(8, 5),
            optax.adam(1e-3), jax.random.PRNGKey(0), field.simulate)
    device = jax.devices()[0]
    if variant == "in-memory":
        fitter = imnn.SimulatorIMNN(*args)
    else:
        budget = variant.removeprefix("budget-")
        fitter = imnn.AggregatedSimulatorIMNN(
            *args, device, [device], n_per_device,
            memory_budget=None if budget == "default" else int(budget))
    try:
        fitter.fit(10.0, 0.1, **fit_kwargs(iterations))  # compiles
        seconds = {}
        for _ in range(tries):
            for k in (iterations, 3 * iterations):
                start = time.perf_counter()
                fitter.fit(10.0, 0.1, **fit_kwargs(k))
                seconds[k] = min(seconds.get(k, math.inf), time.perf_counter() - start)
    except Exception as error:  # noqa: BLE001 - out of memory is a result here
        return {"variant": variant, "n_s": n_s, "error": type(error).__name__,
                "message": str(error).splitlines()[0][:200]}
    stats = device.memory_stats() or {}
    return {"variant": variant, "n_s": n_s, "N": N, "platform": device.platform,
            "ms/it": 1e3 * (seconds[3 * iterations] - seconds[iterations]) / (2 * iterations),
            "kept": getattr(fitter.executor, "kept", {}) if variant != "in-memory" else {},
            "peak_MiB": (stats["peak_bytes_in_use"] / 2 ** 20 if "peak_bytes_in_use" in stats
                         else peak_rss_MiB()),
            "peak_of": "device" if "peak_bytes_in_use" in stats else "process RSS"}


if __name__ == "__main__":
    if sys.argv[1] == "many":
        def number(text):
            return None if text == "None" else int(text)

        print(json.dumps(many_batches_memory(sys.argv[2], sys.argv[3], number(sys.argv[4]),
                                             number(sys.argv[5]))))
        sys.exit(0)
    if sys.argv[1] == "stages":  # CLASS DTYPE
        print(stages(sys.argv[2], sys.argv[3]))
        sys.exit(0)
    if sys.argv[1] == "field":  # VARIANT N_S N N_PER_DEVICE ITERATIONS [TRIES]
        print(json.dumps(field_point(sys.argv[2], *map(int, sys.argv[3:]))))
        sys.exit(0)
    assert sys.argv[1] == "memory", sys.argv
    print(json.dumps(memory_point(sys.argv[2], int(sys.argv[3]))))
