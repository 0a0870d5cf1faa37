"""How much of the Fisher information a fit keeps, choice by choice.

Fits ``SimulatorIMNN`` on a built-in simulator with an exact Fisher matrix, the
recipe of the demo (``imnn.optimisers.DEMO_RECIPE``) and that recipe with one
choice changed at a time (learning-rate schedule, n_s, n_d, patience, λ and ε,
network width, iterations), then measures det F of each fitted network's
summaries on 20 000 fresh simulations at θ_fid (∂x/∂θ by forward-mode
differentiation through simulator and network) against the exact det F.
Prints a Markdown table: the choice, det F, its fraction of the exact value,
iterations run, and the fit's wall and CPU seconds (compilation included).

    python bench/bench_information.py            # every row, mean/variance problem
    python bench/bench_information.py --quick    # the recipe, a constant rate, the old demo
    python bench/bench_information.py --seeds 5  # the recipe alone, over seeds 0-4
    python bench/bench_information.py --seeds 3 --seed 5  # over seeds 5-7

CPU seconds are those of this process (all XLA threads); on a shared machine
wall time grows with the load, CPU time much less.
"""
from __future__ import annotations

import argparse
import dataclasses
import resource
import time

import numpy as np

N_EVAL = 20000


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def fresh_fisher(fitter, simulate, w=None, n=N_EVAL, seed=12345, batch=5000) -> np.ndarray:
    """F (p, p), float64, of the fitted network's summaries (with weights ``w``,
    by default the fitter's ``w``) on ``n`` fresh
    simulations at θ_fid: dμ/dθᵀ C⁻¹ dμ/dθ with C the summaries' covariance and
    dμ/dθ the mean of ∂x/∂θ, by forward-mode differentiation through the
    simulator and the network."""
    import jax
    import jax.numpy as jnp

    from imnn.utils import value_and_jacfwd
    apply, w = fitter.network.apply, fitter.w if w is None else w
    θ = jnp.asarray(fitter.θ_fid, jnp.float32)

    @jax.jit
    def summaries(keys):
        return jax.vmap(lambda k: value_and_jacfwd(lambda t: apply(w, simulate(k, t)))(θ))(keys)

    keys = jax.random.split(jax.random.PRNGKey(seed), n)
    parts = [summaries(keys[i:i + batch]) for i in range(0, n, batch)]
    x = np.concatenate([np.asarray(p[0], np.float64) for p in parts])
    dx_dθ = np.concatenate([np.asarray(p[1], np.float64) for p in parts])
    dμ_dθ = dx_dθ.mean(axis=0)
    C = np.atleast_2d(np.cov(x, rowvar=False))
    return dμ_dθ.T @ np.linalg.solve(C, dμ_dθ)


def fit_and_measure(recipe, simulator, seed=0, optimiser=None, both=False) -> dict:
    """Fit a SimulatorIMNN with ``recipe`` (and ``optimiser`` in place of the
    recipe's, if given) and measure on fresh simulations the weights the recipe
    keeps (``recipe.best``) and, with ``both``, also the best and the last ones."""
    import jax

    import imnn
    p = simulator.n_params
    start_wall, start_cpu = time.perf_counter(), cpu_seconds()
    fitter = imnn.SimulatorIMNN(
        n_s=recipe.n_s, n_d=recipe.n_d, n_params=p, n_summaries=p,
        input_shape=simulator.input_shape, θ_fid=simulator.θ_fid, model=recipe.model(p),
        optimiser=optimiser if optimiser is not None else recipe.optimiser(),
        key_or_state=jax.random.PRNGKey(seed), simulator=simulator.simulate)
    fitter.fit(rng=jax.random.PRNGKey(seed + 1), **recipe.fit_arguments())
    wall, cpu = time.perf_counter() - start_wall, cpu_seconds() - start_cpu
    detF = float(np.linalg.det(fresh_fisher(fitter, simulator.simulate)))
    exact = float(np.linalg.det(simulator.fisher()))
    result = {"detF": detF, "fraction": detF / exact, "iterations": fitter.fit_iteration,
              "wall": wall, "cpu": cpu}
    if both:
        for name in ("best_w", "final_w"):
            F = fresh_fisher(fitter, simulator.simulate, getattr(fitter, name))
            result[name] = float(np.linalg.det(F)) / exact
    return result


