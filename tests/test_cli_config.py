"""The command line's refusals, in process: every bad config value (hypothesis over
the schema's keys) is exit status 2 naming the key before any file is written;
file, directory and module problems are one line on stderr; estimate refuses
non-finite data; --version and the help texts."""
import argparse
import re
import sys
import tomllib
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from imnn import cli
from imnn.cli import _fit, _schema

from conftest import exact_data

pytestmark = pytest.mark.xdist_group("cli_config")  # one worker: its module fixture is made once

BASE = {"seed": 1, "checkpoint_every": 10, "model": [{"type": "Dense", "features": 2}],
        "simulator": {"name": "gaussian_mean_variance", "n_s": 20},
        "optimiser": {"name": "adam", "learning_rate": 1e-3},
        "fit": {"lambda": 10.0, "epsilon": 0.1, "patience": 10, "min_iterations": 0,
                "max_iterations": 10}}
# Every key of the schema's table (tables themselves and [data], which excludes
# [simulator], aside), some optimiser arguments checked against optax's
# signature, and a built-in simulator's own argument.
KEYS = sorted({key.name for key in _schema.SCHEMA if key.kind != "table"
               and not key.name.startswith("data.")}
              | {"optimiser.b1", "optimiser.nesterov", "optimiser.eps", "simulator.n"})
VALUES = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=6),
    st.sampled_from(["fast", "1e-3", "a:b", "gaussian_variance", "numpy", "adam", "sgd"]),
    st.booleans(), st.integers(-3, 3), st.integers(2 ** 62, 2 ** 66),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.one_of(st.integers(-2, 2), st.floats(-2, 2)), max_size=3),
    st.lists(st.fixed_dictionaries({"type": st.sampled_from(["Dense", "Elu", "Conv"])}),
             max_size=2),
    st.dictionaries(st.sampled_from(["schedule", "init_value", "decay_steps", "x"]),
                    st.one_of(st.integers(-1, 3), st.sampled_from(["cosine_decay", "y"])),
                    max_size=3))


@pytest.fixture(autouse=True)
def quiet_jax(monkeypatch):
    """No persistent compilation cache and no global JAX settings changed in process."""
    monkeypatch.setenv("IMNN_COMPILATION_CACHE", "off")
    monkeypatch.setattr(_fit, "configure_jax", lambda x64, devices: None)


def write(tmp_path, config, name="c.toml"):
    path = tmp_path / name
    path.write_text(cli.to_toml(config))
    return path


def one_line_error(err, command="fit"):
    assert err.startswith(f"imnn {command}: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@settings(max_examples=int(__import__("os").environ.get("CLI_EXAMPLES", 80)), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(KEYS), value=VALUES)
def test_every_bad_config_value_is_refused_naming_its_key(tmp_path, capsys, key, value):
    config = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE.items()}
    table, _, name = key.rpartition(".")
    (config[table] if table else config)[name] = value
    path = write(tmp_path, config)
    out = tmp_path / "run"
    status = cli.main(["fit", str(path), "--output", str(out), "--check"])
    err = capsys.readouterr().err
    assert status in (0, 2), err
    if status == 2:
        one_line_error(err)
        # the key, or its value where it makes another key required
        assert name in err or repr(value) in err, (key, value, err)
    assert not out.exists()


def test_the_schema_is_the_one_source_of_defaults(tmp_path):
    config = cli.read_config(write(tmp_path, {"model": BASE["model"],
                                              "simulator": BASE["simulator"]}))
    for key in _schema.SCHEMA:
        table, _, name = key.name.rpartition(".")
        where = config.get(table, {}) if table else config
        if isinstance(key.default, (int, float)) and table in ("", "fit"):
            assert where[name] == key.default, key.name
    # No [optimiser]: the default optimiser's cosine over fit.max_iterations, as a table
    assert config["optimiser"] == {"name": "adam", "learning_rate": {
        "schedule": "cosine_decay", "init_value": 1e-2, "alpha": 1e-2,
        "decay_steps": _schema.BY_NAME["fit.max_iterations"].default}}
    # [optimiser] without a learning rate: the schema's default rate
    config = cli.read_config(write(tmp_path, {"model": BASE["model"],
                                              "simulator": BASE["simulator"],
                                              "optimiser": {"name": "adam"}}))
    assert config["optimiser"] == {
        "name": "adam", "learning_rate": _schema.BY_NAME["optimiser.learning_rate"].default}


