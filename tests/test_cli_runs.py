"""The command line's run directories under faults: SIGKILL at several points of a
fit (inside a checkpoint write, between rotating and writing a checkpoint, between
chunks of iterations) followed by --resume gives the uninterrupted fit; a run
directory is owned by one process (a second is refused, a dead holder's lock is
taken over); no command overwrites a fit unless asked; edited configs and
checkpoints naming modules on resume; the compilation cache.

The faults are injected by a wrapper script (HOOK below) that runs the command
with imnn.persistence.save / write_atomically or the stop check patched to touch
a marker file and wait at a chosen call, where the test kills it."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from imnn import cli, persistence

pytestmark = pytest.mark.xdist_group("cli_runs")  # one worker: its module fixtures are made once
SCRIPT = Path(sys.executable).with_name("imnn")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "imnn.cli"]

# float64, a learning-rate schedule (its step count lives in the optimiser state),
# chunks of 10 iterations (not quiet) and a checkpoint every 20.
CONFIG = """
seed = 7
x64 = true
checkpoint_every = 20
model = [{type = "Dense", features = 8}, {type = "Elu"}, {type = "Dense", features = 2}]

[simulator]
name = "gaussian_mean_variance"
n_s = 50

[optimiser]
name = "adam"
learning_rate = {schedule = "cosine_decay", init_value = 3e-3, decay_steps = 200, alpha = 0.1}

[fit]
patience = 100000
min_iterations = 0
max_iterations = 100
"""
TOTAL = 100

HOOK = """
import os, sys, time
from pathlib import Path
import imnn.persistence as persistence
from imnn.cli import _signals
point, count, marker = os.environ["IMNN_TEST_PAUSE"].split(":", 2)
count, calls = int(count), {"save": 0, "check": 0}
real_save, real_write, real_check = (persistence.save, persistence.write_atomically,
                                     _signals.StopRequest.check)

def pause():
    Path(marker).touch()
    time.sleep(600)

def save(fitter, path, metadata=None):
    if Path(path).name == "checkpoint.imnn":
        calls["save"] += 1
        if point == "save" and calls["save"] == count:
            pause()  # the current checkpoint has just become the previous one
    return real_save(fitter, path, metadata)

def write_atomically(path, write):
    if point == "write" and Path(path).name == "checkpoint.imnn" and calls["save"] == count:
        def partial(file):
            write(file)
            file.flush()
            pause()  # the temporary file is written, not yet renamed
        return real_write(path, partial)
    return real_write(path, write)

def check(self):
    calls["check"] += 1
    if point == "check" and calls["check"] == count:
        pause()  # iterations done since the last checkpoint are in memory only
    return real_check(self)

try:  # the module whose write_atomically the checkpoint writer calls
    import imnn._archive as archive
except ImportError:
    archive = persistence
real_write = archive.write_atomically
persistence.save, archive.write_atomically = save, write_atomically
_signals.StopRequest.check = check
from imnn.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("jax_cache")
    return {**os.environ, "MPLBACKEND": "Agg", "IMNN_COMPILATION_CACHE": str(cache)}


@pytest.fixture(autouse=True)
def no_compilation_cache(monkeypatch):
    monkeypatch.setenv("IMNN_COMPILATION_CACHE", "off")