def rows(quick: bool):
    """(label, simulator, recipe, optimiser or None) for each row of the table."""
    import optax

    from imnn.optimisers import DEMO_RECIPE as R
    from imnn.simulators import GaussianMeanVariance, GaussianVariance
    mv = GaussianMeanVariance(n=10)
    old_demo = dataclasses.replace(R, n_s=1000, n_d=1000, width=128, activation="Elu",
                                   max_iterations=5000, patience=1000, λ=10.0, best=True)
    change = dataclasses.replace
    table = [
        ("**recipe** (`DEMO_RECIPE`)", mv, R, None),
        ("constant rate 10⁻³ (no schedule)", mv, R, optax.adam(1e-3)),
        ("earlier demo: constant 10⁻³, n_s = n_d = 1000, width 128, Elu, λ = 10, "
         "patience 1000, up to 5000 iterations", mv, old_demo, optax.adam(1e-3)),
    ]
    if quick:
        return table
    half, double = R.max_iterations // 2, 2 * R.max_iterations
    table += [
        ("best weights (`fit(best=True)`, the default) instead of the last", mv,
         change(R, best=True), None),
        ("constant rate 10⁻²", mv, R, optax.adam(1e-2)),
        (f"cosine from 3 × 10⁻² (to {R.final_learning_rate:g})", mv,
         change(R, learning_rate=3e-2), None),
        (f"cosine from 3 × 10⁻³ (to {R.final_learning_rate:g})", mv,
         change(R, learning_rate=3e-3), None),
        (f"cosine to 10⁻⁵ (from {R.learning_rate:g})", mv,
         change(R, final_learning_rate=1e-5), None),
        ("exponential decay 10⁻² → 10⁻⁴", mv, R,
         optax.adam(optax.exponential_decay(R.learning_rate, R.max_iterations,
                                            R.final_learning_rate / R.learning_rate))),
        (f"max_iterations = {half} (the decay over {half})", mv,
         change(R, max_iterations=half, patience=half), None),
        (f"max_iterations = {double} (the decay over {double})", mv,
         change(R, max_iterations=double, patience=double), None),
        ("patience 200 (stops inside the decay)", mv, change(R, patience=200), None),
        (f"n_s = {R.n_s // 2}", mv, change(R, n_s=R.n_s // 2, n_d=min(R.n_d, R.n_s // 2)), None),
        (f"n_s = {2 * R.n_s}", mv, change(R, n_s=2 * R.n_s), None),
        (f"n_d = {R.n_d // 2}", mv, change(R, n_d=R.n_d // 2), None),
        (f"n_d = {R.n_s} = n_s", mv, change(R, n_d=R.n_s), None),
        ("λ = 10 (ε = 0.1)", mv, change(R, λ=10.0), None),
        ("ε = 0.01", mv, change(R, ε=0.01), None),
        (f"width {R.width // 2}", mv, change(R, width=R.width // 2), None),
        (f"width {2 * R.width}", mv, change(R, width=2 * R.width), None),
        ("Elu activation", mv, change(R, activation="Elu"), None),
        ("gaussian_variance (σ² of 10 draws, F = 5): recipe", GaussianVariance(n=10), R, None),
        ("gaussian_variance: constant rate 10⁻³", GaussianVariance(n=10), R, optax.adam(1e-3)),
    ]
    return table


def markdown(results) -> str:
    lines = ["| choice (all else as the recipe) | det F (20 000 fresh) | of exact | iterations "
             "| fit wall s | fit CPU s |", "|---|---|---|---|---|---|"]
    for label, r in results:
        lines.append(f"| {label} | {r['detF']:.4g} | {100 * r['fraction']:.1f} % | "
                     f"{r['iterations']} | {r['wall']:.1f} | {r['cpu']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="three rows: the recipe, a constant rate, the earlier demo")
    parser.add_argument("--seeds", type=int, default=None, metavar="N",
                        help="instead of the table: the recipe over N seeds from --seed on")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of every row, or the first of --seeds (default 0)")
    args = parser.parse_args(argv)
    import os
    load = os.getloadavg()[0]
    if args.seeds is not None:
        from imnn.optimisers import DEMO_RECIPE
        from imnn.simulators import GaussianMeanVariance
        results = []
        for seed in range(args.seed, args.seed + args.seeds):
            r = fit_and_measure(DEMO_RECIPE, GaussianMeanVariance(n=10), seed, both=True)
            results.append((f"recipe, seed {seed}", r))
            print(f"seed {seed}: {100 * r['fraction']:.2f} % (last weights "
                  f"{100 * r['final_w']:.2f} %, best weights {100 * r['best_w']:.2f} %; "
                  f"{r['iterations']} iterations, "
                  f"{r['wall']:.1f} s wall, {r['cpu']:.1f} s CPU)", flush=True)
        fractions = [r["fraction"] for _, r in results]
        print(markdown(results))
        print(f"\nlowest {100 * min(fractions):.2f} %, mean {100 * np.mean(fractions):.2f} %")
    else:
        results = []
        for label, simulator, recipe, optimiser in rows(args.quick):
            r = fit_and_measure(recipe, simulator, args.seed, optimiser)
            results.append((label, r))
            print(f"{label}: {100 * r['fraction']:.2f} %", flush=True)
        print()
        print(markdown(results))
    print(f"\n(load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, "
          f"{os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
