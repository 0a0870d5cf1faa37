"""Compile seconds of the first ``fit()`` per class, and time to a first result
with JAX's persistent compilation cache cold and warm.

    python bench/bench_compile.py                  # compile table, this tree
    python bench/bench_compile.py --before PYTHON  # ... beside another install's
    python bench/bench_compile.py --cache          # time to first result, cold/warm

Every measurement runs in a fresh Python process (``--child``), so nothing is
compiled or traced beforehand. The problem is the mean/variance toy of the
demo and tests/conftest.py: 10 draws of N(μ, σ²) at θ = (0, 1), n_s = n_d =
1000, an MLP 128-128 with ELU, Adam 1e-3; the Gradient and NumericalGradient
classes get validation data; the Aggregated classes run on four simulated CPU
devices with n_per_device = 50 (five batches per device and stream). A child
builds the IMNN, then times ``fit(10, 0.1, max_iterations=10)`` (first call:
trace, compile, iterate, statistics), counts the programs XLA compiled in it
(``jax.monitoring`` compile events), and times a second identical call.

``--before PYTHON`` runs the same children with another interpreter (a venv
holding an earlier imnn), interleaved with this tree's, round by round, so that
both see the same machine load. Times are wall and CPU (process_time, all
threads) seconds; the median over rounds is printed, with the load average.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

CLASSES = ("SimulatorIMNN", "GradientIMNN", "NumericalGradientIMNN",
           "AggregatedSimulatorIMNN", "AggregatedGradientIMNN",
           "AggregatedNumericalGradientIMNN")
N_S = N_D = 1000
N_DEVICES, N_PER_DEVICE = 4, 50


def child(name: str, iterations: int, cache: str | None) -> dict:
    """Build one class and time its first and second fit (runs in a fresh process)."""
    t_start, c_start = time.perf_counter(), time.process_time()
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " "
                               f"--xla_force_host_platform_device_count={N_DEVICES}").strip()
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import imnn
    from imnn.simulators import GaussianMeanVariance
    from imnn.utils import value_and_jacfwd

    if cache:
        imnn.enable_compilation_cache(cache)
    t_import = time.perf_counter() - t_start
    events: dict[str, list] = {}
    programs: list[str] = []

    def listen(event, duration, **kwargs):
        total = events.setdefault(event, [0, 0.0])
        total[0] += 1
        total[1] += duration
        if event == "/jax/core/compile/backend_compile_duration":
            programs.append(f"{kwargs.get('fun_name', '?')} {duration:.2f}")

    jax.monitoring.register_event_duration_secs_listener(listen)
    sim = GaussianMeanVariance(n=10)
    nn = imnn.nn
    model = nn.serial(nn.Dense(128), nn.Elu(), nn.Dense(128), nn.Elu(), nn.Dense(2))
    args = (N_S, N_D, 2, 2, (10,), sim.θ_fid, model, optax.adam(1e-3), jax.random.PRNGKey(0))
    θ = jnp.asarray(sim.θ_fid)
    δθ = np.array([0.1, 0.1])

    def exact(seed):
        keys = jax.random.split(jax.random.PRNGKey(seed), N_S)
        d, dd = jax.vmap(value_and_jacfwd(sim.simulate, argnums=1), in_axes=(0, None))(keys, θ)
        return np.asarray(d), np.asarray(dd[:N_D])

    def numerical(seed):
        keys = jax.random.split(jax.random.PRNGKey(seed), N_S)
        shifts = jnp.asarray(np.einsum("i,jk->ijk", [-1.0, 1.0], np.diag(δθ) / 2))
        d = jax.vmap(sim.simulate, in_axes=(0, None))(keys, θ)
        dd = jax.vmap(lambda k: jax.vmap(jax.vmap(lambda s: sim.simulate(k, θ + s)))(shifts))(
            keys[:N_D])
        return np.asarray(d), np.asarray(dd)

    aggregated = (jax.devices("cpu")[0], jax.devices(), N_PER_DEVICE)
    plain = name.removeprefix("Aggregated")
    extra = aggregated if name.startswith("Aggregated") else ()
    cls = getattr(imnn, name)
    if plain == "SimulatorIMNN":
        fitter = cls(*args, sim.simulate, *extra)
    elif plain == "GradientIMNN":
        fitter = cls(*args, *exact(1), *extra, *exact(2))
    else:
        fitter = cls(*args, *numerical(1), δθ, *extra, *numerical(2))
    t_built = time.perf_counter() - t_start
    events.clear()
    programs.clear()
    kwargs = dict(max_iterations=iterations, min_iterations=0)
    if plain == "SimulatorIMNN":  # fresh simulations from this key
        kwargs["rng"] = jax.random.PRNGKey(3)
    t0, c0 = time.perf_counter(), time.process_time()
    fitter.fit(10.0, 0.1, **kwargs)
    t1, c1 = time.perf_counter(), time.process_time()
    first = {k: [n, round(s, 3)] for k, (n, s) in events.items()}
    events.clear()
    programs[:] = programs[:compiles_in_first(first)]
    fitter.fit(10.0, 0.1, **kwargs)
    t2, c2 = time.perf_counter(), time.process_time()
    compiles = first.get("/jax/core/compile/backend_compile_duration", [0, 0.0])
    return {"class": name, "import_s": t_import, "built_s": t_built,
            "first_fit_s": t1 - t0, "first_fit_cpu_s": c1 - c0,
            "to_first_result_s": t1 - t_start, "to_first_result_cpu_s": c1 - c_start,
            "second_fit_s": t2 - t1, "second_fit_cpu_s": c2 - c1, "programs_compiled": compiles[0],
            "xla_compile_s": compiles[1], "programs": list(programs),
            "trace_s": first.get("/jax/core/compile/jaxpr_trace_duration", [0, 0.0])[1],
            "lower_s": first.get("/jax/core/compile/jaxpr_to_mlir_module_duration",
                                 [0, 0.0])[1],
            "recompiles_in_second_fit": events.get(
                "/jax/core/compile/backend_compile_duration", [0])[0]}


def compiles_in_first(first):
    return first.get("/jax/core/compile/backend_compile_duration", [0])[0]


def run_child(python: str, name: str, iterations=10, cache=None) -> dict:
    command = [python, os.path.abspath(__file__), "--child", name,
               "--iterations", str(iterations)] + (["--cache-dir", cache] if cache else [])
    start = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - start
    return result


def median(results, key):
    return statistics.median(r[key] for r in results)


def compile_table(classes, rounds, before):
    pythons = {"after": sys.executable}
    if before:
        pythons = {"before": before, "after": sys.executable}
    results = {(c, v): [] for c in classes for v in pythons}
    loads = []
    for _ in range(rounds):
        for name in classes:
            for version, python in pythons.items():
                loads.append(os.getloadavg()[0])
                results[name, version].append(run_child(python, name))
    print(f"# first fit() (10 iterations), median of {rounds} round(s); "
          f"1-min load average {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores")
    header = "| class | " + " | ".join(
        f"{v}: wall s | {v}: CPU s | {v}: programs | {v}: XLA compile s" for v in pythons)
    if before:
        header += " | CPU ratio after/before | wall ratio"
    print(header + " |")
    print("|---" * (1 + 4 * len(pythons) + (2 if before else 0)) + "|")
    for name in classes:
        row = [name]
        for version in pythons:
            r = results[name, version]
            row += [f"{median(r, 'first_fit_s'):.2f}", f"{median(r, 'first_fit_cpu_s'):.2f}",
                    f"{median(r, 'programs_compiled'):.0f}", f"{median(r, 'xla_compile_s'):.2f}"]
        if before:
            b, a = results[name, "before"], results[name, "after"]
            row += [f"{median(a, 'first_fit_cpu_s') / median(b, 'first_fit_cpu_s'):.2f}",
                    f"{median(a, 'first_fit_s') / median(b, 'first_fit_s'):.2f}"]
        print("| " + " | ".join(row) + " |")
    print()
    print("second fit() (same arguments), median wall s / CPU s: " + ", ".join(
        f"{name} {version} {median(results[name, version], 'second_fit_s'):.3f} / "
        f"{median(results[name, version], 'second_fit_cpu_s'):.3f}"
        for name in classes for version in pythons))
    print("programs compiled again in the second fit(): " + ", ".join(
        f"{name} {version} {max(r['recompiles_in_second_fit'] for r in results[name, version])}"
        for name in classes for version in pythons))


def cache_table(classes, rounds):
    """Time from process start to the end of the first fit(max_iterations=1)."""
    rows = {(c, s): [] for c in classes for s in ("off", "cold", "warm")}
    loads = []
    for _ in range(rounds):
        for name in classes:
            with tempfile.TemporaryDirectory() as folder:
                loads.append(os.getloadavg()[0])
                rows[name, "off"].append(run_child(sys.executable, name, 1))
                rows[name, "cold"].append(run_child(sys.executable, name, 1, folder))
                rows[name, "warm"].append(run_child(sys.executable, name, 1, folder))
    print(f"# time to a first result: process start to the end of fit(max_iterations=1), "
          f"median of {rounds} round(s); 1-min load average {min(loads):.1f}-{max(loads):.1f} "
          f"on {os.cpu_count()} cores")
    print("| class | no cache: wall s | CPU s | cold cache: wall s | CPU s | warm cache: wall s "
          "| CPU s | warm: programs loaded |")
    print("|---|---|---|---|---|---|---|---|")
    for name in classes:
        cells = [name]
        for state in ("off", "cold", "warm"):
            r = rows[name, state]
            cells += [f"{median(r, 'to_first_result_s'):.2f}",
                      f"{median(r, 'to_first_result_cpu_s'):.2f}"]
        cells.append(f"{median(rows[name, 'warm'], 'programs_compiled'):.0f}")
        print("| " + " | ".join(cells) + " |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", nargs="+", default=list(CLASSES), choices=CLASSES)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", metavar="PYTHON",
                        help="an interpreter whose imnn gives the 'before' columns")
    parser.add_argument("--cache", action="store_true",
                        help="time to a first result with the compilation cache off, cold, warm")
    parser.add_argument("--child", choices=CLASSES, help=argparse.SUPPRESS)
    parser.add_argument("--iterations", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.iterations, args.cache_dir)))
    elif args.cache:
        cache_table(args.classes, args.rounds)
    else:
        compile_table(args.classes, args.rounds, args.before)


if __name__ == "__main__":
    main()
