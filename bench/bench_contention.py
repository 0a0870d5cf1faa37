"""Wall and CPU time per fit iteration when other processes share the cores.

    python bench/bench_contention.py                  # this tree's settings
    python bench/bench_contention.py --variants imnn handwritten imnn-xla-defaults
    python bench/bench_contention.py --before PYTHON  # add another install's imnn

The problem is GradientIMNN on the mean/variance toy (10 draws of N(μ, σ²) at
θ = (0, 1), n_s = n_d = 1000 with exact derivatives, no validation, MLP 128-128
with leaky ReLU, Adam 1e-3; early stopping off). Every variant runs in its own
worker process, built and compiled before timing starts; the workers then run
``--iterations`` iterations in turn, round after round, with and without an
extra load: ``--load-per-core`` busy-looping processes per core (bounded in
time, killed at the end), so every variant sees the same load in each round.

Variants (``--variants``):

- ``imnn``: ``GradientIMNN.fit`` as this tree runs it (history and the Fisher
  statistics at the end included);
- ``handwritten``: what a user writes without imnn: ``jax.jit`` of
  ``jax.value_and_grad`` of the same loss plus an optax update, the same
  network and weights, called from a Python loop;
- ``imnn-xla-defaults``: imnn with XLA's default compiler options
  (``IMNN_XLA_DEFAULTS=1``), i.e. without the setting imnn chooses;
- ``imnn-host-loop``: imnn looping from the host, one compiled call per iteration;
- ``imnn-one-thread``: imnn with ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false``;
- ``imnn-sync``: imnn with ``jax_cpu_enable_async_dispatch`` off;
- ``before``: ``GradientIMNN.fit`` under ``--before PYTHON`` (an earlier install).

Printed: per variant and load, the median over rounds of wall ms and CPU ms
(process_time: all the worker's threads) per iteration and their ratio, the
ratio of wall time to the hand-written loop's, and the load averages seen.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

N = 1000
λ, ε = 10.0, 0.1
VARIANTS = ("imnn", "handwritten", "imnn-xla-defaults", "imnn-host-loop", "imnn-one-thread",
            "imnn-sync", "before")
DEFAULT = ("imnn", "handwritten", "imnn-xla-defaults", "imnn-host-loop")


# --- worker side ----------------------------------------------------------------------

def build(variant):
    """A function running n iterations of the variant's fit."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import imnn
    from imnn.simulators import GaussianMeanVariance
    from imnn.utils import value_and_jacfwd

    if variant == "imnn-sync":
        jax.config.update("jax_cpu_enable_async_dispatch", False)
    sim = GaussianMeanVariance(n=10)
    keys = jax.random.split(jax.random.PRNGKey(1), N)
    θ = jnp.asarray(sim.θ_fid, jnp.float32)
    d, dd = jax.vmap(value_and_jacfwd(sim.simulate, argnums=1), in_axes=(0, None))(keys, θ)
    d, dd = np.asarray(d), np.asarray(dd)
    nn = imnn.nn
    model = nn.serial(nn.Dense(128), nn.LeakyRelu(), nn.Dense(128), nn.LeakyRelu(),
                      nn.Dense(2))
    fitter = imnn.GradientIMNN(N, N, 2, 2, (10,), sim.θ_fid, model, optax.adam(1e-3),
                               jax.random.PRNGKey(0), d, dd)
    if variant == "imnn-host-loop":
        from imnn.backends.jax.execution import make_runner
        fitter._runner = make_runner(fitter.problem, loop="host")
    if variant != "handwritten":
        def run(n):
            fitter.fit(λ, ε, max_iterations=n, min_iterations=10 ** 6)
        return run

    optimiser = optax.adam(1e-3)
    apply, w0 = fitter.network.apply, fitter.w
    α = imnn.get_α(λ, ε)
    d, dd = jnp.asarray(d), jnp.asarray(dd)

    def loss(w):
        def one(d, dd):
            x, linear = jax.linearize(lambda d: apply(w, d), d)
            return x, jax.vmap(linear, in_axes=-1, out_axes=-1)(dd)

        x, dx_dθ = jax.vmap(one)(d, dd)
        C = jnp.cov(x, rowvar=False)
        invC = jnp.linalg.inv(C)
        dμ_dθ = jnp.mean(dx_dθ, axis=0)
        F = dμ_dθ.T @ invC @ dμ_dθ
        eye = jnp.eye(C.shape[0])
        Λ2 = jnp.linalg.norm(C - eye) + jnp.linalg.norm(invC - eye)
        r = λ * Λ2 / (Λ2 + jnp.exp(-α * Λ2))
        return -jnp.linalg.slogdet(F)[1] + r * Λ2

    @jax.jit
    def step(w, state):
        value, grads = jax.value_and_grad(loss)(w)
        updates, state = optimiser.update(grads, state, w)
        return optax.apply_updates(w, updates), state, value

    def run(n):
        w, state = w0, optimiser.init(w0)
        for _ in range(n):
            w, state, value = step(w, state)
        jax.block_until_ready(value)
    return run


