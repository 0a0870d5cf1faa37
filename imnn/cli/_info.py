"""``imnn info``: what a run is and how its fit went."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ._rundir import saved_model

HELP = "what a run is and how its fit went"


def add_arguments(p) -> None:
    """The info command's options."""
    p.add_argument("run", type=Path, help="run directory or .imnn file")


def run(args) -> int:
    """Print what the run is and how its fit went; returns the exit status."""
    saved = saved_model(args.run)
    m, history, arrays = saved.manifest, saved.history(), saved.arrays
    meta = saved.metadata
    lines = [f"file: {saved.path}"]
    if "status" in meta:
        lines.append(f"status: {meta['status']}, {m['fit_iteration']} iterations in "
                     f"{meta.get('seconds', 0.0):.1f} s")
        config = meta["config"]
        fit = config["fit"]
        lines.append(f"fit: λ={fit['lambda']}, ε={fit['epsilon']}, patience={fit['patience']} "
                     f"(counter {m['patience_counter']}), min_iterations={fit['min_iterations']}, "
                     f"max_iterations={fit['max_iterations']}, seed={config['seed']}, "
                     f"x64={config['x64']}")
        source = config.get("simulator", config.get("data"))
        lines.append(("simulator: " if "simulator" in config else "data: ")
                     + ", ".join(f"{k}={v}" for k, v in source.items()))
    lines.append(f"class: {m['class']}, backend {m['backend']}, n_s={m['n_s']}, n_d={m['n_d']}, "
                 f"n_params={m['n_params']}, n_summaries={m['n_summaries']}, "
                 f"input_shape={tuple(m['input_shape'])}")
    if m.get("model") is not None:
        lines.append("model: " + " → ".join(
            layer["type"] + "(" + ", ".join(f"{k}={v}" for k, v in layer.items()
                                            if k != "type") + ")"
            for layer in m["model"]))
    else:
        kind = m.get("model_kind", "?") + (f" ({m['model_type']})" if m.get("model_type") else "")
        built = meta.get("config", {}).get("model")
        lines.append(f"model: {kind}" + (f", built by {built}" if isinstance(built, str) else ""))
    lines.append(f"θ_fid: {arrays['θ_fid'].tolist()}")
    n = len(history["detF"])
    if n:
        best = int(np.nanargmax(np.where(np.isfinite(history["detF"]), history["detF"], -np.inf)))
        lines.append(f"history: {n} iterations; det F {history['detF'][0]:.4g} → "
                     f"{history['detF'][-1]:.4g} (training max {history['detF'][best]:.4g} at "
                     f"iteration {best}); max_detF (stopping criterion) {history['max_detF']:.4g}")
        last = ", ".join(f"{k} {history[k][-1]:.4g}" for k in ("detC", "detinvC", "Λ2", "r"))
        lines.append(f"last iteration: {last}")
        validation = history["val_detF"]
        if len(validation):
            lines.append(f"validation: det F {validation[0]:.4g} → {validation[-1]:.4g} "
                         f"(max {np.nanmax(validation):.4g})")
    else:
        lines.append("history: no iterations yet")
    if "statistics/F" in arrays:
        F = arrays["statistics/F"]
        lines.append(f"det F = {np.linalg.det(F):.6g} (statistics at the returned weights)")
        lines.append(f"F = {np.array2string(F, precision=4)}".replace("\n", "\n    "))
        σ = np.sqrt(np.diag(arrays["statistics/invF"]))
        lines.append(f"Fisher errors √diag(F⁻¹): {np.array2string(σ, precision=4)}")
    else:
        lines.append("statistics: none yet (the fit has not finished a chunk of iterations)")
    print("\n".join(lines))
    return 0
