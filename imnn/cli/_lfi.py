"""``imnn lfi``: the Gaussian-approximation posterior of target data."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ._arguments import positive
from ._errors import EXIT_ERROR, CommandError
from ._fitted import load_fitted, read_simulations

HELP = "Gaussian-approximation posterior of target data"


def add_arguments(p) -> None:
    """The lfi command's options."""
    p.add_argument("run", type=Path, help="run directory or .imnn file")
    p.add_argument("--model", metavar="MODULE:FUNCTION",
                   help="the function that builds the model, for models other than imnn.nn "
                        "layers (default: the one RUN/config.toml names)")
    p.add_argument("target", type=Path, help=".npy: one target simulation or several")
    p.add_argument("--low", type=float, nargs="+", help="prior box (default θ̂ − 5σ)")
    p.add_argument("--high", type=float, nargs="+", help="prior box (default θ̂ + 5σ)")
    p.add_argument("--gridsize", type=positive, default=200,
                   help="grid points per parameter (default: 200)")


def run(args) -> int:
    """Print each target's posterior mean and std per parameter; returns the exit status."""
    from imnn.lfi import GaussianApproximation, Uniform
    fitted = load_fitted(args.run, model=args.model)
    θ̂ = np.atleast_2d(np.asarray(fitted.get_estimate(read_simulations(args.target, fitted)),
                                np.float64))
    σ = np.sqrt(np.diag(fitted.invF))
    p = fitted.n_params
    low = np.min(θ̂, 0) - 5 * σ if args.low is None else np.asarray(args.low, float)
    high = np.max(θ̂, 0) + 5 * σ if args.high is None else np.asarray(args.high, float)
    if low.shape != (p,) or high.shape != (p,):
        raise CommandError(f"--low and --high need {p} values, one per parameter")
    try:
        posterior = GaussianApproximation(θ̂, fitted.invF, Uniform(low, high), args.gridsize)
    except ValueError as error:
        raise CommandError(str(error), EXIT_ERROR) from None
    print(f"Gaussian approximation N(θ̂, F⁻¹) on the prior box low={low.tolist()}, "
          f"high={high.tolist()}")
    print("target  parameter  θ̂  mean  std")
    for t in range(θ̂.shape[0]):
        for i, grid in enumerate(posterior.grid):
            density = posterior.marginals.one_d[i][t]
            mass = np.trapezoid(density, grid)
            mean = np.trapezoid(grid * density, grid) / mass
            std = math.sqrt(np.trapezoid((grid - mean) ** 2 * density, grid) / mass)
            print(f"{t}  θ_{i}  {θ̂[t, i]:.6g}  {mean:.6g}  {std:.6g}")
    return 0