@pytest.mark.parametrize("learning_rate, message", [
    ("fast", r"'optimiser.learning_rate' must be a positive number or a schedule table"),
    ("1e-3", r"got str '1e-3'"),
    (0.0, r"'optimiser.learning_rate' must be positive"),
    (float("inf"), r"'optimiser.learning_rate' must be finite"),
    ({"schedule": "cosine"}, r"optax has no schedule 'cosine'"),
    ({"schedule": "cosine_decay", "init_value": 1e-2},
     r"'optimiser.learning_rate.decay_steps' is required by optax.cosine_decay_schedule"),
    ({"schedule": "cosine_decay", "init_value": 1e-2, "decay_steps": 2.5},
     r"'optimiser.learning_rate.decay_steps' must be an integer"),
    ({"schedule": "cosine_decay", "init_value": 1e-2, "decay_steps": 0},
     r"requires positive decay_steps"),
    ({"schedule": "cosine_decay", "init_value": 1e-2, "decay_steps": 9, "alpah": 0.1},
     r"unknown key 'optimiser.learning_rate.alpah': optax.cosine_decay_schedule takes"),
])
def test_learning_rates_and_schedules_are_checked(tmp_path, capsys, learning_rate, message):
    config = {**BASE, "optimiser": {"name": "adam", "learning_rate": learning_rate}}
    status = cli.main(["fit", str(write(tmp_path, config)), "--output", str(tmp_path / "run")])
    err = one_line_error(capsys.readouterr().err)
    assert status == 2 and re.search(message, err), err
    assert not (tmp_path / "run").exists()


def test_a_schedule_builds_the_optimiser(tmp_path, capsys):
    config = {**BASE, "optimiser": {"name": "adamw", "weight_decay": 1e-4, "learning_rate": {
        "schedule": "warmup_cosine_decay", "init_value": 0.0, "peak_value": 1e-2,
        "warmup_steps": 5, "decay_steps": 50}}}
    assert cli.main(["fit", str(write(tmp_path, config)), "--output", str(tmp_path / "run"),
                     "--check"]) == 0
    assert "is a valid config: SimulatorIMNN" in capsys.readouterr().out
    assert not (tmp_path / "run").exists()


MODULES = {
    "broken_syntax": ("def simulate(key, θ)\n    return θ\n", r"SyntaxError: .*broken_syntax"),
    "broken_import": ("raise RuntimeError('no GPU here')\n",
                      r"cannot import 'broken_import': RuntimeError: no GPU here"),
    "no_function": ("x = 1\n", r"no_function has no function 'simulate'"),
}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_users_broken_module_is_one_line(tmp_path, capsys, monkeypatch, module):
    source, message = MODULES[module]
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = {**BASE, "simulator": {"name": f"{module}:simulate", "n_s": 20,
                                    "theta_fid": [0.0, 1.0]}}
    assert cli.main(["fit", str(write(tmp_path, config)), "--output", "run"]) == 2
    err = one_line_error(capsys.readouterr().err)
    assert re.search(message, err), err
    assert not (tmp_path / "run").exists()


def test_file_and_directory_problems_are_one_line(tmp_path, capsys):
    path = write(tmp_path, BASE)
    (tmp_path / "file").write_text("not a directory")
    assert cli.main(["fit", str(path), "--output", str(tmp_path / "file")]) == 2
    assert "is a file, not a directory" in one_line_error(capsys.readouterr().err)
    assert cli.main(["fit", str(path), "--output", str(tmp_path / "file" / "run")]) == 2
    assert "cannot create the run directory" in one_line_error(capsys.readouterr().err)
    assert (tmp_path / "file").read_text() == "not a directory"

    fiducial, derivative = exact_data(jax.random.PRNGKey(0), 30, 30)
    np.savez(tmp_path / "data.npz", fiducial=fiducial, derivative=derivative)
    whole = (tmp_path / "data.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(whole[:len(whole) // 2])
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY junk")
    data = {k: v for k, v in BASE.items() if k != "simulator"}
    for table, message in [({"file": "cut.npz"}, r"'data.file'.*cut.npz"),
                           ({"fiducial": "junk.npy", "derivative": "junk.npy"},
                            r"'data.fiducial': cannot read .*junk.npy")]:
        config = {**data, "data": {**table, "theta_fid": [0.0, 1.0]}}
        status = cli.main(["fit", str(write(tmp_path, config)), "--output",
                           str(tmp_path / "run")])
        err = one_line_error(capsys.readouterr().err)
        assert status == 2 and re.search(message, err), err
        assert not (tmp_path / "run").exists()
    assert zipfile.is_zipfile(tmp_path / "data.npz")


def test_a_fit_failing_before_its_first_iteration_leaves_nothing(tmp_path, capsys, monkeypatch):
    (tmp_path / "fails_later.py").write_text(
        "import numpy as np\n"
        "def simulate(key, θ):\n"
        "    if 'Tracer' in type(key).__name__:  # called directly to check it, fails in the fit\n"
        "        raise FloatingPointError('the simulator overflowed')\n"
        "    return np.zeros(3)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = {**BASE, "backend": "numpy", "simulator": {
        "name": "fails_later:simulate", "n_s": 20, "theta_fid": [0.0, 1.0]}}
    assert cli.main(["fit", str(write(tmp_path, config)), "--output", "run", "--quiet"]) == 1
    err = one_line_error(capsys.readouterr().err)
    assert "the fit failed at iteration 0 (FloatingPointError: the simulator overflowed)" in err
    assert "nothing was kept" in err
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory):
    where = tmp_path_factory.mktemp("fitted")
    fiducial, derivative = exact_data(jax.random.PRNGKey(1), 40, 40)
    np.savez(where / "data.npz", fiducial=fiducial, derivative=derivative)
    config = {"model": [{"type": "Dense", "features": 2}], "backend": "numpy",
              "data": {"file": "data.npz", "theta_fid": [0.0, 1.0]},
              "fit": {"max_iterations": 3, "min_iterations": 0}}
    path = write(where, config)
    assert cli.main(["fit", str(path), "--output", str(where / "run"), "--quiet",
                     "--no-compilation-cache"]) == 0
    return where / "run"


