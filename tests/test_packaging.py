"""backends/ and reference/ install inside the imnn namespace, in editable and
wheel installs alike, and site-packages gains no generic top-level names."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_editable_install_maps_the_folders():
    import imnn.backends.jax
    import imnn.reference.numba
    import imnn.reference.numpy
    assert Path(imnn.backends.jax.__file__).parent == ROOT / "backends" / "jax"
    assert Path(imnn.reference.numpy.__file__).parent == ROOT / "reference" / "numpy"
    assert Path(imnn.reference.numba.__file__).parent == ROOT / "reference" / "numba"


@pytest.mark.slow
def test_wheel_installs_everything_under_imnn(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    wheel = next(tmp_path.glob("imnn-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"imnn"}, tops
    for module in ("imnn/backends/jax/__init__.py", "imnn/backends/jax/execution.py",
                   "imnn/reference/numpy/__init__.py", "imnn/reference/numba/__init__.py",
                   "imnn/contracts.py"):
        assert module in names, module
    # Installed from the wheel (not the checkout), the namespace imports and fits.
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
         str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr
    code = ("import imnn, imnn.backends.jax, imnn.reference.numba; "
            "print(imnn.__file__); print(imnn.reference.numba.NumbaBackend.name)")
    env = dict(os.environ, PYTHONPATH=str(site))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    location, name = run.stdout.split()
    assert Path(location).is_relative_to(site) and name == "numba"
