"""Trace / lower / compile seconds of the loop of iterations (``jit(chunk)``) of
GradientIMNN against NumericalGradientIMNN, in one process, variants alternated.

    python bench/bench_fd_stages.py [--rounds 3] [--no-validation]

Each class is built as in bench/bench_compile.py (mean/variance problem, n_s = n_d
= 1000, MLP 128-128 ELU, Adam 1e-3, validation data). Its first ``fit`` of one
iteration records the arguments of the compiled loop; then, every round, after
``jax.clear_caches()``, ``jit(chunk).trace(*args)``, ``.lower()`` and ``.compile()``
are timed apart (wall and CPU seconds), and the operations of the lowered module
(StableHLO) and of the optimised HLO are counted by opcode.
"""
from __future__ import annotations

import argparse
import collections
import re
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]


def build(name, validation=True):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from bench_compile import N_D, N_S, simulate

    import imnn
    nn = imnn.nn
    θ_fid = np.array([0.0, 1.0], dtype=np.float32)
    θ = jnp.asarray(θ_fid)
    δθ = np.array([0.1, 0.1], dtype=np.float32)
    model = nn.serial(nn.Dense(128), nn.Elu(), nn.Dense(128), nn.Elu(), nn.Dense(2))
    args = (N_S, N_D, 2, 2, (10,), θ_fid, model, optax.adam(1e-3), jax.random.PRNGKey(0))

    def exact(seed):
        keys = jax.random.split(jax.random.PRNGKey(seed), N_S)
        d = jax.vmap(simulate, in_axes=(0, None))(keys, θ)
        dd = jax.vmap(jax.jacfwd(simulate, argnums=1), in_axes=(0, None))(keys[:N_D], θ)
        return np.asarray(d), np.asarray(dd)

    def numerical(seed):
        keys = jax.random.split(jax.random.PRNGKey(seed), N_S)
        shifts = jnp.asarray(np.einsum("i,jk->ijk", [-1.0, 1.0], np.diag(δθ) / 2))
        d = jax.vmap(simulate, in_axes=(0, None))(keys, θ)
        dd = jax.vmap(lambda k: jax.vmap(jax.vmap(lambda s: simulate(k, θ + s)))(shifts))(
            keys[:N_D])
        return np.asarray(d), np.asarray(dd)

    if name == "GradientIMNN":
        return imnn.GradientIMNN(*args, *exact(1), *(exact(2) if validation else (None, None)))
    return imnn.NumericalGradientIMNN(*args, *numerical(1), δθ,
                                      *(numerical(2) if validation else (None, None)))


def capture(name, validation):
    """The (function, compiler options, arguments) of the fit's compiled loop."""
    import imnn.backends.jax.execution as E
    seen = {}
    original = E.jit

    def recording(function, platform=None):
        compiled = original(function, platform)

        def call(*args):
            seen.setdefault("call", (function, platform, args))
            return compiled(*args)
        call._cache_size = compiled._cache_size
        return call

    E.jit = recording
    try:
        fitter = build(name, validation)
        fitter.fit(10.0, 0.1, max_iterations=1, min_iterations=0)
    finally:
        E.jit = original
    return seen["call"]


def opcodes(text, hlo):
    pattern = (r"=\s*[^=]*?\s([a-z][a-z0-9\-_.]*)\(" if hlo else
               r"=\s*(?:\"?)(stablehlo\.[a-z_]+|chlo\.[a-z_]+|func\.call|call)")
    return collections.Counter(m.group(1) for m in re.finditer(pattern, text))


def stages(function, platform, args):
    import jax

    from imnn._compilation import compiler_options
    jax.clear_caches()
    jitted = jax.jit(function, compiler_options=compiler_options(platform))
    out, t, c = {}, time.perf_counter(), time.process_time()
    traced = jitted.trace(*args)
    out["trace"] = (time.perf_counter() - t, time.process_time() - c)
    t, c = time.perf_counter(), time.process_time()
    lowered = traced.lower()
    out["lower"] = (time.perf_counter() - t, time.process_time() - c)
    t, c = time.perf_counter(), time.process_time()
    compiled = lowered.compile()
    out["compile"] = (time.perf_counter() - t, time.process_time() - c)
    return out, lowered, compiled


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--classes", default="GradientIMNN,NumericalGradientIMNN")
    parser.add_argument("--no-validation", action="store_true")
    parser.add_argument("--ablate-finite", action="store_true",
                        help="also compile each loop without the non-finite step guard "
                             "(imnn._fitting.all_finite patched to True; a measurement only)")
    parser.add_argument("--dump", default=None, help="folder for lowered/compiled text")
    a = parser.parse_args()
    import jax.numpy as jnp

    import imnn._fitting as fitting
    names = a.classes.split(",")
    calls = {n: capture(n, not a.no_validation) for n in names}
    guard = fitting.all_finite
    if a.ablate_finite:
        calls.update({f"{n}-no-guard": calls[n] for n in names})
        names = [v for n in names for v in (n, f"{n}-no-guard")]
    results = collections.defaultdict(list)
    for r in range(a.rounds):
        for n in names:
            fitting.all_finite = ((lambda *trees: jnp.bool_(True)) if n.endswith("-no-guard")
                                  else guard)
            out, lowered, compiled = stages(*calls[n])
            fitting.all_finite = guard
            results[n].append(out)
            print(n, r, {k: f"{w:.2f}w/{c:.2f}c" for k, (w, c) in out.items()}, flush=True)
            if r == 0:
                low, opt = lowered.as_text(), compiled.as_text()
                lo, hi = opcodes(low, False), opcodes(opt, True)
                print(f"  lowered ops {sum(lo.values())}: {lo.most_common(25)}")
                print(f"  optimised HLO ops {sum(hi.values())}: {hi.most_common(25)}")
                if a.dump:
                    Path(a.dump).mkdir(parents=True, exist_ok=True)
                    Path(a.dump, f"{n}.stablehlo").write_text(low)
                    Path(a.dump, f"{n}.hlo").write_text(opt)
    for n in names:
        for k in ("trace", "lower", "compile"):
            ws = sorted(o[k][0] for o in results[n])
            cs = sorted(o[k][1] for o in results[n])
            print(f"{n:24s} {k:8s} median wall {ws[len(ws)//2]:.2f} CPU {cs[len(cs)//2]:.2f}")
    import os
    print("load", os.getloadavg())


if __name__ == "__main__":
    main()
