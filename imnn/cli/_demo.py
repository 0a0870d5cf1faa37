"""``imnn demo``: fit the mean/variance toy problem, no files needed."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from imnn.optimisers import DEMO_RECIPE
from imnn.persistence import model_to_tables

from ._arguments import BACKENDS, add_cache_arguments, positive, use_compilation_cache
from ._config import resolve_config
from ._errors import CommandError
from ._job import configure_jax, make_fitter, prepare
from ._run import run_fit
from ._rundir import RunDirectory, precheck

HELP = "fit the mean/variance toy problem (no files needed)"


def demo_config(args) -> dict:
    """The demo's config: the one place that says what ``imnn demo`` fits.

    Args:
        args: the parsed command line (n_s, patience, max_iterations, seed,
            backend, output).

    Returns:
        A raw config, as a TOML file would give it.
    """
    recipe = DEMO_RECIPE
    max_iterations = args.max_iterations or (recipe.max_iterations if args.backend == "jax"
                                             else 300)
    recipe = dataclasses.replace(recipe, max_iterations=max_iterations)
    return {"output": str(args.output.absolute()), "seed": args.seed,
            "backend": args.backend, "x64": False, "checkpoint_every": 100,
            "model": model_to_tables(recipe.model(2)),
            "optimiser": recipe.optimiser_table(),
            "fit": {"lambda": recipe.λ, "epsilon": recipe.ε,
                    "patience": args.patience or max_iterations,
                    "min_iterations": recipe.min_iterations, "max_iterations": max_iterations,
                    "best": recipe.best},
            "simulator": {"name": "gaussian_mean_variance", "n": 10, "n_s": args.n_s,
                          "n_d": min(args.n_d or recipe.n_d, args.n_s)}}


def add_arguments(p) -> None:
    """The demo's options."""
    p.add_argument("--backend", choices=BACKENDS, default="jax",
                   help="where the fit runs (default: jax)")
    p.add_argument("--devices", type=positive, default=None,
                   help="simulate this many CPU devices (with --aggregated: shard over them)")
    p.add_argument("--aggregated", action="store_true",
                   help="use AggregatedSimulatorIMNN (two-pass gradients over devices)")
    p.add_argument("--n-per-device", type=positive, default=None,
                   help="simulations per device per batch (aggregated; default n_s / devices / 4)")
    p.add_argument("--n-s", type=positive, default=DEMO_RECIPE.n_s,
                   help=f"simulations per iteration (default: {DEMO_RECIPE.n_s})")
    p.add_argument("--n-d", type=positive, default=None,
                   help=f"of which with derivatives (default: {DEMO_RECIPE.n_d}, at most n_s)")
    p.add_argument("--max-iterations", type=positive, default=None,
                   help=f"iterations; the learning rate decays over them (default: "
                        f"{DEMO_RECIPE.max_iterations} on jax, 300 on numpy/numba)")
    p.add_argument("--patience", type=positive, default=None,
                   help="iterations without improvement before stopping (default: the "
                        "iterations, so that the learning rate decays to its end)")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed (default: 0)")
    p.add_argument("--output", type=Path, default=Path("runs/demo"),
                   help="run directory (created; default: runs/demo)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the fit the run directory holds (default: refuse)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_cache_arguments(p)


def run(args) -> int:
    """Run the demo; returns the exit status."""
    if args.seed < 0:
        raise CommandError(f"--seed must be from 0 to 2**63 - 2, got {args.seed}")
    config = demo_config(args)
    configure_jax(False, args.devices)
    if args.aggregated:
        import jax
        n_devices = len(jax.devices())
        if args.n_s % n_devices:
            raise CommandError(f"--n-s {args.n_s} must be a multiple of the {n_devices} devices")
        per_device = args.n_s // n_devices
        # Default: four batches per pass (the largest divisor no bigger than a quarter).
        config["n_per_device"] = args.n_per_device or max(
            k for k in range(1, per_device + 1)
            if per_device % k == 0 and 4 * k <= max(per_device, 4))
    config = resolve_config(config, Path.cwd())
    precheck(args.output, args.overwrite)
    use_compilation_cache(args)
    job = prepare(config)
    fitter = make_fitter(job)
    with RunDirectory(args.output, "imnn demo", new=True, overwrite=args.overwrite) as directory:
        return run_fit(job, fitter, directory, "imnn demo", quiet=args.quiet)
