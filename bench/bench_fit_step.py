"""imnn's compiled fit step against a minimal hand-written loop on the same problem.

    .venv/bin/python -m pytest bench/bench_fit_step.py --benchmark-only

The hand-written loop is what a user would write without imnn: the IMNN loss
(docs/design/behaviour.md#loss) in a few lines of jnp, ``jax.jit`` of
``jax.value_and_grad`` plus an optax update, called from a Python loop. It uses
the very network (apply function and initial weights) the IMNN fits, so the difference is the fit
machinery alone: streams, two passes, early stopping, history. Both fit the
same problem for the same number of iterations (no early stopping), rounds
interleaved; ``imnn ms/it``, ``hand-written ms/it`` and their ``ratio`` (each
the fastest round) are printed after the timing table. imnn's rounds include
what ``fit`` does besides iterating: the history, and the Fisher statistics of
the final weights on fresh simulations. Where imnn loops on the device (one
compiled ``lax.while_loop`` per run of iterations: the default, except for a
convolutional network on a CPU), the same fit looping from the host (one
compiled call per iteration, the earlier default) is timed in the same rounds:
``host-loop ms/it`` and ``host-loop ratio``.

Problems: the mean/variance toy (n_s = n_d = 1000, MLP 128-128, Adam 1e-3) as
GradientIMNN (arrays with exact derivatives, no validation) and as
SimulatorIMNN (fresh simulations every iteration); and the 32×32 Gaussian
random field with a small convolutional network (SimulatorIMNN, n_s = n_d = 250).
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import imnn
from imnn.backends.jax.execution import make_runner
from imnn.simulators import GaussianMeanVariance, GaussianRandomField
from imnn.utils import value_and_jacfwd

nn = imnn.nn
λ, ε = 10.0, 0.1
PROBLEMS = {  # name: (simulator, n_s = n_d, iterations per round)
    "gradient": (GaussianMeanVariance(n=10), 1000, 300),
    "simulator": (GaussianMeanVariance(n=10), 1000, 300),
    "field": (GaussianRandomField(32), 250, 30),
}
ROUNDS = 7


def model(problem):
    if problem != "field":
        return nn.serial(nn.Dense(128), nn.LeakyRelu(), nn.Dense(128), nn.LeakyRelu(),
                         nn.Dense(2))
    return nn.serial(nn.Reshape((32, 32, 1)), nn.Conv(8, (4, 4), (2, 2)), nn.Elu(),
                     nn.Conv(16, (4, 4), (2, 2)), nn.Elu(), nn.Conv(16, (4, 4), (2, 2)),
                     nn.Elu(), nn.Flatten, nn.Dense(2))


def build(problem):
    sim, n, _ = PROBLEMS[problem]
    args = (n, n, sim.n_params, 2, sim.input_shape, sim.θ_fid, model(problem),
            optax.adam(1e-3), jax.random.PRNGKey(0))
    if problem != "gradient":
        return imnn.SimulatorIMNN(*args, sim.simulate)
    d, dd = training_data(sim, n)
    return imnn.GradientIMNN(*args, d, dd)


def training_data(sim, n):
    keys = jax.random.split(jax.random.PRNGKey(1), n)
    d, dd = jax.vmap(value_and_jacfwd(sim.simulate, argnums=1), in_axes=(0, None))(
        keys, jnp.asarray(sim.θ_fid))
    return np.asarray(d), np.asarray(dd)


# --- the hand-written loop ----------------------------------------------------------

def handwritten_loss(w, apply, d, dd_dθ):
    """Λ = −ln|F| + r(Λ2) Λ2 for simulations d (n,)+input_shape with ∂d/∂θ (..., p)."""
    def one(d, dd):
        x, linear = jax.linearize(lambda d: apply(w, d), d)
        return x, jax.vmap(linear, in_axes=-1, out_axes=-1)(dd)

    x, dx_dθ = jax.vmap(one)(d, dd_dθ)
    C = jnp.cov(x, rowvar=False)
    invC = jnp.linalg.inv(C)
    dμ_dθ = jnp.mean(dx_dθ, axis=0)
    F = dμ_dθ.T @ invC @ dμ_dθ
    eye = jnp.eye(C.shape[0])
    Λ2 = jnp.linalg.norm(C - eye) + jnp.linalg.norm(invC - eye)
    α = imnn._fitting.get_α(λ, ε)
    r = λ * Λ2 / (Λ2 + jnp.exp(-α * Λ2))
    return -jnp.linalg.slogdet(F)[1] + r * Λ2


def handwritten_fit(problem, fitter, n_iterations):
    """The loop a user would write; returns a function running n_iterations."""
    sim, n, _ = PROBLEMS[problem]
    optimiser = optax.adam(1e-3)
    apply, θ = fitter.network.apply, jnp.asarray(sim.θ_fid, jnp.float32)
    if problem == "gradient":
        d, dd = map(jnp.asarray, training_data(sim, n))

        def data(i):
            return d, dd
    else:
        def data(i):  # fresh simulations and their exact ∂d/∂θ every iteration
            keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(2), i), n)
            return jax.vmap(value_and_jacfwd(sim.simulate, argnums=1), in_axes=(0, None))(
                keys, θ)

    @jax.jit
    def step(w, state, i):
        loss, grads = jax.value_and_grad(handwritten_loss)(w, apply, *data(i))
        updates, state = optimiser.update(grads, state, w)
        return optax.apply_updates(w, updates), state, loss

    def fit():
        w, state = fitter.w, optimiser.init(fitter.w)
        for i in range(n_iterations):
            w, state, loss = step(w, state, i)
        return jax.block_until_ready(loss)

    return fit


@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_fit_step(benchmark, problem):
    """imnn's fit, each round preceded by a round of the hand-written loop (in the
    benchmark's ``setup``), so that both see the same machine load. Where imnn
    loops on the device (one compiled while_loop per run, the default except for
    convolutional networks on a CPU), the setup also times the same fit looping
    from the host (one compiled call per iteration): before and after, side by side."""
    benchmark.group = "imnn fit vs a hand-written jit(value_and_grad) + optax loop"
    fitter, n = build(problem), PROBLEMS[problem][2]
    kwargs = dict(rng=jax.random.PRNGKey(2), min_iterations=10 ** 6, max_iterations=n)
    handwritten = handwritten_fit(problem, fitter, n)
    handwritten()  # warm-up: compile
    fitter.fit(λ, ε, **kwargs)
    host = None
    if fitter._runner.loop != "host":
        host = build(problem)
        host._runner = make_runner(host.problem, loop="host")
        host.fit(λ, ε, **kwargs)
    times, host_times = [], []

    def timed(function, into):
        start = time.perf_counter()
        function()
        into.append(time.perf_counter() - start)

    def setup():
        timed(handwritten, times)
        if host is not None:
            timed(lambda: host.fit(λ, ε, **kwargs), host_times)

    benchmark.pedantic(fitter.fit, args=(λ, ε), kwargs=kwargs, rounds=ROUNDS, iterations=1,
                       setup=setup)
    imnn_ms, hand_ms = 1e3 * benchmark.stats.stats.min / n, 1e3 * min(times) / n
    benchmark.extra_info.update({"iterations": n, "loop": fitter._runner.loop,
                                 "imnn ms/it": round(imnn_ms, 3),
                                 "hand-written ms/it": round(hand_ms, 3),
                                 "ratio": round(imnn_ms / hand_ms, 3)})
    if host is not None:
        host_ms = 1e3 * min(host_times) / n
        benchmark.extra_info.update({"host-loop ms/it": round(host_ms, 3),
                                     "host-loop ratio": round(host_ms / hand_ms, 3)})
