"""The run directory: its checkpoints and the lock that gives it to one process.

    RUN/config.toml            the configuration as run (defaults filled in)
    RUN/checkpoint.imnn        the latest checkpoint (``imnn.load`` reads it)
    RUN/checkpoint.prev.imnn   the previous good checkpoint
    RUN/.lock                  held (``flock``) by the process fitting into RUN
    RUN/history.npz, history.png, summary.json   written when the fit ends
"""
from __future__ import annotations

import fcntl
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from ._errors import EXIT_ERROR, EXIT_USAGE, CommandError

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


def leftovers(run: Path) -> list[Path]:
    """Temporary files of atomic writes into ``run`` that never finished."""
    return [p for p in fit_files(run) if p.name.startswith(".") and p.name.endswith(".tmp")]


def holds_fit(run: Path) -> list[Path]:
    """The checkpoints (current, previous or a temporary one) in ``run``: a run
    directory holding any of them holds a fit."""
    return [p for p in fit_files(run) if p.name not in (CONFIG, *OUTPUTS)
            and not p.name.startswith(f".{CONFIG}.")]


class RunLock:
    """An exclusive ``flock`` on ``RUN/.lock``, held for the life of a fit.

    The file records the holder's pid, host and command; a process that cannot
    take the lock says who holds it. The kernel drops the lock when its holder
    exits or crashes, so a lock file left by a dead process is simply taken over.
    Released, the file is removed (after checking that it is still the file
    locked, so two processes never hold locks on different files).

    Args:
        run: the run directory (it must exist).
        command: what the holder is doing, recorded in the file.
    """

    def __init__(self, run: Path, command: str):
        self.path, self.command = run / LOCK, command
        self.descriptor = None
        self.stale = None  # what a dead holder had written, if its lock was taken over

    def acquire(self) -> RunLock:
        """Take the lock.

        Returns:
            self.

        Raises:
            CommandError: another process holds it (its pid and host named).
        """
        while True:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read(descriptor)
                os.close(descriptor)
                raise CommandError(f"{self.path.parent} is in use by another imnn process "
                                   f"({holder or 'holder unknown'}): wait for it to finish, "
                                   "or stop it first", EXIT_USAGE) from None
            try:
                same = os.fstat(descriptor).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(descriptor)  # released and removed meanwhile: lock the new file
        self.stale = _read(descriptor) or None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, (f"pid {os.getpid()} on {socket.gethostname()}, "
                               f"{self.command}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                               ).encode(), 0)
        os.fsync(descriptor)
        self.descriptor = descriptor
        return self

    def release(self) -> None:
        """Remove the lock file and drop the lock."""
        if self.descriptor is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self.descriptor)
        self.descriptor = None


def _read(descriptor: int) -> str:
    return os.pread(descriptor, 4096, 0).decode("utf-8", "replace").strip()


class RunDirectory:
    """A run directory claimed by this process: created if needed, locked, and
    (for a new fit) checked to hold no fit.

    Use as a context manager; the lock is released on leaving it. ``discard()``
    removes what this process wrote, for a fit that failed before its first
    finished iteration.

    Args:
        run: the run directory.
        command: ``"imnn fit"``, ``"imnn demo"``, for the lock file and messages.
        new: a new fit (refuse a directory holding one), or a resumed one.
        overwrite: for a new fit, replace a fit the directory holds.

    Raises:
        CommandError: the path is a file, cannot be created, is locked by another
            process, or holds a fit (and ``overwrite`` is false).
    """

    def __init__(self, run: Path, command: str, new: bool, overwrite: bool = False):
        self.run, self.command, self.new, self.overwrite = run, command, new, overwrite
        self.created = False
        self.lock = None

    def __enter__(self) -> RunDirectory:
        run = self.run
        if run.exists() and not run.is_dir():
            raise CommandError(f"the run directory {run} is a file, not a directory")
        if not self.new and not run.is_dir():
            raise CommandError(f"no run directory at {run}", EXIT_ERROR)
        self.created = not run.exists()
        try:
            run.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CommandError(f"cannot create the run directory {run}: "
                               f"{error.strerror or error}") from None
        try:
            self.lock = RunLock(run, self.command).acquire()
            if self.lock.stale:
                print(f"imnn: took over the lock of a process that has gone "
                      f"({self.lock.stale})", file=sys.stderr)
            if self.new:
                self._check_empty()
            else:
                for path in leftovers(run):  # of a write that was killed: ours to remove
                    path.unlink(missing_ok=True)
        except BaseException:
            if self.lock is not None and self.created:  # ours alone: leave nothing behind
                shutil.rmtree(run, ignore_errors=True)
            self.__exit__(None, None, None)
            raise
        return self

    def _check_empty(self) -> None:
        held = holds_fit(self.run)
        if held and not self.overwrite:
            raise refuse_fit(self.run, held)
        if self.overwrite:
            for path in fit_files(self.run):
                path.unlink(missing_ok=True)

    def __exit__(self, *exc) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def discard(self) -> None:
        """Remove the files of a fit that failed before finishing an iteration
        (the whole directory if this process created it)."""
        if self.created:
            shutil.rmtree(self.run, ignore_errors=True)
        else:
            for path in fit_files(self.run):
                path.unlink(missing_ok=True)


def refuse_fit(run: Path, held: list[Path]) -> CommandError:
    """The error for a new fit into a directory that holds one."""
    return CommandError(f"{run} already holds a fit ({', '.join(p.name for p in held)}): "
                        f"carry it on with `imnn fit --resume {run}`, replace it with "
                        "--overwrite, or choose another output")


def precheck(run: Path, overwrite: bool) -> None:
    """The quick refusals for a new fit into ``run``, before anything is built
    (``RunDirectory`` checks again under the lock).

    Raises:
        CommandError: ``run`` is a file, or holds a fit and ``overwrite`` is false.
    """
    if run.exists() and not run.is_dir():
        raise CommandError(f"the run directory {run} is a file, not a directory")
    held = holds_fit(run)
    if held and not overwrite:
        raise refuse_fit(run, held)
