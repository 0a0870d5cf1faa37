"""The run directory: its checkpoints and the lock that gives it to one process.

    RUN/config.toml            the configuration as run (defaults filled in)
    RUN/checkpoint.imnn        the latest checkpoint (``imnn.load`` reads it)
    RUN/checkpoint.prev.imnn   the previous good checkpoint
    RUN/.lock                  held (``flock``) by the process fitting into RUN
    RUN/history.npz, history.png, summary.json   written when the fit ends
"""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from ._errors import EXIT_ERROR, CommandError

CHECKPOINT, PREVIOUS, CONFIG, LOCK = ("checkpoint.imnn", "checkpoint.prev.imnn", "config.toml",
                                      ".lock")
OUTPUTS = ("history.npz", "history.png", "summary.json")


class Checkpoints:
    """``RUN/checkpoint.imnn`` and the previous good one, ``RUN/checkpoint.prev.imnn``.

    Each is written atomically by ``imnn.save``. Before a new checkpoint replaces
    the current one, the current one is verified and, if it is of an earlier
    iteration, kept as the previous: a damaged file never replaces a good one.

    Args:
        run: the run directory.
    """

    def __init__(self, run: Path):
        self.run = run
        self.current, self.previous = run / CHECKPOINT, run / PREVIOUS

    def write(self, fitter, metadata: dict) -> None:
        """Save ``fitter`` with ``metadata`` as the current checkpoint."""
        from imnn import persistence
        if self.current.exists():
            try:
                if persistence.read(self.current).manifest["fit_iteration"] < \
                        fitter.fit_iteration:
                    os.replace(self.current, self.previous)
            except persistence.DamagedFileError:
                pass
        persistence.save(fitter, self.current, metadata)

    def latest(self):
        """The newest checkpoint that reads back intact; says so on stderr when it
        has to fall back to the previous one.

        Returns:
            A ``persistence.Saved``.

        Raises:
            CommandError: no intact checkpoint, or no run directory.
        """
        from imnn import persistence
        damaged = []
        for path in (self.current, self.previous):
            try:
                saved = persistence.read(path)
            except FileNotFoundError:
                continue
            except persistence.DamagedFileError as error:
                print(f"imnn: {error}", file=sys.stderr)
                damaged.append(path)
                continue
            if damaged:
                print(f"imnn: using the previous good checkpoint {path} (iteration "
                      f"{saved.manifest['fit_iteration']})", file=sys.stderr)
            return saved
        if damaged:
            raise CommandError(f"{self.run} has no intact checkpoint: "
                               f"{', '.join(map(str, damaged))} damaged", EXIT_ERROR)
        raise CommandError(f"{self.run} is not a run directory: no {CHECKPOINT} in it",
                           EXIT_ERROR)


def saved_model(run: Path):
    """A run directory's latest good checkpoint, or an .imnn file itself.

    Raises:
        CommandError: neither exists, or the file is damaged.
    """
    from imnn import persistence
    if run.is_dir():
        return Checkpoints(run).latest()
    try:
        return persistence.read(run)
    except FileNotFoundError:
        raise CommandError(f"no run directory or .imnn file at {run}", EXIT_ERROR) from None
    except persistence.DamagedFileError as error:
        raise CommandError(str(error), EXIT_ERROR) from None


def fit_files(run: Path) -> list[Path]:
    """The files in ``run`` that belong to a fit: checkpoints (also a leftover
    temporary one of an interrupted write), the config as run and the outputs."""
    if not run.is_dir():
        return []
    names = (CHECKPOINT, PREVIOUS, CONFIG) + OUTPUTS
    found = [run / name for name in names if (run / name).exists()]
    found += sorted(p for p in run.iterdir() if p.name.startswith(f".{CHECKPOINT}.")
                    or p.name.startswith(f".{PREVIOUS}.") or p.name.startswith(f".{CONFIG}."))
    return found


def holds_fit(run: Path) -> list[Path]:
    """The checkpoints (current, previous or a temporary one) in ``run``: a run
    directory holding any of them holds a fit."""
    return [p for p in fit_files(run) if p.name not in (CONFIG, *OUTPUTS)
            and not p.name.startswith(f".{CONFIG}.")]


def host() -> str:
    """This machine's name, as lock files record it."""
    return socket.gethostname()