def worker(variant):
    run = build(variant)
    run(2)  # compile everything (and run once) before any timing
    print("ready", flush=True)
    for line in sys.stdin:
        n = int(line)
        wall, cpu = time.perf_counter(), time.process_time()
        run(n)
        print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}),
              flush=True)


# --- driver side ----------------------------------------------------------------------

def start_worker(variant, before):
    env = dict(os.environ)
    python = sys.executable
    if variant == "imnn-xla-defaults":
        env["IMNN_XLA_DEFAULTS"] = "1"
    if variant == "imnn-one-thread":
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false")
    if variant == "before":
        python = before
    command = [python, os.path.abspath(__file__), "--worker",
               "imnn" if variant == "before" else variant]
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env)


def start_load(n_processes, seconds):
    """Busy-looping processes that end by themselves after ``seconds``. Each in a
    session of its own, like other users' jobs: with the kernel's autogroup
    scheduling (``/proc/sys/kernel/sched_autogroup_enabled``), processes of one
    session share one slice of the CPUs, so a load started in the benchmark's
    own session would only compete with the benchmark."""
    code = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass\n"
    return [subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
            for _ in range(n_processes)]


def stop(processes):
    for p in processes:
        if p.poll() is None:
            p.terminate()
    for p in processes:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def _autogroup():
    try:
        with open("/proc/sys/kernel/sched_autogroup_enabled") as f:
            return "on" if f.read().strip() == "1" else "off"
    except OSError:
        return "unknown"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(DEFAULT))
    parser.add_argument("--before", metavar="PYTHON", help="interpreter of the 'before' variant")
    parser.add_argument("--iterations", type=int, default=50, help="iterations per timing")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--load-per-core", type=int, default=2,
                        help="busy processes per core in the loaded rounds")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    variants = list(args.variants)
    if args.before and "before" not in variants:
        variants.append("before")
    if "before" in variants and not args.before:
        parser.error("the 'before' variant needs --before PYTHON")
    workers = {v: start_worker(v, args.before) for v in variants}
    load = []
    times = {(v, loaded): [] for v in variants for loaded in (False, True)}
    loads = {False: [], True: []}
    try:
        for v, p in workers.items():
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError(f"worker {v} failed to start")
        n_load = args.load_per_core * os.cpu_count()
        for _ in range(args.rounds):
            for loaded in (False, True):
                if loaded:
                    load = start_load(n_load, 600)
                    time.sleep(2.0)  # let the load settle
                for v, p in workers.items():
                    loads[loaded].append(os.getloadavg()[0])
                    p.stdin.write(f"{args.iterations}\n")
                    p.stdin.flush()
                    times[v, loaded].append(json.loads(p.stdout.readline()))
                if loaded:
                    stop(load)
                    load = []
    finally:
        stop(load)
        for p in workers.values():
            p.stdin.close()
        stop(list(workers.values()))
    n = args.iterations
    print(f"# GradientIMNN mean/variance, n_s = n_d = {N}, {n} iterations per timing, "
          f"median of {args.rounds} rounds; {os.cpu_count()} cores; "
          f"kernel autogroup scheduling: {_autogroup()}")
    for loaded in (False, True):
        extra = (f"+{args.load_per_core * os.cpu_count()} busy processes"
                 if loaded else "no extra load")
        print(f"\n{extra}; 1-min load average seen {min(loads[loaded]):.1f}-"
              f"{max(loads[loaded]):.1f}")
        hand = (statistics.median(t["wall"] for t in times["handwritten", loaded])
                if "handwritten" in variants else None)
        print("| variant | wall ms/it | CPU ms/it | wall/CPU | wall / hand-written wall "
              "| same-round ratio: median (min-max) |")
        print("|---|---|---|---|---|---|")
        for v in variants:
            wall = statistics.median(t["wall"] for t in times[v, loaded])
            cpu = statistics.median(t["cpu"] for t in times[v, loaded])
            vs = f"{wall / hand:.2f}" if hand else "-"
            paired = "-"
            if hand:  # the ratio to the hand-written loop's wall time in the same round
                ratios = [t["wall"] / h["wall"] for t, h in
                          zip(times[v, loaded], times["handwritten", loaded])]
                paired = (f"{statistics.median(ratios):.2f} "
                          f"({min(ratios):.2f}-{max(ratios):.2f})")
            print(f"| {v} | {1e3 * wall / n:.2f} | {1e3 * cpu / n:.2f} | {wall / cpu:.2f} | "
                  f"{vs} | {paired} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
