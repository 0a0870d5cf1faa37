"""Field-level inference with an IMNN: the 2-D Gaussian random field (GitHub issue 7).

Fits an IMNN to ``imnn.simulators.GaussianRandomField(N)`` (P(k) = A k^−B, θ = (A, B),
θ_fid = (1, 0.5)), measures the Fisher information its summaries reach on fresh
simulations against the exact value, then infers θ of a target field with the
Gaussian approximation and approximate Bayesian computation (``imnn.lfi``), next to
the exact posterior of the field.

    .venv/bin/python examples/field_inference.py            # 32×32, SimulatorIMNN, CPU
    .venv/bin/python examples/field_inference.py --aggregated --devices 2
    python3 examples/field_inference.py --N 128 --kernel 5 --max-iterations 2000 \
        --prior 0.7 0.45 0.95 0.7 --abc-batch 5000            # 128×128, GPU

The first two are the CPU runs of the README (2–3 minutes each on two cores);
the last is the 128×128 configuration for a GPU (about a minute on an H200;
examples/gpu_checks.sh runs it with both classes).

It writes ``history.png``, ``posterior.png`` and ``summary.json`` into ``--output``.

The network. The optimal statistics of a Gaussian field are quadratic in the field
(power-spectrum estimates): Σ_k w(k)|d_k|² with w ∝ k^B and k^B ln k. The network
computes exactly that family: one k×k convolution with a few filters h_c, squared
and averaged over the field, then a dense layer, so each summary is
Σ_c v_c mean_x (h_c ∗ d)(x)² = Σ_k (Σ_c v_c |ĥ_c(k)|²) |d_k|² / N². 3×3 filters span
weights w(k) that hold 99.4 % of det F at 32×32 when the convolution wraps around the
periodic field (97.0 % with zero padding); the fit finds them. ``imnn.nn`` has no square
activation and no global average pooling, so the network is an ``(init, apply)`` pair,
which the JAX backend takes as it takes ``stax`` models.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

TARGET = (0.85, 0.6)            # θ of the target field
PRIOR = ((0.4, 0.1), (1.6, 1.0))  # the uniform prior box (low, high)


def parse_arguments(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--N", type=int, default=32, help="field side in pixels (default 32)")
    p.add_argument("--max-iterations", type=int, default=1500)
    p.add_argument("--aggregated", action="store_true",
                   help="AggregatedSimulatorIMNN: two-pass gradients over --devices")
    p.add_argument("--devices", type=int, default=None,
                   help="devices to aggregate over (on CPU, simulate this many)")
    p.add_argument("--output", type=Path, default=Path("runs/field_inference"))
    p.add_argument("--n-s", type=int, default=1000, help="simulations per iteration (n_s = n_d)")
    p.add_argument("--n-per-device", type=int, default=250,
                   help="with --aggregated: simulations per device and batch (default 250)")
    p.add_argument("--filters", type=int, default=8, help="convolution filters (default 8)")
    p.add_argument("--kernel", type=int, default=3, help="filter side in pixels (default 3)")
    p.add_argument("--learning-rate", type=float, default=1e-2,
                   help="Adam's initial learning rate, decayed to 1 %% of it by the last "
                        "iteration along a cosine (default 1e-2)")
    p.add_argument("--n-eval", type=int, default=20000,
                   help="fresh simulations measuring the fitted network's det F")
    p.add_argument("--prior", type=float, nargs=4, default=None,
                   metavar=("A_LOW", "B_LOW", "A_HIGH", "B_HIGH"),
                   help="the uniform prior box of the inference (default %s %s %s %s); the "
                        "posterior narrows as 1/N, so larger fields want a smaller box for "
                        "ABC to accept as often" % (*PRIOR[0], *PRIOR[1]))
    p.add_argument("--abc-batch", type=int, default=20000,
                   help="ABC prior draws simulated and compressed per jitted batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def quadratic_network(n_filters=8, kernel=3, n_summaries=2):
    """(init, apply): periodic k×k convolution, square, mean over the field, dense.

    apply(w, d) takes one field (N, N) and returns (n_summaries,). The mean is
    multiplied by N so that the summaries scatter by O(1) whatever N (the mean of
    N² pixels fluctuates as 1/N): the fit need not grow the weights by orders of
    magnitude before the covariance regulariser is satisfied.
    """
    import jax
    import jax.numpy as jnp

    def init(key, input_shape):
        k_filters, k_dense = jax.random.split(key)
        filters = jax.random.normal(k_filters, (kernel, kernel, 1, n_filters)) * math.sqrt(
            2.0 / (kernel * kernel * (1 + n_filters)))
        dense = jax.random.normal(k_dense, (n_filters, n_summaries)) * math.sqrt(
            2.0 / (n_filters + n_summaries))
        return (n_summaries,), (filters, dense, jnp.zeros(n_summaries))

    def apply(w, d):
        filters, dense, bias = w
        # (h_c ∗ d)(x) = Σ_ab h_c[a, b] d(x + (a, b) − kernel // 2), indices mod N: the
        # shifted copies of the field side by side, times the filters. A matrix product
        # rather than lax.conv: as fast, and XLA's CPU compiler runs its gradients fast
        # inside loops too (aggregation over several batches per device).
        shifted = jnp.stack([jnp.roll(d, (kernel // 2 - a, kernel // 2 - b), axis=(0, 1))
                             for a in range(kernel) for b in range(kernel)], axis=-1)
        y = shifted @ filters.reshape(kernel * kernel, n_filters)
        return d.shape[0] * jnp.mean(y ** 2, axis=(0, 1)) @ dense + bias

    return init, apply


def quadratic_ceiling(sim, kernel, θ=None):
    """The largest fraction of det F that summaries Σ_k W(k)|d_k|² can hold when W is
    a weight a periodic kernel×kernel filter bank can make: W in the span of
    cos(2π(a n_x + b n_y)/N), |a|, |b| < kernel (|ĥ(k)|² of such a filter, and sums
    of them). With s_j = Σ_k b_j(k)|d_k|²/N² for that basis, ∂⟨s⟩/∂θ = Σ_k b_j ∂P and
    Cov(s_i, s_j) = 2 Σ_k b_i b_j P² (|d_k|² = |d_−k|²), so F = Jᵀ C⁻¹ J; the quadratic
    network reaches it with enough filters."""
    import numpy as np
    θ = sim.θ_fid if θ is None else θ
    n = np.fft.fftfreq(sim.N) * sim.N
    k = sim.k[sim.k > 0]
    P = θ[0] * k ** -θ[1]
    dP = np.stack([P / θ[0], -np.log(k) * P])
    frequencies = [(a, b) for a in range(kernel) for b in range(1 - kernel, kernel)
                   if a > 0 or b >= 0]
    basis = np.stack([np.cos(2 * np.pi * (a * n[:, None] + b * n[None, :]) / sim.N)[sim.k > 0]
                      for a, b in frequencies])
    J = basis @ dP.T
    # pinv: for kernel > N/2 the cosines repeat (frequencies are taken mod N)
    F = J.T @ np.linalg.pinv(2 * (basis * P ** 2) @ basis.T, hermitian=True) @ J
    return float(np.linalg.det(F) / np.linalg.det(sim.fisher(θ)))


def optimiser(learning_rate, iterations):
    """Adam along a cosine from learning_rate to 1 % of it. The det F of one
    iteration's n_s simulations scatters by ~10 %, and so do the gradients: at a
    constant rate the last weights wander over a plateau a few per cent wide."""
    import optax
    return optax.adam(optax.cosine_decay_schedule(learning_rate, iterations, alpha=0.01))


def fisher_on_fresh_simulations(fitter, simulator, n, key, batch=500):
    """F (p, p) of the fitted network's summaries on n fresh simulations at θ_fid,
    with ∂x/∂θ by forward-mode differentiation through simulator and network."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from imnn.utils import value_and_jacfwd

    apply, w = fitter.network.apply, fitter.w
    θ = jnp.asarray(fitter.θ_fid, jnp.float32)

    @jax.jit
    def summaries(keys):
        return jax.vmap(lambda k: value_and_jacfwd(lambda t: apply(w, simulator(k, t)))(θ))(keys)

    keys = jax.random.split(key, n)
    parts = [summaries(keys[i:i + batch]) for i in range(0, n, batch)]
    x = np.concatenate([np.asarray(p[0], np.float64) for p in parts])
    dx_dθ = np.concatenate([np.asarray(p[1], np.float64) for p in parts])
    dμ_dθ = dx_dθ.mean(axis=0)
    return dμ_dθ.T @ np.linalg.solve(np.cov(x, rowvar=False), dμ_dθ)