def test_estimate_refuses_non_finite_data_and_missing_folders(fitted_run, tmp_path, capsys):
    d = exact_data(jax.random.PRNGKey(2), 3, 1)[0]
    d[1, 4] = np.nan
    np.save(tmp_path / "d.npy", d)
    assert cli.main(["estimate", str(fitted_run), str(tmp_path / "d.npy")]) == 1
    err = one_line_error(capsys.readouterr().err, "estimate")
    assert "holds 1 NaN or infinite value(s) of 30" in err and "--allow-nan" in err
    assert cli.main(["estimate", str(fitted_run), str(tmp_path / "d.npy"), "--allow-nan"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows[1] == ["nan", "nan"] and all(np.isfinite(float(v)) for v in rows[0] + rows[2])
    missing = tmp_path / "no" / "θ.npy"
    assert cli.main(["estimate", str(fitted_run), str(tmp_path / "d.npy"), "--allow-nan",
                     "--output", str(missing)]) == 2
    assert "the folder" in one_line_error(capsys.readouterr().err, "estimate")
    assert not (tmp_path / "no").exists()


def test_version_and_help(capsys):
    from imnn import __version__
    with pytest.raises(SystemExit) as exit:
        cli.main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out == f"imnn {__version__}\n"
    with pytest.raises(SystemExit):
        cli.main(["fit", "--help"])
    assert "docs/guide/cli.md" in capsys.readouterr().out
    top = cli.parser()
    subparsers = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) == {c.name for c in cli.COMMANDS}
    for name, parser in subparsers.choices.items():
        for action in parser._actions:
            assert action.help, f"imnn {name} {action.option_strings or action.dest}"
    assert sys.modules["imnn.cli"].main is cli.main


def test_the_documentation_describes_every_key_and_its_examples_run(tmp_path):
    page = (Path(__file__).resolve().parent.parent / "docs" / "guide" / "cli.md").read_text()
    for key in _schema.SCHEMA:
        table, _, name = key.name.rpartition(".")
        shown = f"`[{name}]`" if key.kind == "table" else f"`{name}`"
        assert shown in page and (not table or f"`[{table}]`" in page), key.name
    for option in ("--overwrite", "--allow-import", "--compilation-cache",
                   "--no-compilation-cache", "--allow-nan", "--check", "--model"):
        assert option in page, option
    blocks = re.findall(r"```(toml|python)\n(.*?)```", page, re.S)
    for n, (language, text) in enumerate(blocks):
        if language == "python":
            namespace = {}
            exec(compile(text, f"cli.md block {n}", "exec"), namespace)
            init, apply = namespace["model"]()
            assert callable(init) and callable(apply)
        elif "model" in text:
            config = cli.read_config(write_text(tmp_path / f"block{n}.toml", text))
            assert config["optimiser"]["learning_rate"]["decay_steps"] == 3000
        else:  # an [optimiser] fragment: complete it with the base config's other tables
            fragment = tomllib.loads(text)
            cli.resolve_config({**BASE, **fragment}, tmp_path)


def write_text(path, text):
    path.write_text(text)
    return path


def test_a_flax_model_from_a_module_is_built_and_checked(tmp_path, capsys, monkeypatch):
    (tmp_path / "flax_model_cli.py").write_text(
        "import flax.linen as nn\n\n\n"
        "class MLP(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return nn.Dense(3)(nn.elu(nn.Dense(8)(x)))\n\n\n"
        "def model():\n    return MLP()\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = {**BASE, "model": "flax_model_cli:model"}
    assert cli.main(["fit", str(write(tmp_path, config)), "--output", "run", "--check"]) == 0
    assert "is a valid config: SimulatorIMNN" in capsys.readouterr().out
    config["backend"] = "numpy"  # the reference backends run imnn.nn models only
    assert cli.main(["fit", str(write(tmp_path, config)), "--output", "run", "--check"]) == 2
    err = one_line_error(capsys.readouterr().err)
    assert "'model' cannot summarise simulations of shape (10,) on the numpy backend" in err
    assert not (tmp_path / "run").exists()
