"""Running a fit into a run directory: checkpoints, signals, the report."""
from __future__ import annotations

import contextlib
import io
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from ._errors import EXIT_ERROR, CommandError, one_line
from ._job import Job
from ._rundir import CHECKPOINT, CONFIG, Checkpoints, RunDirectory
from ._signals import StopRequest
from ._toml import to_toml


def run_fit(job: Job, fitter, directory: RunDirectory, command: str, saved=None,
            quiet: bool = False) -> int:
    """Fit (or, given a saved checkpoint, resume) into a claimed run directory.

    A new fit that fails before finishing its first iteration leaves nothing
    behind (``directory.discard()``), so the corrected command may run again.

    Args:
        job: the prepared job.
        fitter: the IMNN built for it (``_job.make_fitter``).
        directory: the run directory, claimed (locked) by this process.
        command: ``"imnn fit"`` or ``"imnn demo"``, for the messages.
        saved: the checkpoint to resume from, or None for a new fit.
        quiet: no progress bar.

    Returns:
        The exit status.

    Raises:
        CommandError: the checkpoint does not fit the config, or the fit failed.
    """
    import jax

    from imnn import persistence
    config, run = job.config, directory.run
    persistence.write_atomically(run / CONFIG, lambda file: file.write(to_toml(config).encode()))
    checkpoints = Checkpoints(run)
    seconds = 0.0
    rng = (np.asarray(jax.random.PRNGKey(config["seed"] + 1)) if job.simulate is not None
           else None)
    if saved is not None:
        try:
            persistence.restore(fitter, saved)
        except (ValueError, TypeError) as error:
            raise CommandError(str(error), EXIT_ERROR) from None
        seconds = saved.metadata.get("seconds", 0.0)
        if saved.metadata.get("rng") is not None:
            rng = np.asarray(saved.metadata["rng"], np.uint32)
    fit = config["fit"]
    start = time.perf_counter()

    def metadata(status):
        return {"config": config, "status": status,
                "seconds": seconds + time.perf_counter() - start,
                "rng": None if rng is None else rng.tolist()}

    every = config["checkpoint_every"]
    last_checkpoint = [fitter.fit_iteration]
    stop = StopRequest()

    def callback(fitter):
        if fitter.fit_iteration - last_checkpoint[0] >= every:
            checkpoints.write(fitter, metadata("running"))
            last_checkpoint[0] = fitter.fit_iteration
        stop.check()

    start_iteration = fitter.fit_iteration
    print(f"{command}: {_describe(fitter)}, backend={fitter.backend}, n_s={fitter.n_s}, "
          + (f"resuming at iteration {start_iteration} of " if saved is not None else "")
          + f"up to {fit['max_iterations']} iterations", flush=True)
    with stop.installed():
        try:
            if saved is None:
                checkpoints.write(fitter, metadata("running"))
            with warnings.catch_warnings(record=True) as caught, (
                    contextlib.redirect_stderr(io.StringIO()) if quiet
                    else contextlib.nullcontext()):
                warnings.simplefilter("always")
                fitter.fit(fit["lambda"], fit["epsilon"], rng=rng, patience=fit["patience"],
                           min_iterations=fit["min_iterations"],
                           max_iterations=fit["max_iterations"], best=fit.get("best", True),
                           # chunks of iterations: progress, checkpoints and stops at their ends
                           print_rate=min(every, 100 if quiet else 10),
                           resume=saved is not None, callback=callback)
        except KeyboardInterrupt:
            raise
        except Exception as error:  # noqa: BLE001 - a failed fit: one line, exit status 1
            kept = "the last checkpoint is kept"
            if saved is None and fitter.fit_iteration == start_iteration:
                directory.discard()
                kept = f"nothing was kept in {run}"
            raise CommandError(f"the fit failed at iteration {fitter.fit_iteration} "
                               f"({one_line(error)}); {kept}", EXIT_ERROR) from None
        for warning in caught:
            if not (stop.signal is not None and "interrupted" in str(warning.message)):
                print(f"imnn: warning: {warning.message}", file=sys.stderr)
        if stop.signal is not None:
            return _interrupted(fitter, checkpoints, metadata, stop)
        checkpoints.write(fitter, metadata("finished"))
    this_run = time.perf_counter() - start
    return _report(job, fitter, run, seconds + this_run, fitter.fit_iteration - start_iteration,
                   this_run)


def _interrupted(fitter, checkpoints, metadata, stop) -> int:
    if len(fitter.history["detF"]) == fitter.fit_iteration:
        checkpoints.write(fitter, metadata("interrupted"))
        where = f"checkpoint written at iteration {fitter.fit_iteration}"
    else:  # stopped inside an update: keep the last periodic checkpoint
        where = "kept the last checkpoint"
    print(f"imnn: {stop.name}: stopped the fit; {where}. Carry on with: imnn fit --resume "
          f"{checkpoints.run}", file=sys.stderr)
    return 128 + stop.signal


def _describe(fitter) -> str:
    name = type(fitter).__name__
    if getattr(fitter, "devices", None):
        return f"{name} over {len(fitter.devices)} device(s), n_per_device={fitter.n_per_device}"
    return name


