"""Aggregation (docs/design/behaviour.md#aggregation), multi-host: the Aggregated classes
run across processes joined by ``jax.distributed`` and give the results of one process with
as many devices.

Two processes on 127.0.0.1, each with 2 simulated CPU devices (cross-process
collectives over gloo, JAX's default on CPU), fit over all 4 global devices;
this process computes the same on its 4 local devices. Run as a script, this
file is one of those processes:

    python tests/test_multihost.py PROCESS_ID NUM_PROCESSES PORT OUT.npz
"""
import os
import socket
import subprocess
import sys
import time
import traceback

import numpy as np
import pytest

N_PROCESSES = 2
N_DEVICES = 4  # global devices, N_DEVICES // N_PROCESSES per process
TIMEOUT_S = 300  # per wait, generous: the whole test takes ~45 s on two busy cores


def results(devices):
    """loss_and_gradient and a 10-iteration fit (x64) of AggregatedSimulatorIMNN
    (n_s > n_d: several batches per stream) and AggregatedGradientIMNN (n_s =
    n_d, one batch, with validation), as float64 arrays; and how often each
    fit loop was compiled."""
    import jax
    import optax

    import imnn

    from conftest import INPUT_SHAPE, exact_data, mlp, simulator, θ_FID

    def flat(tree):
        return np.concatenate([np.ravel(np.asarray(a, np.float64))
                               for a in jax.tree_util.tree_leaves(tree)])

    args = (2, 2, INPUT_SHAPE, θ_FID, mlp(16, 2, imnn.nn.Tanh), optax.adam(1e-3),
            jax.random.PRNGKey(0))
    host = jax.local_devices()[0]
    fid, der = exact_data(jax.random.PRNGKey(1), 24, 24)
    val_fid, val_der = exact_data(jax.random.PRNGKey(2), 24, 24)
    fitters = {
        "simulator": imnn.AggregatedSimulatorIMNN(48, 24, *args, simulator, host, devices, 3),
        "gradient": imnn.AggregatedGradientIMNN(24, 24, *args, fid, der, host, devices, 6,
                                                validation_fiducial=val_fid,
                                                validation_derivative=val_der),
    }
    out = {}
    for name, fitter in fitters.items():
        parts, grads = fitter.loss_and_gradient(10.0, 0.1, rng=jax.random.PRNGKey(5))
        out[f"{name}_loss"] = np.asarray(parts.Λ, np.float64)
        out[f"{name}_gradient"] = flat(grads)
        fitter.fit(10.0, 0.1, rng=jax.random.PRNGKey(2), min_iterations=100, max_iterations=10)
        for key in ("detF", "Λ2", "val_detF"):
            out[f"{name}_{key}"] = fitter.history[key]
        out[f"{name}_final_w"] = flat(fitter.final_w)
        out[f"{name}_F"] = fitter.F
        out[f"{name}_summaries"] = np.asarray(fitter.get_summaries(key=jax.random.PRNGKey(3)).x)
        # Weights and optimiser state start replicated, as a fit leaves them:
        # a second fit reuses the compiled loop.
        fitter.fit(10.0, 0.1, rng=jax.random.PRNGKey(2), min_iterations=100, max_iterations=1)
        out[f"{name}_compilations"] = np.asarray(fitter._runner.programs())
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one_process_with_as_many_devices(tmp_path, x64):
    import jax

    port = free_port()
    env = dict(os.environ, XLA_FLAGS="", PYTHONUNBUFFERED="1")
    logs = [tmp_path / f"{i}.log" for i in range(N_PROCESSES)]
    children = []
    try:
        for i, log in enumerate(logs):
            with open(log, "w") as output:
                children.append(subprocess.Popen(
                    [sys.executable, __file__, str(i), str(N_PROCESSES), str(port),
                     str(tmp_path / f"{i}.npz")], env=env, stdout=output, stderr=subprocess.STDOUT))
        expected = results(jax.devices()[:N_DEVICES])  # meanwhile, here, in one process
        deadline = time.monotonic() + TIMEOUT_S
        # Until all have finished, one has failed (the others would wait for it), or time is up.
        while (any(c.poll() is None for c in children) and not any(c.poll() for c in children)
               and time.monotonic() < deadline):
            time.sleep(0.1)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    failures = [f"process {i} exited with {child.returncode} (negative: killed, after "
                f"{TIMEOUT_S} s or once another process failed); its output:\n{logs[i].read_text()}"
                for i, child in enumerate(children) if child.returncode]
    assert not failures, "\n".join(failures)

    for i in range(N_PROCESSES):
        got = dict(np.load(tmp_path / f"{i}.npz"))
        assert got.pop("topology").tolist() == [N_PROCESSES, N_DEVICES, N_DEVICES // N_PROCESSES]
        assert got.keys() == expected.keys()
        for name in ("simulator", "gradient"):
            # Whole-array comparisons: the last bias has a zero gradient up to
            # rounding, which Adam turns into steps of rounding size; the
            # summaries after the fit shift with it (F does not).
            for key, rtol in (("gradient", 1e-10), ("final_w", 1e-9), ("summaries", 1e-9)):
                a, b = got[f"{name}_{key}"], expected[f"{name}_{key}"]
                assert np.linalg.norm(a - b) <= rtol * np.linalg.norm(b), (i, name, key)
            for key in ("loss", "detF", "Λ2", "val_detF", "F"):
                np.testing.assert_allclose(got[f"{name}_{key}"], expected[f"{name}_{key}"],
                                           rtol=1e-10, atol=1e-14, err_msg=f"{i} {name} {key}")
        assert len(got["gradient_val_detF"]) == 10 and len(got["simulator_detF"]) == 10
        assert got["simulator_compilations"] == got["gradient_compilations"] == 1
    assert expected["simulator_compilations"] == expected["gradient_compilations"] == 1


def main(process_id, num_processes, port, out):
    import jax

    jax.config.update("jax_num_cpu_devices", N_DEVICES // num_processes)
    jax.config.update("jax_enable_x64", True)
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                               num_processes=num_processes, process_id=process_id,
                               initialization_timeout=TIMEOUT_S)
    topology = [jax.process_count(), len(jax.devices()), len(jax.local_devices())]
    np.savez(out, topology=topology, **results(jax.devices()))


if __name__ == "__main__":
    try:
        main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    except BaseException:
        traceback.print_exc()
        os._exit(1)  # now: jax.distributed's shutdown would wait for the other process