def exact_posterior(sim, field, grid):
    """The field's exact posterior on the prior grid, as ``imnn.lfi.Marginals``.

    ln L(A, B) = −½ Σ_{k≠0} (|d_k|² / (N² P(k)) + ln P(k)) over the whole DFT grid
    (each real degree of freedom once; see GaussianRandomField), uniform prior.
    """
    import numpy as np

    from imnn.lfi import Marginals

    A, B = grid
    k = sim.k[sim.k > 0]
    power = np.abs(np.fft.fft2(np.asarray(field, np.float64)))[sim.k > 0] ** 2 / sim.N ** 2
    weighted = np.exp(np.outer(B, np.log(k))) @ power  # Σ_k |d_k|² k^B / N², per B
    log_l = -0.5 * (weighted[None, :] / A[:, None] + k.size * np.log(A)[:, None]
                    - B[None, :] * np.log(k).sum())
    density = np.exp(log_l - log_l.max())
    dA, dB = A[1] - A[0], B[1] - B[0]
    density /= density.sum() * dA * dB
    return Marginals(grid, (density.sum(1)[None] * dB, density.sum(0)[None] * dA),
                     {(0, 1): density[None]})


def main(argv=None) -> int:
    args = parse_arguments(argv)
    import jax
    if args.devices is not None:  # before JAX starts: the CPU backend then has that many
        jax.config.update("jax_num_cpu_devices", args.devices)
    import matplotlib
    matplotlib.use("Agg")
    import numpy as np

    import imnn
    from imnn import lfi
    from imnn.simulators import GaussianRandomField

    sim = GaussianRandomField(args.N)
    exact_F = sim.fisher(method="pixel" if args.N <= sim.pixel_fisher_max_N else "modes")
    exact = float(np.linalg.det(exact_F))
    common = (args.n_s, args.n_s, sim.n_params, sim.n_params, sim.input_shape, sim.θ_fid,
              quadratic_network(args.filters, args.kernel),
              optimiser(args.learning_rate, args.max_iterations),
              jax.random.PRNGKey(args.seed), sim.simulate)
    if args.aggregated:
        devices = jax.devices()[:args.devices]
        n_per_device = args.n_per_device
        fitter = imnn.AggregatedSimulatorIMNN(*common, jax.devices()[0], devices, n_per_device)
        how = (f"AggregatedSimulatorIMNN over {len(devices)} {devices[0].platform} device(s), "
               f"n_per_device={n_per_device}")
    else:
        fitter = imnn.SimulatorIMNN(*common)
        how = f"SimulatorIMNN on {jax.devices()[0].platform}"
    print(f"{args.N}×{args.N} Gaussian random field, {how}, n_s = n_d = {args.n_s}, "
          f"{args.filters} {args.kernel}×{args.kernel} filters, "
          f"up to {args.max_iterations} iterations")
    ceiling = quadratic_ceiling(sim, args.kernel)
    print(f"exact Fisher information: det F = {exact:.6g}; quadratic statistics of "
          f"{args.kernel}×{args.kernel} filters can hold {100 * ceiling:.1f} % of it")

    rng_fit, rng_eval, rng_target, rng_abc = jax.random.split(jax.random.PRNGKey(args.seed + 1), 4)
    start = time.perf_counter()
    # The training det F is estimated on n_s simulations and scatters by several per cent,
    # so its maximum is partly luck: measure the final weights rather than the "best".
    fitter.fit(10.0, 0.1, rng=rng_fit, patience=args.max_iterations,
               max_iterations=args.max_iterations, print_rate=None if args.quiet else 50,
               best=False)
    seconds = time.perf_counter() - start
    iterations = len(fitter.history["detF"])
    F = fisher_on_fresh_simulations(fitter, sim.simulate, args.n_eval, rng_eval)
    reached = float(np.linalg.det(F))
    print(f"fit: {iterations} iterations in {seconds:.0f} s ({1e3 * seconds / iterations:.0f} ms "
          f"per iteration)")
    print(f"det F on {args.n_eval} fresh simulations: {reached:.6g} = "
          f"{100 * reached / exact:.1f} % of the exact {exact:.6g}")

    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    fitter.plot(expected_detF=exact, figsize=(5, 10), filename=out / "history.png")

    # Inference for a target field: θ̂ by score compression, then the posteriors.
    target = np.asarray(sim.simulate(rng_target, np.asarray(TARGET)))
    estimate = fitter.get_estimate(target)
    box = PRIOR if args.prior is None else (tuple(args.prior[:2]), tuple(args.prior[2:]))
    prior = lfi.Uniform(*box)
    gaussian = lfi.GaussianApproximation(estimate, fitter.invF, prior, gridsize=100)
    abc = lfi.ApproximateBayesianComputation(target, prior, sim.simulate, fitter.compressor(),
                                             gridsize=100, F=fitter.F)
    abc(ϵ=0.5, rng=rng_abc, n_samples=args.abc_batch, min_accepted=1000, max_iterations=100,
        smoothing=1, progress=not args.quiet)
    print(f"target θ = {TARGET}: IMNN estimate θ̂ = {np.array2string(estimate, precision=3)}, "
          f"ABC accepted {int(abc.n_accepted[0])} of {abc.n_simulations} simulations")
    exact_marginals = exact_posterior(sim, target, abc.grid)
    figure, axes = lfi.plot_marginals(exact_marginals, colours=["black"],
                                      target_labels=["exact likelihood"], labels=["A", "B"])
    gaussian.marginal_plot(axes=axes, colours=["C1"], target_labels=["Gaussian approximation"])
    abc.marginal_plot(axes=axes, colours=["C2"], target_labels=["ABC"], known=np.asarray(TARGET))
    figure.savefig(out / "posterior.png", bbox_inches="tight")

    summary = {"N": args.N, "class": type(fitter).__name__, "platform": jax.devices()[0].platform,
               "n_devices": len(getattr(fitter, "devices", [None])), "n_s": args.n_s,
               "n_d": args.n_s, "filters": args.filters, "kernel": args.kernel,
               "learning_rate": args.learning_rate,
               "iterations": iterations, "seconds": seconds, "n_eval": args.n_eval,
               "detF": reached, "exact_detF": exact, "fraction": reached / exact,
               "ceiling": ceiling,
               "F": F.tolist(), "exact_F": exact_F.tolist(), "target": list(TARGET),
               "estimate": estimate.tolist(), "prior": [list(b) for b in box],
               "abc_accepted": int(abc.n_accepted[0]),
               "abc_simulations": abc.n_simulations}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {out / 'history.png'}, {out / 'posterior.png'}, {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