def _report(job: Job, fitter, run: Path, seconds: float, n_run: int, this_run: float) -> int:
    """Print how much information the fit reached and write the outputs.

    ``seconds`` is the fit's time over all its runs; the time per iteration is
    ``this_run`` (seconds) over the ``n_run`` iterations of this run."""
    reached = float(np.linalg.det(fitter.F))
    analytic = job.simulator.fisher() if job.simulator is not None else None
    expected = None if analytic is None else float(np.linalg.det(analytic))
    if job.simulate is not None and fitter.backend == "jax":
        # det F on n_s simulations scatters by several per cent from draw to draw;
        # on FRESH_SIMULATIONS it is the network's information to about one per cent.
        F_fresh = fresh_fisher(fitter, job.simulate)
        reached = float(np.linalg.det(F_fresh))
        on = f"on {FRESH_SIMULATIONS} fresh simulations"
    elif job.simulate is not None:
        on = f"on {fitter.n_s} fresh simulations"
    else:
        on = f"on the {'validation' if fitter.validate else 'training'} data"
    line = f"Fisher information reached: det F = {_number(reached)}"
    if analytic is not None:
        line += f" of the analytic {expected:.6g} ({100 * reached / expected:.1f} %)"
    print(f"{line}, {on}")
    F = np.array2string(F_fresh if on.startswith(f"on {FRESH_SIMULATIONS}") else fitter.F,
                        precision=3)
    if analytic is None:
        print(f"F = {F}")
    elif np.count_nonzero(analytic - np.diag(np.diag(analytic))) == 0:
        print(f"F = {F}   analytic diag({', '.join(f'{v:.6g}' for v in np.diag(analytic))})")
    else:
        print(f"F = {F}\nanalytic F = {np.array2string(analytic, precision=3)}")
    n_it = fitter.fit_iteration
    per_iteration = f"{1e3 * this_run / n_run:.2f} ms per iteration" if n_run else ""
    if n_run == n_it:
        print(f"{n_it} iterations in {seconds:.1f} s" + (f" ({per_iteration})" if n_run else ""))
    else:  # resumed: the time per iteration is this run's alone
        print(f"{n_it} iterations in {seconds:.1f} s in all; this run {n_run} iterations in "
              f"{this_run:.1f} s" + (f" ({per_iteration})" if n_run else ""))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    axes = fitter.plot(expected_detF=expected, filename=run / "history.png")
    plt.close(axes[0].figure)
    np.savez(run / "history.npz", **{k: np.asarray(v) for k, v in fitter.history.items()})
    summary = {"class": type(fitter).__name__, "backend": fitter.backend,
               "x64": job.config["x64"], "n_s": fitter.n_s, "n_d": fitter.n_d,
               "iterations": n_it, "seconds": seconds, "detF": reached,
               "max_detF": float(fitter.history["max_detF"]),
               "analytic_detF": expected,
               "fraction": None if expected is None else reached / expected,
               "F": fitter.F.tolist(), "θ_fid": np.asarray(fitter.θ_fid).tolist(),
               "statistics": {name: np.asarray(getattr(fitter, name)).tolist()
                              for name in ("F", "invF", "C", "invC", "μ", "dμ_dθ")},
               "checkpoint": str(run / CHECKPOINT)}
    (run / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    print(f"wrote {run}/: config.toml, {CHECKPOINT}, history.png, history.npz, summary.json")
    return 0


def _number(x: float) -> str:
    return f"{x:.2f}" if 0.01 <= abs(x) < 1e6 else f"{x:.4g}"


FRESH_SIMULATIONS = 20000


def fresh_fisher(fitter, simulate, n: int = FRESH_SIMULATIONS, batch: int = 5000,
                 seed: int = 2026) -> np.ndarray:
    """The Fisher matrix of the fitted summaries on ``n`` fresh simulations at θ_fid.

    Args:
        fitter: a fitted IMNN on the JAX backend.
        simulate: ``simulate(key, θ) -> d``, JAX-traceable.
        n: fresh simulations; ``batch``: simulated and summarised at a time.
        seed: ``PRNGKey(seed)`` draws the simulations.

    Returns:
        F, shape (n_params, n_params), from float64 statistics of the summaries
        and their θ-derivatives (forward mode through the simulator).
    """
    import jax
    import jax.numpy as jnp

    from imnn.utils import value_and_jacfwd

    apply, w = fitter.network.apply, fitter.w
    θ = jnp.asarray(fitter.θ_fid, fitter.runtime.dtype)

    @jax.jit
    def summaries(keys):
        return jax.vmap(lambda k: value_and_jacfwd(lambda t: apply(w, simulate(k, t)))(θ))(keys)

    keys = jax.random.split(jax.random.PRNGKey(seed), n)
    parts = [summaries(keys[i:i + batch]) for i in range(0, n, batch)]
    x = np.concatenate([np.asarray(p[0], np.float64) for p in parts])
    dμ_dθ = np.concatenate([np.asarray(p[1], np.float64) for p in parts]).mean(axis=0)
    return dμ_dθ.T @ np.linalg.solve(np.atleast_2d(np.cov(x, rowvar=False)), dμ_dθ)
