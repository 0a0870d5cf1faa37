"""``imnn estimate``: score-compressed estimates θ̂, one per simulation."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ._arguments import BACKENDS
from ._fitted import load_fitted, read_simulations

HELP = "θ̂ for each simulation in a .npy file"


def add_arguments(p) -> None:
    """The estimate's options."""
    p.add_argument("run", type=Path, help="run directory or .imnn file")
    p.add_argument("data", type=Path, help=".npy: one simulation or a batch (n,)+input_shape")
    p.add_argument("--output", type=Path, help="also write the estimates to this .npy file")
    p.add_argument("--backend", choices=BACKENDS, help="evaluate on this backend "
                   "(default: the one it was fitted on)")


def run(args) -> int:
    """Print (and write) the estimates; returns the exit status."""
    fitted = load_fitted(args.run, args.backend)
    θ̂ = np.asarray(fitted.get_estimate(read_simulations(args.data, fitted)), np.float64)
    for row in np.atleast_2d(θ̂):
        print(" ".join(f"{v:.10g}" for v in row))
    if args.output is not None:
        np.save(args.output, θ̂)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0
