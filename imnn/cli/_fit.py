"""``imnn fit``: fit what a TOML config describes, or resume a run."""
from __future__ import annotations

from pathlib import Path

from ._arguments import positive
from ._config import read_config
from ._errors import CommandError
from ._job import configure_jax, prepare
from ._run import run_fit
from ._rundir import CHECKPOINT, Checkpoints

HELP = "fit what a TOML config describes, or resume a run"


def add_arguments(p) -> None:
    """The fit's options."""
    p.add_argument("config", type=Path, nargs="?", help="the config file (TOML)")
    p.add_argument("--resume", type=Path, metavar="RUN",
                   help="carry on the interrupted fit in run directory RUN")
    p.add_argument("--output", type=Path, help="run directory (default: the config's output)")
    p.add_argument("--max-iterations", type=positive, help="override fit.max_iterations")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    """Run the fit; returns the exit status."""
    if (args.config is None) == (args.resume is None):
        raise CommandError("give a CONFIG.toml to fit, or --resume RUN to carry on a run")
    if args.resume is not None:
        if args.output is not None:
            raise CommandError("--output does not go with --resume: the run stays in RUN")
        saved = Checkpoints(args.resume).latest()
        if "config" not in saved.metadata:
            raise CommandError(f"{saved.path} was not written by imnn fit: it has no config "
                               "to resume from (use imnn.persistence.restore in Python)")
        config = saved.metadata["config"]
        run = args.resume
    else:
        config, saved = read_config(args.config), None
        if args.output is not None:
            config["output"] = str(args.output.absolute())
        run = Path(config["output"])
        if (run / CHECKPOINT).exists():
            raise CommandError(f"{run} already holds a fit: carry it on with "
                               f"`imnn fit --resume {run}`, or choose another output")
    if args.max_iterations is not None:
        config["fit"]["max_iterations"] = args.max_iterations
    configure_jax(config["x64"], config.get("devices") if config["backend"] == "jax" else None)
    return run_fit(prepare(config), run, "imnn fit", saved, args.quiet)
