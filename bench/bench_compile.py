"""Compile seconds of the first ``fit()`` per class, and time to a first result
with JAX's persistent compilation cache cold and warm.

    python bench/bench_compile.py                   # compile table, this tree
    python bench/bench_compile.py --earlier PYTHON  # ... beside the earlier public library
    python bench/bench_compile.py --before PYTHON   # ... beside another install's imnn
    python bench/bench_compile.py --cache           # time to first result, cold/warm

Every measurement runs in a fresh Python process (``--child``), so nothing is
compiled or traced beforehand. The problem is the mean/variance toy of the
demo: 10 draws of N(μ, σ²) at θ = (0, 1) (the simulator ``simulate`` below,
the same function for every library), n_s = n_d = 1000, an MLP 128-128 with
ELU, Adam 1e-3; the Gradient and NumericalGradient classes get validation
data; the Aggregated classes run on four simulated CPU devices with
n_per_device = 50. A child builds the IMNN, then times
``fit(10, 0.1, max_iterations=10, min_iterations=0)`` (first call: trace,
compile, iterate, statistics), counts the programs XLA compiled in it
(``jax.monitoring`` compile events), and times a second identical call.
``BENCH_COMPILE_STEADY=N`` in the environment adds a third fit of N iterations
(ms per iteration once compiled). ``--import-scipy`` imports scipy.linalg in every
child before the first fit, so that no child pays that import inside it: jaxlib
loads its CPU LAPACK kernels (Cholesky, LU) from SciPy when a program with one is
first lowered, a one-off 0.15-0.25 CPU s that both libraries otherwise pay in their
first fit (the earlier one imports SciPy through TensorFlow, but not scipy.linalg;
each child reports ``scipy_loaded_before_fit``).

``--earlier PYTHON`` runs the children of the earlier public IMNN library
(0.3.x, importable as ``imnn`` by that interpreter; its stax model and
``jax.example_libraries`` Adam, the same constructor and fit arguments) and
``--before PYTHON`` those of another imnn install, interleaved with this tree's,
round by round, so that all see the same machine load. Times are wall and CPU
(process_time, all threads) seconds; the median over rounds is printed, with
the load average.
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


def simulate(key, θ):
    """One draw of the mean/variance problem: 10 values of N(θ[0], θ[1])."""
    import jax
    import jax.numpy as jnp
    return θ[0] + jnp.sqrt(θ[1]) * jax.random.normal(key, (10,))


def child(name: str, iterations: int, cache: str | None, api: str = "imnn") -> dict:
    """Build one class and time its first and second fit (runs in a fresh process).

    ``api`` is ``"imnn"`` (this tree, or the imnn of ``--before``) or ``"earlier"``
    (the earlier public IMNN library, 0.3.x: stax model, jax.example_libraries
    optimiser, the same problem and constructor arguments).
    """
    t_start, c_start = time.perf_counter(), time.process_time()
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " "
                               f"--xla_force_host_platform_device_count={N_DEVICES}").strip()
    import jax
    import jax.numpy as jnp
    import numpy as np

    import imnn

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
    θ_fid = np.array([0.0, 1.0], dtype=np.float32)
    θ = jnp.asarray(θ_fid)
    δθ = np.array([0.1, 0.1], dtype=np.float32)
    if api == "earlier":
        from jax.example_libraries import optimizers, stax
        model = stax.serial(stax.Dense(128), stax.Elu, stax.Dense(128), stax.Elu,
                            stax.Dense(2))
        optimiser = optimizers.adam(1e-3)
    else:
        import optax
        nn = imnn.nn
        model = nn.serial(nn.Dense(128), nn.Elu(), nn.Dense(128), nn.Elu(), nn.Dense(2))
        optimiser = optax.adam(1e-3)
    args = (N_S, N_D, 2, 2, (10,), θ_fid, model, optimiser, jax.random.PRNGKey(0))

    def exact(seed):
        keys = jax.random.split(jax.random.PRNGKey(seed), N_S)
        d = jax.vmap(simulate, in_axes=(0, None))(keys, θ)
        dd = jax.vmap(jax.jacfwd(simulate, argnums=1), in_axes=(0, None))(keys[:N_D], θ)
        return np.asarray(d), np.asarray(dd)

    def numerical(seed):
        keys = jax.random.split(jax.random.PRNGKey(seed), N_S)
        shifts = jnp.asarray(np.einsum("i,jk->ijk", [-1.0, 1.0], np.diag(δθ) / 2))
        d = jax.vmap(simulate, in_axes=(0, None))(keys, θ)
        dd = jax.vmap(lambda k: jax.vmap(jax.vmap(lambda s: simulate(k, θ + s)))(shifts))(
            keys[:N_D])
        return np.asarray(d), np.asarray(dd)

    aggregated = (jax.devices("cpu")[0], jax.devices(), N_PER_DEVICE)
    plain = name.removeprefix("Aggregated")
    extra = aggregated if name.startswith("Aggregated") else ()
    cls = getattr(imnn, name)
    if plain == "SimulatorIMNN":
        fitter = cls(*args, simulate, *extra)
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
    if os.environ.get("BENCH_COMPILE_IMPORT_SCIPY") == "1":
        import scipy.linalg  # noqa: F401 - see --import-scipy
    scipy_loaded = "scipy.linalg" in sys.modules
    t0, c0 = time.perf_counter(), time.process_time()
    fitter.fit(10.0, 0.1, **kwargs)
    jax.block_until_ready(fitter.F)
    t1, c1 = time.perf_counter(), time.process_time()
    first = {k: [n, round(s, 3)] for k, (n, s) in events.items()}
    events.clear()
    first_programs = programs[:compiles_in_first(first)]
    fitter.fit(10.0, 0.1, **kwargs)
    jax.block_until_ready(fitter.F)
    t2, c2 = time.perf_counter(), time.process_time()
    steady = {}
    if os.environ.get("BENCH_COMPILE_STEADY"):  # ms per iteration of a longer, compiled fit
        n = int(os.environ["BENCH_COMPILE_STEADY"])
        kwargs.update(max_iterations=n, min_iterations=n)
        t3, c3 = time.perf_counter(), time.process_time()
        fitter.fit(10.0, 0.1, **kwargs)
        jax.block_until_ready(fitter.F)
        steady = {"steady_ms": 1e3 * (time.perf_counter() - t3) / n,
                  "steady_cpu_ms": 1e3 * (time.process_time() - c3) / n}
    compiles = first.get("/jax/core/compile/backend_compile_duration", [0, 0.0])
    return {**steady, "class": name, "import_s": t_import, "built_s": t_built,
            "first_fit_s": t1 - t0, "first_fit_cpu_s": c1 - c0,
            "to_first_result_s": t1 - t_start, "to_first_result_cpu_s": c1 - c_start,
            "second_fit_s": t2 - t1, "second_fit_cpu_s": c2 - c1, "programs_compiled": compiles[0],
            "xla_compile_s": compiles[1], "programs": first_programs,
            "trace_s": first.get("/jax/core/compile/jaxpr_trace_duration", [0, 0.0])[1],
            "lower_s": first.get("/jax/core/compile/jaxpr_to_mlir_module_duration",
                                 [0, 0.0])[1],
            "scipy_loaded_before_fit": scipy_loaded,
            "recompiles_in_second_fit": events.get(
                "/jax/core/compile/backend_compile_duration", [0])[0]}


def compiles_in_first(first):
    return first.get("/jax/core/compile/backend_compile_duration", [0])[0]


def run_child(python: str, name: str, iterations=10, cache=None, api="imnn") -> dict:
    command = [python, os.path.abspath(__file__), "--child", name, "--api", api,
               "--iterations", str(iterations)] + (["--cache-dir", cache] if cache else [])
    start = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"{name} ({api}, {python}) failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - start
    return result


def median(results, key):
    return statistics.median(r[key] for r in results)


def compile_table(classes, rounds, before=None, earlier=None):
    """First fit() per class and version, interleaved round by round; prints a table.

    The columns are, in order, the earlier library (``earlier``: its interpreter),
    an earlier imnn (``before``: its interpreter) and this tree (``imnn``); the
    ratio columns divide this tree's medians by the first column's.
    """
    versions = {}
    if earlier:
        versions["earlier"] = (earlier, "earlier")
    if before:
        versions["before"] = (before, "imnn")
    versions["imnn"] = (sys.executable, "imnn")
    results = {(c, v): [] for c in classes for v in versions}
    loads = []
    for _ in range(rounds):
        for name in classes:
            for version, (python, api) in versions.items():
                loads.append(os.getloadavg()[0])
                results[name, version].append(run_child(python, name, api=api))
    first = next(iter(versions))
    compare = len(versions) > 1
    print(f"# first fit() (10 iterations), median of {rounds} round(s); "
          f"1-min load average {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores")
    header = "| class | " + " | ".join(
        f"{v}: wall s | {v}: CPU s | {v}: programs | {v}: XLA compile s" for v in versions)
    if compare:
        header += f" | CPU ratio imnn/{first} | wall ratio"
    print(header + " |")
    print("|---" * (1 + 4 * len(versions) + (2 if compare else 0)) + "|")
    for name in classes:
        row = [name]
        for version in versions:
            r = results[name, version]
            row += [f"{median(r, 'first_fit_s'):.2f}", f"{median(r, 'first_fit_cpu_s'):.2f}",
                    f"{median(r, 'programs_compiled'):.0f}", f"{median(r, 'xla_compile_s'):.2f}"]
        if compare:
            b, a = results[name, first], results[name, "imnn"]
            row += [f"{median(a, 'first_fit_cpu_s') / median(b, 'first_fit_cpu_s'):.2f}",
                    f"{median(a, 'first_fit_s') / median(b, 'first_fit_s'):.2f}"]
        print("| " + " | ".join(row) + " |")
    print()
    print("second fit() (same arguments), median wall s / CPU s: " + ", ".join(
        f"{name} {version} {median(results[name, version], 'second_fit_s'):.3f} / "
        f"{median(results[name, version], 'second_fit_cpu_s'):.3f}"
        for name in classes for version in versions))
    print("programs compiled again in the second fit(): " + ", ".join(
        f"{name} {version} {max(r['recompiles_in_second_fit'] for r in results[name, version])}"
        for name in classes for version in versions))
    print("programs of the first fit() (last round), XLA compile s: ")
    for name in classes:
        for version in versions:
            print(f"  {name} {version}: " + "; ".join(results[name, version][-1]["programs"]))
    return results


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
    parser.add_argument("--earlier", metavar="PYTHON",
                        help="an interpreter with the earlier public IMNN library (0.3.x) "
                             "importable as imnn: its columns come first")
    parser.add_argument("--json", metavar="FILE", help="also write every child's result here")
    parser.add_argument("--cache", action="store_true",
                        help="time to a first result with the compilation cache off, cold, warm")
    parser.add_argument("--import-scipy", action="store_true",
                        help="import scipy.linalg in every child before its first fit: "
                             "jaxlib loads its CPU LAPACK kernels from SciPy the first time "
                             "a program with a factorisation is lowered (0.15-0.25 CPU s, "
                             "inside either library's first fit)")
    parser.add_argument("--child", choices=CLASSES, help=argparse.SUPPRESS)
    parser.add_argument("--api", default="imnn", choices=("imnn", "earlier"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--iterations", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.import_scipy:   # inherited by the children
        os.environ["BENCH_COMPILE_IMPORT_SCIPY"] = "1"
    if args.child:
        print(json.dumps(child(args.child, args.iterations, args.cache_dir, args.api)))
    elif args.cache:
        cache_table(args.classes, args.rounds)
    else:
        results = compile_table(args.classes, args.rounds, args.before, args.earlier)
        if args.json:
            with open(args.json, "w") as out:
                json.dump({f"{c} {v}": r for (c, v), r in results.items()}, out, indent=1)


if __name__ == "__main__":
    main()
