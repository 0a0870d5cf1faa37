"""The `imnn` command line: demo, configured fits, checkpoints, SIGTERM and
--resume, damaged checkpoints, estimate/info/lfi, and config errors.

Subprocesses share a persistent JAX compilation cache (one per test session),
so only the first process to compile a fit pays for it."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import jax
import numpy as np
import pytest

import imnn
from imnn import cli, persistence

from conftest import exact_data

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).with_name("imnn")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "imnn.cli"]
# One worker runs the whole module (make test: --dist loadgroup), so the fits
# its module fixtures make are made once.
pytestmark = pytest.mark.xdist_group("cli")
FISHER_LINE = re.compile(r"Fisher information reached: det F = ([0-9.]+) of the analytic "
                         r"([0-9.]+) \(([0-9.]+) %\), on (\d+) fresh simulations")

# A small problem in float64, fitted for far longer than it takes to interrupt it.
SMALL = """
seed = 3
x64 = true
checkpoint_every = 20
model = [{type = "Dense", features = 16}, {type = "Elu"}, {type = "Dense", features = 2}]

[simulator]
name = "gaussian_mean_variance"
n_s = 100

[optimiser]
name = "adam"
learning_rate = 3e-3

[fit]
patience = 100000
max_iterations = 100000
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("jax_cache")
    # The command line's own compilation cache, pointed away from ~/.cache.
    return {**os.environ, "MPLBACKEND": "Agg", "IMNN_COMPILATION_CACHE": str(cache)}


@pytest.fixture(autouse=True)
def no_compilation_cache(monkeypatch):
    """In-process commands compile without a persistent cache (none under ~/.cache)."""
    monkeypatch.setenv("IMNN_COMPILATION_CACHE", "off")


