"""``imnn fit``: fit what a TOML config describes, or resume a run."""
from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from ._arguments import add_cache_arguments, positive, use_compilation_cache
from ._config import read_config, resolve_config
from ._errors import CommandError
from ._job import configure_jax, make_fitter, prepare
from ._run import run_fit
from ._rundir import CONFIG, Checkpoints, RunDirectory, precheck
from ._schema import RESUMABLE_CHANGES

HELP = "fit what a TOML config describes, or resume a run"
DESCRIPTION = """\
Fit what a TOML config describes into a run directory, or carry on an interrupted
fit with --resume RUN. The config format (every key, its type, default and domain)
is described in the documentation's command-line page, docs/guide/cli.md; the
annotated example examples/fit_mean_variance.toml shows the common keys.

--resume takes the config stored in the checkpoint. If RUN/config.toml was edited
since, the keys that only decide when the fit stops or is saved (fit.max_iterations,
fit.patience, fit.min_iterations, checkpoint_every) are applied; any other edit is
refused. A 'module:function' simulator or model named in the checkpoint is imported
only when RUN/config.toml names the same one, or when --allow-import names it."""


def add_arguments(p) -> None:
    """The fit's options."""
    p.add_argument("config", type=Path, nargs="?",
                   help="the config file (TOML; see docs/guide/cli.md)")
    p.add_argument("--resume", type=Path, metavar="RUN",
                   help="carry on the interrupted fit in run directory RUN")
    p.add_argument("--output", type=Path, help="run directory (default: the config's output)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the fit the run directory holds (default: refuse)")
    p.add_argument("--max-iterations", type=positive, help="override fit.max_iterations")
    p.add_argument("--allow-import", action="append", default=[], metavar="MODULE:FUNCTION",
                   help="with --resume: import this simulator or model named in the "
                        "checkpoint although RUN/config.toml is missing (repeatable)")
    p.add_argument("--check", action="store_true",
                   help="check the config, its files and modules, and build the IMNN, then "
                        "stop: nothing is fitted or written")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_cache_arguments(p)


def run(args) -> int:
    """Run the fit; returns the exit status."""
    if (args.config is None) == (args.resume is None):
        raise CommandError("give a CONFIG.toml to fit, or --resume RUN to carry on a run")
    if args.resume is not None:
        return _resume(args)
    if args.allow_import:
        raise CommandError("--allow-import goes with --resume: a new fit imports what its "
                           "config names")
    config = read_config(args.config, args.max_iterations)
    if args.output is not None:
        config["output"] = str(args.output.absolute())
    run = Path(config["output"])
    precheck(run, args.overwrite)
    configure_jax(config["x64"], config.get("devices") if config["backend"] == "jax" else None)
    use_compilation_cache(args)
    job = prepare(config)
    fitter = make_fitter(job)
    if args.check:
        print(f"imnn fit: {args.config} is a valid config: {type(fitter).__name__}, "
              f"n_s={fitter.n_s}, n_d={fitter.n_d}, into {run}")
        return 0
    with RunDirectory(run, "imnn fit", new=True, overwrite=args.overwrite) as directory:
        return run_fit(job, fitter, directory, "imnn fit", quiet=args.quiet)


def _resume(args) -> int:
    run = args.resume
    for option in ("output", "overwrite", "check"):
        if getattr(args, option):
            raise CommandError(f"--{option} does not go with --resume: the run stays in RUN")
    if run.exists() and not run.is_dir():
        raise CommandError(f"--resume needs a run directory, {run} is a file")
    if not run.is_dir():
        raise CommandError(f"no run directory at {run}", 1)
    with RunDirectory(run, "imnn fit --resume", new=False) as directory:
        saved = Checkpoints(run).latest()
        if "config" not in saved.metadata:
            raise CommandError(f"{saved.path} was not written by imnn fit: it has no config "
                               "to resume from (use imnn.persistence.restore in Python)")
        config = resumed_config(saved, run, args.allow_import)
        if args.max_iterations is not None:
            config["fit"]["max_iterations"] = args.max_iterations
        configure_jax(config["x64"],
                      config.get("devices") if config["backend"] == "jax" else None)
        use_compilation_cache(args)
        job = prepare(config)
        fitter = make_fitter(job)
        return run_fit(job, fitter, directory, "imnn fit", saved, args.quiet)


def resumed_config(saved, run: Path, allowed: list[str]) -> dict:
    """The config a resumed fit runs with: the checkpoint's, with the safe edits of
    ``RUN/config.toml`` applied.

    Args:
        saved: the checkpoint resumed from.
        run: the run directory.
        allowed: ``module:function`` names the command line allows to import.

    Returns:
        The config.

    Raises:
        CommandError: config.toml is invalid or changes a key a resumed fit cannot
            change, or the checkpoint names a module neither config.toml nor
            ``allowed`` names.
    """
    config = _copy(saved.metadata["config"])
    try:  # written by an earlier imnn: compare with today's defaults filled in
        config = resolve_config(_copy(config), run, default_output=config["output"])
    except (CommandError, KeyError, TypeError):
        pass
    path = run / CONFIG
    named = set(allowed)
    if path.is_file():
        try:
            raw = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise CommandError(f"{path} is not valid TOML: {error}") from None
        edited = resolve_config(raw, run, default_output=config["output"])
        changes = {key: (old, new) for key, (old, new) in _differences(config, edited).items()
                   if key != "output"}
        refused = [key for key in changes if key not in RESUMABLE_CHANGES]
        if refused:
            listed = "; ".join(f"{key}: {_show(changes[key][0])} in the checkpoint, "
                               f"{_show(changes[key][1])} in config.toml" for key in refused)
            raise CommandError(f"{path} was edited since the checkpoint ({saved.path.name}, "
                               f"iteration {saved.manifest['fit_iteration']}) and a resumed fit "
                               f"cannot change {listed}. Undo the edit, or start a new fit "
                               "from that config with another output")
        for key, (old, new) in changes.items():
            table, _, name = key.rpartition(".")
            (config[table] if table else config)[name] = new
            print(f"imnn fit: applying the edited {CONFIG}: {key} {_show(old)} → {_show(new)}",
                  file=sys.stderr)
        named |= set(module_names(edited).values())
    for key, name in module_names(config).items():
        if name not in named:
            raise CommandError(f"the checkpoint names {key!r} = {name!r}, which "
                               f"{'is not named by' if path.is_file() else 'is missing with'} "
                               f"{path}: it is imported only when the run's {CONFIG} names it "
                               f"or when you allow it with --allow-import {name}")
    return config


def module_names(config: dict) -> dict[str, str]:
    """The ``module:function`` names a config would import, by key."""
    names = {}
    if isinstance(config.get("model"), str):
        names["model"] = config["model"]
    name = config.get("simulator", {}).get("name", "")
    if ":" in name:
        names["simulator.name"] = name
    return names


def _differences(a: dict, b: dict, prefix: str = "") -> dict:
    keys = list(a) + [k for k in b if k not in a]
    found = {}
    for key in keys:
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            found.update(_differences(x, y, f"{prefix}{key}."))
        elif x != y:
            found[prefix + key] = (x, y)
    return found


def _copy(config: dict) -> dict:
    return {k: _copy(v) if isinstance(v, dict) else v for k, v in config.items()}


def _show(value) -> str:
    return "(absent)" if value is None else repr(value)