def imnn_command(env, *args, cwd=None):
    return subprocess.run(COMMAND + [str(a) for a in args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def paused(env, where, point, count, *args):
    """Start `imnn ARGS` with the hook; return the process once it waits at the point."""
    marker = where / f"paused-{point}-{count}"
    process = subprocess.Popen([sys.executable, str(where / "hook.py")] + [str(a) for a in args],
                               env={**env, "IMNN_TEST_PAUSE": f"{point}:{count}:{marker}"},
                               cwd=where, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 240
    while not marker.exists():
        if process.poll() is not None:
            raise AssertionError(process.communicate())
        assert time.monotonic() < deadline, f"never reached {point}:{count}"
        time.sleep(0.02)
    return process


def kill(process):
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL


def iteration(path):
    return persistence.read(path).manifest["fit_iteration"]


def temporary_files(run):
    return sorted(p.name for p in run.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def faults(env, tmp_path_factory):
    """One fit killed three times and resumed to the end, beside the same fit
    run straight through; what was seen at each kill."""
    where = tmp_path_factory.mktemp("faults")
    (where / "fit.toml").write_text(CONFIG)
    (where / "hook.py").write_text(HOOK)
    run, seen = where / "run", {}

    # 1. Killed inside the third checkpoint's write (iteration 40): the current
    #    checkpoint has become the previous one and a temporary file is left.
    process = paused(env, where, "write", 3, "fit", "fit.toml", "--output", "run", "--quiet")
    kill(process)
    seen["write"] = (sorted(p.name for p in run.iterdir()), iteration(run / cli.PREVIOUS))
    shutil.copytree(run, where / "after_write")

    # 2. Resumed, killed between rotating and writing its second checkpoint (60).
    process = paused(env, where, "save", 2, "fit", "--resume", "run", "--quiet")
    kill(process)
    seen["save"] = (sorted(p.name for p in run.iterdir()), iteration(run / cli.PREVIOUS))

    # 3. Resumed from 40, killed at iteration 70, ten iterations past its checkpoint;
    #    while it waits, a second process is refused the run directory.
    process = paused(env, where, "check", 3, "fit", "--resume", "run")
    seen["busy"] = (cli.main(["fit", "--resume", str(run)]), process.pid)
    seen["check"] = (iteration(run / cli.CHECKPOINT), iteration(run / cli.PREVIOUS))
    kill(process)

    # 4. An edit config.toml may make (patience: when to stop, not what to compute),
    #    then resumed to the end, taking over the lock the killed process left.
    config = run / "config.toml"
    config.write_text(config.read_text().replace("patience = 100000", "patience = 100001"))
    finished = imnn_command(env, "fit", "--resume", run, "--quiet", cwd=where)
    assert finished.returncode == 0, finished.stderr

    # The same fit straight through, without a compilation cache.
    unused = where / "unused_cache"
    straight = imnn_command({**env, "IMNN_COMPILATION_CACHE": str(unused)}, "fit", "fit.toml",
                            "--output", "straight", "--quiet", "--no-compilation-cache",
                            cwd=where)
    assert straight.returncode == 0, straight.stderr
    seen["unused cache"] = unused.exists()
    return where, seen, finished


def test_killed_fits_resume_to_the_uninterrupted_result(faults):
    where, seen, finished = faults
    run = where / "run"
    names, previous = seen["write"]
    assert previous == 20 and cli.CHECKPOINT not in names
    assert any(name.startswith(".checkpoint.imnn.") and name.endswith(".tmp") for name in names)
    names, previous = seen["save"]
    assert previous == 40 and cli.CHECKPOINT not in names
    assert not [n for n in names if n.endswith(".tmp")]  # the resume removed the leftover
    assert seen["check"] == (60, 40)
    resumed, straight = (persistence.read(p / cli.CHECKPOINT) for p in (run, where / "straight"))
    assert resumed.manifest["fit_iteration"] == straight.manifest["fit_iteration"] == TOTAL
    assert resumed.metadata["status"] == "finished"
    for name in straight.arrays:
        if name.startswith(("w/", "best_w/", "final_w/", "state/", "statistics/", "history/")):
            np.testing.assert_array_equal(resumed.arrays[name], straight.arrays[name],
                                          err_msg=name)
    assert temporary_files(run) == [] and not (run / ".lock").exists()
    # resumed at 60: the time per iteration is over this run's 40 iterations
    assert f"{TOTAL} iterations in " in finished.stdout
    assert "this run 40 iterations in " in finished.stdout
    assert seen["unused cache"] is False


def test_a_directory_with_only_the_previous_checkpoint_is_not_refitted(faults, capsys):
    where = faults[0]
    run = where / "after_write"
    assert cli.main(["fit", str(where / "fit.toml"), "--output", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{run} already holds a fit (checkpoint.prev.imnn, .checkpoint.imnn." in err
    assert iteration(run / cli.PREVIOUS) == 20  # untouched


def test_a_second_process_is_refused_and_a_dead_holders_lock_taken_over(faults):
    where, seen, finished = faults
    status, pid = seen["busy"]
    assert status == 2
    assert f"pid {pid} on {socket.gethostname()}" in finished.stderr
    assert "took over the lock of a process that has gone" in finished.stderr
    assert "applying the edited config.toml: fit.patience 100000 → 100001" in finished.stderr


def test_refusals_name_the_holder_and_the_files(faults, tmp_path, capsys):
    where = faults[0]
    run = tmp_path / "run"
    shutil.copytree(where / "run", run)
    # a temporary checkpoint alone is a fit too
    for name in (cli.CHECKPOINT, cli.PREVIOUS):
        (run / name).unlink()
    (run / ".checkpoint.imnn.x1y2.tmp").write_bytes(b"partial")
    assert cli.main(["fit", str(where / "fit.toml"), "--output", str(run)]) == 2
    err = capsys.readouterr().err
    assert ".checkpoint.imnn.x1y2.tmp" in err and "--overwrite" in err and "--resume" in err
    # a process holding the lock is named
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"f = os.open({str(run / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(f, fcntl.LOCK_EX)\n"
        "os.write(f, b'pid %d on elsewhere' % os.getpid())\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        assert cli.main(["fit", "--resume", str(run)]) == 2
        err = capsys.readouterr().err
        assert f"is in use by another imnn process (pid {holder.pid} on elsewhere)" in err
        assert err.count("\n") == 1
    finally:
        holder.kill()
        holder.wait()


def test_demo_over_a_fit_is_refused_and_the_cache_is_reused(env, faults, tmp_path, capsys):
    where = faults[0]
    before = persistence.read(where / "run" / cli.CHECKPOINT)
    assert cli.main(["demo", "--output", str(where / "run"), "--max-iterations", "5"]) == 2
    assert "already holds a fit" in capsys.readouterr().err
    assert persistence.read(where / "run" / cli.CHECKPOINT).manifest == before.manifest

    cache = tmp_path / "cache"
    demo = ["demo", "--max-iterations", 5, "--n-s", 100, "--quiet", "--output", "out",
            "--compilation-cache", cache]
    first = imnn_command(env, *demo, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    compiled = set(p.name for p in cache.iterdir())
    assert len(compiled) >= 3  # the fit loop, the statistics, the summaries at least
    again = imnn_command(env, *demo, cwd=tmp_path)
    assert again.returncode == 2 and "already holds a fit" in again.stderr
    again = imnn_command(env, *demo, "--overwrite", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    added = set(p.name for p in cache.iterdir()) - compiled
    assert len(added) <= 2, added  # everything compiled the first time is read back
    assert persistence.read(tmp_path / "out" / cli.CHECKPOINT).manifest["fit_iteration"] == 5
    assert not (tmp_path / "out" / cli.PREVIOUS).exists() or \
        iteration(tmp_path / "out" / cli.PREVIOUS) < 5


def test_resume_refuses_edits_and_modules_it_was_not_given(faults, tmp_path, capsys):
    where = faults[0]
    run = tmp_path / "run"
    shutil.copytree(where / "run", run)
    config = run / "config.toml"
    original = config.read_text()
    config.write_text(original.replace("lambda = 10.0", "lambda = 5.0")
                      .replace("max_iterations = 100\n", "max_iterations = 150\n"))
    assert cli.main(["fit", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "was edited since the checkpoint" in err and "fit.lambda: 10.0 in the checkpoint, " \
        "5.0 in config.toml" in err and "max_iterations" not in err
    assert err.count("\n") == 1

    # A checkpoint whose stored config names a module config.toml does not name:
    # refused, and the module is never imported.
    (tmp_path / "evil.py").write_text(
        f"open({str(tmp_path / 'imported')!r}, 'w').close()\n"
        "def simulate(key, θ):\n    return θ\n")
    saved = persistence.read(run / cli.CHECKPOINT)
    metadata = saved.metadata
    metadata["config"]["simulator"]["name"] = "evil:simulate"
    persistence.save(persistence.load(run / cli.CHECKPOINT, backend="numpy"),
                     run / cli.CHECKPOINT, metadata)
    (run / cli.PREVIOUS).unlink()
    config.write_text(original)
    sys.path.insert(0, str(tmp_path))
    try:
        assert cli.main(["fit", "--resume", str(run)]) == 2
        err = capsys.readouterr().err
        assert "simulator.name: 'evil:simulate' in the checkpoint" in err
        config.unlink()
        assert cli.main(["fit", "--resume", str(run)]) == 2
        err = capsys.readouterr().err
        assert "'simulator.name' = 'evil:simulate'" in err and "--allow-import evil:simulate" \
            in err
    finally:
        sys.path.remove(str(tmp_path))
    assert not (tmp_path / "imported").exists()


STAX = """
from jax.example_libraries import stax


def model():
    return stax.serial(stax.Dense(8), stax.Elu, stax.Dense(2))
"""


def test_a_model_from_a_module_fits_resumes_and_estimates(env, tmp_path, capsys, monkeypatch):
    (tmp_path / "stax_model_cli.py").write_text(STAX)
    (tmp_path / "fit.toml").write_text(CONFIG.replace(
        'model = [{type = "Dense", features = 8}, {type = "Elu"}, {type = "Dense", features = 2}]',
        'model = "stax_model_cli:model"').replace("x64 = true", "x64 = false"))
    first = imnn_command(env, "fit", "fit.toml", "--output", "run", "--max-iterations", 10,
                         "--quiet", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    resumed = imnn_command(env, "fit", "--resume", "run", "--max-iterations", 15, "--quiet",
                           cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at iteration 10 of up to 15" in resumed.stdout
    saved = persistence.read(tmp_path / "run" / cli.CHECKPOINT)
    assert saved.manifest["model_kind"] == "init_apply" and saved.manifest["fit_iteration"] == 15

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import stax_model_cli
    d = np.random.default_rng(0).normal(size=(3, 10))
    np.save(tmp_path / "d.npy", d)
    expected = persistence.load(tmp_path / "run" / cli.CHECKPOINT,
                                model=stax_model_cli.model()).get_estimate(d)
    for args in (["run"], ["run/checkpoint.imnn", "--model", "stax_model_cli:model"]):
        assert cli.main(["estimate", args[0], "d.npy", *args[1:]]) == 0
        printed = [[float(v) for v in line.split()] for line in
                   capsys.readouterr().out.splitlines()]
        np.testing.assert_allclose(printed, expected, rtol=1e-6)
    assert cli.main(["estimate", "run/checkpoint.imnn", "d.npy"]) == 2
    assert "name the function that builds it with --model" in capsys.readouterr().err
