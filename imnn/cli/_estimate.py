"""``imnn estimate``: score-compressed estimates θ̂, one per simulation."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ._arguments import BACKENDS
from ._errors import EXIT_ERROR, CommandError
from ._fitted import load_fitted, read_simulations

HELP = "θ̂ for each simulation in a .npy file"


def add_arguments(p) -> None:
    """The estimate's options."""
    p.add_argument("run", type=Path, help="run directory or .imnn file")
    p.add_argument("--model", metavar="MODULE:FUNCTION",
                   help="the function that builds the model, for models other than imnn.nn "
                        "layers (default: the one RUN/config.toml names)")
    p.add_argument("data", type=Path, help=".npy: one simulation or a batch (n,)+input_shape")
    p.add_argument("--output", type=Path, help="also write the estimates to this .npy file")
    p.add_argument("--allow-nan", action="store_true",
                   help="estimate data holding NaN or infinite values (default: refuse)")
    p.add_argument("--backend", choices=BACKENDS, help="evaluate on this backend "
                   "(default: the one it was fitted on)")


def run(args) -> int:
    """Print (and write) the estimates; returns the exit status."""
    if args.output is not None:
        _check_output(args.output)
    fitted = load_fitted(args.run, args.backend, args.model)
    θ̂ = _estimates(fitted, read_simulations(args.data, fitted, args.allow_nan))
    for row in np.atleast_2d(θ̂):
        print(" ".join(f"{v:.10g}" for v in row))
    if args.output is not None:
        try:
            np.save(args.output, θ̂)
        except OSError as error:
            raise CommandError(f"--output: cannot write {args.output}: "
                               f"{error.strerror or error}", EXIT_ERROR) from None
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _check_output(path: Path) -> None:
    if path.is_dir():
        raise CommandError(f"--output {path} is a directory: name the .npy file to write")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise CommandError(f"--output {path}: the folder {parent} does not exist")


def _estimates(fitted, d: np.ndarray) -> np.ndarray:
    """θ̂ for one simulation or a batch; with ``--allow-nan`` a simulation holding NaN
    or inf gets a row of NaN (the library refuses non-finite data)."""
    d = np.asarray(d)
    batch = d.reshape((-1,) + tuple(fitted.input_shape))
    finite = np.isfinite(batch.reshape(len(batch), -1)).all(axis=1)
    θ̂ = np.full((len(batch), fitted.n_params), np.nan)
    if finite.any():
        θ̂[finite] = np.asarray(fitted.get_estimate(batch[finite]), np.float64).reshape(
            -1, fitted.n_params)
    return θ̂[0] if d.shape == tuple(fitted.input_shape) else θ̂