def imnn_command(env, *args, cwd=None):
    return subprocess.run(COMMAND + [str(a) for a in args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def checkpoint(run, name=cli.CHECKPOINT):
    return persistence.read(Path(run) / name)


def assert_same_fit(a, b):
    """Two checkpoints hold the same weights, optimiser state and history."""
    assert a.manifest["fit_iteration"] == b.manifest["fit_iteration"]
    for name in a.arrays:
        if name.startswith(("w/", "best_w/", "final_w/", "state/", "statistics/")):
            np.testing.assert_allclose(a.arrays[name], b.arrays[name], rtol=0, atol=1e-12,
                                       err_msg=name)
    assert a.history().keys() == b.history().keys()
    for key, value in a.history().items():
        np.testing.assert_array_equal(value, b.history()[key], err_msg=key)


# --- demo and the example config ---------------------------------------------------------

def test_demo_end_to_end(env, tmp_path):
    result = imnn_command(env, "demo", "--max-iterations", 50, "--quiet", "--output", "out",
                          cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    match = FISHER_LINE.search(result.stdout)
    assert match, result.stdout
    detF, analytic, percent, n_s = match.groups()
    assert float(analytic) == 50 and int(n_s) == 20000  # measured on 20 000 fresh simulations
    assert float(percent) == pytest.approx(100 * float(detF) / 50, abs=0.1)
    assert "analytic diag(10, 5)" in result.stdout
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 50 and summary["analytic_detF"] == pytest.approx(50)
    assert summary["detF"] == pytest.approx(float(detF), abs=0.01)
    assert summary["fraction"] == pytest.approx(summary["detF"] / 50)
    assert len(np.load(out / "history.npz")["detF"]) == 50
    assert (out / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = tomllib.loads((out / "config.toml").read_text())
    assert config["simulator"]["name"] == "gaussian_mean_variance"
    assert config["fit"]["max_iterations"] == 50
    fitted = imnn.load(out / cli.CHECKPOINT)
    assert fitted.fit_iteration == 50 and fitted.metadata["status"] == "finished"
    np.testing.assert_allclose(fitted.F, summary["F"])


def test_example_config_runs(env, tmp_path):
    example = ROOT / "examples" / "fit_mean_variance.toml"
    result = imnn_command(env, "fit", example, "--max-iterations", 20, "--output", "run",
                          "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert FISHER_LINE.search(result.stdout), result.stdout
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["iterations"] == 20
    # A second fit into the same run directory would clobber it: refused.
    again = imnn_command(env, "fit", example, "--output", "run", cwd=tmp_path)
    assert again.returncode == 2
    assert "already holds a fit" in again.stderr and "--resume" in again.stderr


# --- SIGTERM, --resume and damaged checkpoints ---------------------------------------------

@pytest.fixture(scope="module")
def interrupted(env, tmp_path_factory):
    """A fit stopped by SIGTERM once it has written its second checkpoint."""
    where = tmp_path_factory.mktemp("interrupted")
    (where / "small.toml").write_text(SMALL)
    process = subprocess.Popen(COMMAND + ["fit", "small.toml", "--output", "run", "--quiet"],
                               env=env, cwd=where, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (where / "run" / cli.PREVIOUS).exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=240)
    return where, process.returncode, stderr


@pytest.fixture(scope="module")
def uninterrupted(env, interrupted):
    """The same fit run straight through to 60 iterations past the interruption."""
    where, _, _ = interrupted
    total = checkpoint(where / "run").manifest["fit_iteration"] + 60
    result = imnn_command(env, "fit", "small.toml", "--output", "straight", "--max-iterations",
                          total, "--quiet", cwd=where)
    assert result.returncode == 0, result.stderr
    return where / "straight", total


def test_sigterm_writes_a_checkpoint_and_exits(interrupted):
    where, returncode, stderr = interrupted
    assert returncode == 128 + signal.SIGTERM
    assert "SIGTERM" in stderr and "imnn fit --resume" in stderr
    assert "Traceback" not in stderr
    saved = checkpoint(where / "run")
    assert saved.metadata["status"] == "interrupted"
    assert saved.manifest["fit_iteration"] >= 20
    assert len(saved.history()["detF"]) == saved.manifest["fit_iteration"]
    previous = checkpoint(where / "run", cli.PREVIOUS)
    assert previous.manifest["fit_iteration"] < saved.manifest["fit_iteration"]


def test_resumed_fit_equals_the_uninterrupted_one(env, interrupted, uninterrupted, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(interrupted[0] / "run", run)
    straight, total = uninterrupted
    result = imnn_command(env, "fit", "--resume", run, "--max-iterations", total, "--quiet")
    assert result.returncode == 0, result.stderr
    assert "resuming at iteration" in result.stdout
    resumed = checkpoint(run)
    assert resumed.metadata["status"] == "finished"
    assert resumed.manifest["fit_iteration"] == total
    assert_same_fit(resumed, checkpoint(straight))


def test_truncated_checkpoint_is_detected_and_the_previous_one_used(env, interrupted,
                                                                     uninterrupted, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(interrupted[0] / "run", run)
    latest = run / cli.CHECKPOINT
    latest.write_bytes(latest.read_bytes()[:latest.stat().st_size // 3])
    with pytest.raises(persistence.DamagedFileError, match="is damaged"):
        imnn.load(latest)
    previous = checkpoint(run, cli.PREVIOUS).manifest["fit_iteration"]
    straight, total = uninterrupted
    result = imnn_command(env, "fit", "--resume", run, "--max-iterations", total, "--quiet")
    assert result.returncode == 0, result.stderr
    assert f"{latest} is damaged" in result.stderr
    assert f"using the previous good checkpoint {run / cli.PREVIOUS} (iteration {previous})" \
        in result.stderr
    assert f"resuming at iteration {previous} " in result.stdout
    # Resumed from further back, the fit still ends where the uninterrupted one did.
    assert_same_fit(checkpoint(run), checkpoint(straight))


def test_no_intact_checkpoint_is_a_clear_error(interrupted, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(interrupted[0] / "run", run)
    for name in (cli.CHECKPOINT, cli.PREVIOUS):
        (run / name).write_bytes(b"PK\x03\x04 truncated")
    assert cli.main(["fit", "--resume", str(run)]) == 1
    assert "has no intact checkpoint" in capsys.readouterr().err
    assert cli.main(["info", str(tmp_path)]) == 1
    assert "not a run directory" in capsys.readouterr().err


# --- estimate, info, lfi ---------------------------------------------------------------------

def test_estimate_info_and_lfi(env, uninterrupted, tmp_path):
    straight, total = uninterrupted
    d = exact_data(jax.random.PRNGKey(5), 4, 1)[0]
    np.save(tmp_path / "d.npy", d)
    result = imnn_command(env, "estimate", straight, tmp_path / "d.npy", "--output",
                          tmp_path / "θ.npy")
    assert result.returncode == 0, result.stderr
    printed = np.array([[float(v) for v in line.split()] for line in result.stdout.splitlines()])
    fitted = imnn.load(straight / cli.CHECKPOINT, backend="numpy")
    expected = fitted.get_estimate(d)
    np.testing.assert_allclose(printed, expected, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(np.load(tmp_path / "θ.npy"), expected, rtol=1e-10, atol=1e-12)

    result = imnn_command(env, "info", straight)
    assert result.returncode == 0, result.stderr
    assert f"status: finished, {total} iterations" in result.stdout
    assert "class: SimulatorIMNN, backend jax" in result.stdout
    assert f"history: {total} iterations" in result.stdout
    assert f"det F = {np.linalg.det(fitted.F):.6g}" in result.stdout

    result = imnn_command(env, "lfi", straight, tmp_path / "d.npy")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[2:]]
    assert len(rows) == 4 * 2
    σ = np.sqrt(np.diag(fitted.invF))
    for target, parameter, θ̂, mean, std in rows:
        t, i = int(target), int(parameter[-1])
        # A box of ±5σ hardly truncates N(θ̂, F⁻¹): mean θ̂, std √(F⁻¹)_ii.
        assert float(θ̂) == pytest.approx(expected[t, i], rel=1e-5, abs=1e-6)
        assert float(mean) == pytest.approx(expected[t, i], abs=1e-3 * σ[i])
        assert float(std) == pytest.approx(σ[i], rel=1e-3)


def test_fit_from_data_files(tmp_path, capsys):
    fiducial, derivative = exact_data(jax.random.PRNGKey(1), 60, 60)
    np.savez(tmp_path / "data.npz", fiducial=fiducial, derivative=derivative)
    (tmp_path / "data.toml").write_text("""
checkpoint_every = 5
model = [{type = "Dense", features = 8}, {type = "Tanh"}, {type = "Dense", features = 2}]
[data]
file = "data.npz"
theta_fid = [0.0, 1.0]
[fit]
max_iterations = 12
min_iterations = 0
""")
    # data.npz is found next to the config, wherever the command runs
    assert cli.main(["fit", str(tmp_path / "data.toml"), "--output", str(tmp_path / "run"),
                     "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "GradientIMNN, backend=jax, n_s=60" in out
    assert "Fisher information reached: det F = " in out and "on the training data" in out
    fitted = imnn.load(tmp_path / "run" / cli.CHECKPOINT)
    assert fitted.class_name == "GradientIMNN" and fitted.fit_iteration == 12
    config = tomllib.loads((tmp_path / "run" / "config.toml").read_text())
    assert config["data"]["file"] == str(tmp_path / "data.npz")


# --- configuration errors ----------------------------------------------------------------------

GOOD = {"model": '[{type = "Dense", features = 2}]',
        "simulator": '\n[simulator]\nname = "gaussian_variance"\nn_s = 10\n'}


@pytest.mark.parametrize("text, message", [
    (f'model = {GOOD["model"]}\n', r"missing \[simulator\] or \[data\]"),
    (f'outptu = "x"\nmodel = {GOOD["model"]}\n{GOOD["simulator"]}',
     r"unknown key 'outptu' \(known keys: output, seed"),
    (f'model = {GOOD["model"]}\n{GOOD["simulator"]}\n[fit]\npatiance = 3\n',
     r"unknown key 'fit.patiance' \(known keys in \[fit\]: lambda, epsilon, patience"),
    (f'model = {GOOD["model"]}\n{GOOD["simulator"]}\n[fit]\npatience = "100"\n',
     r"'fit.patience' must be a positive integer, got str '100'"),
    (f'x64 = 1\nmodel = {GOOD["model"]}\n{GOOD["simulator"]}',
     r"'x64' must be true or false, got int 1"),
    ('model = [{type = "Dense", featurs = 2}]\n' + GOOD["simulator"],
     r"model\[0\]: unknown key 'featurs' for a Dense layer"),
    (f'model = {GOOD["model"]}\n[simulator]\nname = "gaussian_variance"\nn_s = 10\nN = 3\n',
     r"unknown key 'simulator.N'"),
    (f'model = {GOOD["model"]}\n[simulator]\nname = "gaussian"\nn_s = 10\n',
     r"'simulator.name' must be one of gaussian_mean_variance"),
    (f'model = {GOOD["model"]}\n[data]\nfiducial = "f.npy"\nderivative = "d.npy"\n'
     'theta_fid = [1.0]\n', r"'data.fiducial': file not found: .*f.npy"),
    (f'model = {GOOD["model"]}\n{GOOD["simulator"]}\n[optimiser]\nname = "adamm"\n',
     r"optax has no optimiser 'adamm'"),
    (f'model = {GOOD["model"]}\n{GOOD["simulator"]}\n[optimiser]\nname = "adam"\nrate = 1\n',
     r"unknown key 'optimiser.rate': optax.adam takes learning_rate"),
    (f'devices = 2\nmodel = {GOOD["model"]}\n{GOOD["simulator"]}',
     r"'devices' needs 'n_per_device'"),
    ('model = [\n', r"is not valid TOML"),
])
def test_config_errors_name_the_key(tmp_path, capsys, text, message):
    (tmp_path / "bad.toml").write_text(text)
    assert cli.main(["fit", str(tmp_path / "bad.toml"), "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert err.startswith("imnn fit: error: ") and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_config_file_not_found_from_the_console_script(env, tmp_path):
    result = imnn_command(env, "fit", tmp_path / "missing.toml")
    assert result.returncode == 2
    assert result.stderr == f"imnn fit: error: config file not found: {tmp_path / 'missing.toml'}\n"
    result = imnn_command(env, "fit")
    assert result.returncode == 2 and "give a CONFIG.toml" in result.stderr


def test_written_config_reads_back_the_same(tmp_path):
    (tmp_path / "c.toml").write_text(SMALL)
    config = cli.read_config(tmp_path / "c.toml")
    assert config["fit"]["lambda"] == 10.0 and config["simulator"]["n_d"] == 100
    assert tomllib.loads(cli.to_toml(config)) == config
    assert cli.resolve_config(tomllib.loads(cli.to_toml(config)), tmp_path) == config


def test_documented_config_is_valid(tmp_path):
    page = (ROOT / "docs" / "guide" / "cli.md").read_text()
    block = re.search(r"```toml\n(output = .*?)```", page, re.S).group(1)
    (tmp_path / "documented.toml").write_text(block)
    config = cli.read_config(tmp_path / "documented.toml")
    assert config["simulator"]["name"] == "gaussian_mean_variance"
    assert config["fit"]["max_iterations"] == 3000 and len(config["model"]) == 5
    assert config["optimiser"]["learning_rate"]["schedule"] == "cosine_decay"


def test_estimate_errors_are_clear(interrupted, tmp_path, capsys):
    run = interrupted[0] / "run"
    np.save(tmp_path / "wrong.npy", np.zeros((3, 7)))
    assert cli.main(["estimate", str(run), str(tmp_path / "wrong.npy"), "--backend", "numpy"]) == 1
    assert "must hold one simulation (10,) or a batch (n,)+(10,), got (3, 7)" in \
        capsys.readouterr().err
    assert cli.main(["estimate", str(run), str(tmp_path / "none.npy"), "--backend", "numpy"]) == 1
    assert "no such file" in capsys.readouterr().err
