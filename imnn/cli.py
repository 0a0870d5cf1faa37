"""The ``imnn`` command line.

``imnn demo`` fits an IMNN to the mean/variance toy problem (10 draws of
N(μ, σ²) at θ_fid = (0, 1), analytic det F = 50) with a progress bar, prints
the Fisher information reached against the analytic value, and writes a run
directory with the history plot and a summary.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _demo_parser(sub):
    p = sub.add_parser("demo", help="fit the mean/variance toy problem (no files needed)")
    p.add_argument("--backend", choices=("jax", "numpy", "numba"), default="jax")
    p.add_argument("--devices", type=int, default=None,
                   help="simulate this many CPU devices (with --aggregated: shard over them)")
    p.add_argument("--aggregated", action="store_true",
                   help="use AggregatedSimulatorIMNN (two-pass gradients over devices)")
    p.add_argument("--n-per-device", type=int, default=None,
                   help="simulations per device per batch (aggregated; default n_s / devices / 4)")
    p.add_argument("--n-s", type=int, default=1000, help="simulations per iteration")
    p.add_argument("--max-iterations", type=int, default=None)
    p.add_argument("--patience", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, default=Path("runs/demo"),
                   help="run directory (created)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def demo(args) -> int:
    if args.devices is not None:
        if args.devices < 1:
            raise SystemExit("imnn demo: --devices must be a positive integer")
        import jax
        jax.config.update("jax_num_cpu_devices", args.devices)
    import jax
    import numpy as np
    import optax

    import imnn
    from imnn.simulators import GaussianMeanVariance

    sim = GaussianMeanVariance(n=10)
    n_s = args.n_s
    model = imnn.nn.serial(imnn.nn.Dense(128), imnn.nn.Elu(), imnn.nn.Dense(128), imnn.nn.Elu(),
                           imnn.nn.Dense(2))
    simulator = sim.simulate if args.backend == "jax" else sim.simulate_numpy
    common = (n_s, n_s, sim.n_params, 2, sim.input_shape, sim.θ_fid, model, optax.adam(1e-3),
              jax.random.PRNGKey(args.seed), simulator)
    if args.aggregated:
        devices = jax.devices()
        if n_s % len(devices):
            raise SystemExit(f"imnn demo: --n-s {n_s} must be a multiple of the "
                             f"{len(devices)} devices")
        per_device = n_s // len(devices)
        # Default: four batches per pass (the largest divisor no bigger than a quarter).
        n_per = args.n_per_device or max(
            k for k in range(1, per_device + 1) if per_device % k == 0 and 4 * k <= max(per_device, 4))
        fitter = imnn.AggregatedSimulatorIMNN(*common, jax.devices()[0], devices, n_per,
                                              backend=args.backend)
        how = f"AggregatedSimulatorIMNN over {len(devices)} device(s), n_per_device={n_per}"
    else:
        fitter = imnn.SimulatorIMNN(*common, backend=args.backend)
        how = "SimulatorIMNN"
    max_iterations = args.max_iterations or (3000 if args.backend == "jax" else 300)
    print(f"imnn demo: {how}, backend={args.backend}, n_s={n_s}, "
          f"up to {max_iterations} iterations")
    start = time.perf_counter()
    fitter.fit(10.0, 0.1, rng=jax.random.PRNGKey(args.seed + 1), patience=args.patience,
               max_iterations=max_iterations, print_rate=None if args.quiet else 10)
    seconds = time.perf_counter() - start
    expected = float(np.linalg.det(sim.fisher()))
    reached = float(np.linalg.det(fitter.F))
    n_it = len(fitter.history["detF"])
    print(f"Fisher information reached: det F = {reached:.2f} of the analytic {expected:.0f} "
          f"({100 * reached / expected:.1f} %), on {n_s} fresh simulations")
    print(f"F = {np.array2string(fitter.F, precision=3)}   analytic diag(10, 5)")
    print(f"{n_it} iterations in {seconds:.1f} s ({1e3 * seconds / n_it:.2f} ms per iteration)")
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    fitter.plot(expected_detF=expected, filename=out / "history.png")
    summary = {"class": type(fitter).__name__, "backend": args.backend, "n_s": n_s,
               "iterations": n_it, "seconds": seconds, "detF": reached,
               "analytic_detF": expected, "fraction": reached / expected,
               "F": fitter.F.tolist(), "max_detF": float(fitter.history["max_detF"])}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    np.savez(out / "history.npz", **{k: np.asarray(v) for k, v in fitter.history.items()})
    print(f"wrote {out / 'history.png'}, {out / 'summary.json'}, {out / 'history.npz'}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="imnn", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _demo_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
