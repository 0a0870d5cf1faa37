"""Every constructor and fit argument is checked once, with an error that names
the argument, what was expected and what was given."""
import jax
import numpy as np
import optax
import pytest

import imnn

from conftest import INPUT_SHAPE, exact_data, mlp, numerical_data, simulator, δθ, θ_FID

N = 20


def gradient(**change):
    fid, der = exact_data(jax.random.PRNGKey(1), N, 10)
    args = dict(n_s=N, n_d=10, n_params=2, n_summaries=2, input_shape=INPUT_SHAPE, θ_fid=θ_FID,
                model=mlp(4), optimiser=optax.adam(1e-3), key_or_state=jax.random.PRNGKey(0),
                fiducial=fid, derivative=der)
    args.update(change)
    return imnn.GradientIMNN(**args)


@pytest.mark.parametrize("change, error, message", [
    (dict(n_d=30), ValueError, r"n_d = 30 must not exceed n_s = 20"),
    (dict(n_s=0), ValueError, r"n_s must be a positive integer, got 0"),
    (dict(n_s=20.0), TypeError, r"n_s must be an int, got float"),
    (dict(n_params=True), TypeError, r"n_params must be an int"),
    (dict(n_summaries=3), ValueError, r"output shape \(2,\) does not match n_summaries = 3"),
    (dict(input_shape=10), TypeError, r"input_shape must be a tuple of positive ints"),
    (dict(θ_fid=np.zeros(3)), ValueError, r"θ_fid must have shape \(2,\), got \(3,\)"),
    (dict(θ_fid=np.array([0.0, np.nan])), ValueError, r"θ_fid contains 1 non-finite"),
    (dict(model="mlp"), TypeError, r"model must be an imnn.nn model"),
    (dict(optimiser="adam"), TypeError, r"optimiser must be an optax.GradientTransformation"),
    (dict(key_or_state=42), TypeError, r"key_or_state must be a JAX PRNG key"),
    (dict(fiducial=np.zeros((N, 11))), ValueError, r"fiducial must have shape \(20, 10\), got \(20, 11\)"),
    (dict(derivative=np.zeros((10, 2, 10))), ValueError,
     r"derivative must have shape \(10, 10, 2\), got \(10, 2, 10\)"),
    (dict(validation_fiducial=np.zeros((N, 10))), ValueError, r"validation_derivative must be given"),
    (dict(fiducial="data"), TypeError, r"fiducial must be an array"),
    (dict(fiducial=np.full((N, 10), "a")), TypeError, r"fiducial must hold real numbers"),
])
def test_gradient_imnn_arguments(change, error, message):
    with pytest.raises(error, match=message):
        gradient(**change)


def test_non_finite_data_is_rejected():
    fid, der = exact_data(jax.random.PRNGKey(1), N, 10)
    fid[3, 4] = np.inf
    with pytest.raises(ValueError, match=r"fiducial contains 1 non-finite value"):
        gradient(fiducial=fid)


def test_numerical_derivative_layout_is_checked():
    fid, der = numerical_data(jax.random.PRNGKey(1), N, 10)
    base = (N, 10, 2, 2, INPUT_SHAPE, θ_FID, mlp(4), optax.adam(1e-3), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"derivative must have shape \(10, 2, 2, 10\), got \(10, 2, 10, 2\)"):
        imnn.NumericalGradientIMNN(*base, fid, np.moveaxis(der, 2, 3), δθ)
    with pytest.raises(TypeError, match=r"δθ must be an array of shape \(2,\), got float"):
        imnn.NumericalGradientIMNN(*base, fid, der, 0.1)
    with pytest.raises(ValueError, match=r"δθ must have shape \(2,\), got \(3,\)"):
        imnn.NumericalGradientIMNN(*base, fid, der, np.ones(3))
    with pytest.raises(ValueError, match=r"δθ must be non-zero"):
        imnn.NumericalGradientIMNN(*base, fid, der, np.array([0.1, 0.0]))


def test_simulator_is_checked():
    base = (N, 10, 2, 2, INPUT_SHAPE, θ_FID, mlp(4), optax.adam(1e-3), jax.random.PRNGKey(0))
    with pytest.raises(TypeError, match="simulator must be a function"):
        imnn.SimulatorIMNN(*base, "simulator")
    with pytest.raises(ValueError, match=r"simulations of shape \(5,\), but input_shape is \(10,\)"):
        imnn.SimulatorIMNN(*base, lambda k, θ: jax.random.normal(k, (5,)))


def test_backend_name_is_checked():
    with pytest.raises(ValueError, match=r"backend must be one of \('jax', 'numpy', 'numba'\), got 'torch'"):
        imnn.SimulatorIMNN(N, 10, 2, 2, INPUT_SHAPE, θ_FID, mlp(4), optax.adam(1e-3),
                           jax.random.PRNGKey(0), simulator, backend="torch")


def test_reference_backend_refuses_user_models():
    from jax.example_libraries import stax
    with pytest.raises(TypeError, match="backend='jax'"):
        gradient(model=stax.serial(stax.Dense(2)), backend="numpy")


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(λ=0.5, ε=0.01), ValueError, r"λ=0.5 and ε=0.01"),
    (dict(λ=10.0, ε=-0.1), ValueError, r"ε must be a positive finite number"),
    (dict(patience=0), ValueError, r"patience must be a positive integer"),
    (dict(min_iterations=-1), ValueError, r"min_iterations must be a non-negative integer"),
    (dict(max_iterations=2.5), TypeError, r"max_iterations must be an int"),
    (dict(print_rate=0), ValueError, r"print_rate must be a positive integer"),
    (dict(best="yes"), TypeError, r"best must be a bool"),
])
def test_fit_arguments(kwargs, error, message):
    model = gradient()
    arguments = dict(λ=10.0, ε=0.1)
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        model.fit(**arguments)


def test_estimate_needs_statistics_and_right_shapes():
    model = gradient()
    with pytest.raises(RuntimeError, match="call fit or set_F_statistics first"):
        model.get_estimate(np.zeros(10))
    model.set_F_statistics()
    with pytest.raises(ValueError, match=r"d must have shape \(10,\) or \(n,\)\+\(10,\)"):
        model.get_estimate(np.zeros((3, 9)))


# --- inputs that cannot work, refused before any work ------------------------------

@pytest.mark.parametrize("change, message", [
    (dict(n_s=2, n_d=2), r"n_s = 2 must be greater than n_params = 2"),
    (dict(n_s=3, n_d=3, n_summaries=3), r"n_s = 3 must be greater than n_summaries = 3"),
    (dict(n_summaries=1), r"n_summaries = 1 must be at least n_params = 2: .*det F = 0"),
])
def test_sizes_whose_fisher_is_singular_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        gradient(**change)


@pytest.mark.parametrize("name", ["fiducial", "derivative", "validation_fiducial",
                                  "validation_derivative"])
def test_integer_simulations_are_refused(name):
    fid, der = exact_data(jax.random.PRNGKey(1), N, 10)
    arrays = dict(fiducial=fid, derivative=der, validation_fiducial=fid,
                  validation_derivative=der)
    arrays[name] = np.round(arrays[name]).astype(np.int64)
    with pytest.raises(TypeError, match=rf"^{name} must hold floating-point simulations, got "
                       rf"dtype int64 .*: pass {name}.astype\(np.float32\)"):
        gradient(**arrays)


@pytest.mark.parametrize("scale", [1e30, 1e39])
def test_simulations_beyond_the_working_precision_are_refused(scale):
    fid, der = numerical_data(jax.random.PRNGKey(1), N, 10)
    base = (N, 10, 2, 2, INPUT_SHAPE, θ_FID, mlp(4), optax.adam(1e-3), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"fiducial holds values up to .*e\+(30|39) in magnitude, "
                       r"beyond 1.84e\+19 = √\(largest float32\)"):
        imnn.NumericalGradientIMNN(*base, fid * scale, der, δθ)


def test_integer_simulator_output_is_refused():
    base = (N, 10, 2, 2, INPUT_SHAPE, θ_FID, mlp(4), optax.adam(1e-3), jax.random.PRNGKey(0))
    with pytest.raises(TypeError, match=r"simulator must return floating-point simulations, "
                       r"but simulator\(key, θ\) gives dtype int32"):
        imnn.SimulatorIMNN(*base, lambda k, θ: jax.random.randint(k, INPUT_SHAPE, 0, 10))


@pytest.mark.parametrize("scale, message", [
    (1e30, r"the simulator's output holds values up to .*e\+30 in magnitude, beyond 1.84e\+19"),
    (1e39, r"the simulator returned non-finite values for simulation\(s\) \[0, "),
])
def test_simulator_beyond_the_working_precision_stops_at_the_first_iteration(scale, message):
    base = (N, 10, 2, 2, INPUT_SHAPE, θ_FID, mlp(4), optax.adam(1e-3), jax.random.PRNGKey(0))
    model = imnn.SimulatorIMNN(*base, lambda k, θ: simulator(k, θ) * scale)
    with pytest.raises(ValueError, match=r"first iteration of the fit is not finite: .*" + message):
        model.fit(10.0, 0.1, rng=jax.random.PRNGKey(1), max_iterations=3)
    assert len(model.history["detF"]) == 0


def test_zero_derivative_stops_at_the_first_iteration():
    fid, der = exact_data(jax.random.PRNGKey(1), N, 10)
    model = gradient(derivative=der * 0)
    with pytest.raises(ValueError, match=r"derivative of the mean summaries dμ/dθ is zero"):
        model.fit(10.0, 0.1, max_iterations=3)


def nan_simulator(key, θ):
    """The test simulator, NaN for about 1 % of keys."""
    bad = jax.random.uniform(jax.random.fold_in(key, 1)) < 0.01
    return jax.numpy.where(bad, jax.numpy.nan, simulator(key, θ))


def nan_iterations(rng, n_s, iterations=8):
    """The iterations among the first ``iterations`` whose simulations (from ``rng``)
    include a NaN one."""
    from imnn._sources import simulation_keys

    @jax.jit
    def nan_at(rng):
        return jax.vmap(lambda i: jax.vmap(lambda k: jax.numpy.isnan(nan_simulator(
            k, θ_FID)).any())(simulation_keys(rng, i, n_s)).any())(jax.numpy.arange(iterations))

    return list(np.flatnonzero(nan_at(rng)))


def test_nan_simulations_later_in_the_fit_follow_on_nan():
    n_s = 20
    rng = np.asarray(jax.random.PRNGKey(1))   # iteration 0 is clean; NaN comes within 8
    bad = nan_iterations(rng, n_s)
    assert bad and bad[0] > 0
    model = imnn.SimulatorIMNN(n_s, 10, 2, 2, INPUT_SHAPE, θ_FID, mlp(4), optax.adam(1e-2),
                               jax.random.PRNGKey(0), nan_simulator)
    with pytest.warns(RuntimeWarning, match=rf"fit stopped at iteration {bad[0]}, .*the simulator "
                      rf"returned non-finite values for simulation\(s\) \[\d+.*\] of iteration "
                      rf"{bad[0]}"):
        model.fit(10.0, 0.1, rng=rng, min_iterations=0, max_iterations=8)     # on_nan="stop"
    assert len(model.history["detF"]) == bad[0] + 1
    assert not np.isfinite(model.history["detF"][-1])
    assert all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(model.final_w))
    with pytest.raises(FloatingPointError, match=rf"stopped at iteration {bad[0]}"):
        model.fit(10.0, 0.1, rng=rng, min_iterations=0, max_iterations=8, on_nan="raise")
    with pytest.warns(RuntimeWarning, match=rf"not finite at {len(bad)} iteration\(s\) \(first: "
                      rf"iteration {bad[0]}\); their updates were skipped"):
        model.fit(10.0, 0.1, rng=rng, min_iterations=0, max_iterations=8, on_nan="warn")
    assert len(model.history["detF"]) == 2 * (bad[0] + 1) + 8
    assert all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(model.final_w))
    with pytest.raises(ValueError, match=r"on_nan must be one of \('stop', 'raise', 'warn'\)"):
        model.fit(10.0, 0.1, rng=rng, on_nan="ignore")


@pytest.mark.parametrize("loop, runs_of", [("device", None), ("device", "bad"), ("host", None)])
def test_a_non_finite_iteration_is_undone_exactly(loop, runs_of):
    """The update of the iteration that stops a fit is undone: the weights, the optimiser
    state and the best weights equal, bit for bit, those of a fit of only the iterations
    before it, whether that iteration ends a run of the compiled loop or starts one
    (runs of ``bad`` iterations), or the loop runs from the host."""
    from imnn.backends.jax.execution import make_runner
    n_s, rng = 20, np.asarray(jax.random.PRNGKey(5))
    bad = nan_iterations(rng, n_s)[0]     # 5: runs of 8 stop in the middle, runs of 5 at a start
    assert bad > 1

    def build():
        model = imnn.SimulatorIMNN(n_s, 10, 2, 2, INPUT_SHAPE, θ_FID, mlp(4),
                                   optax.adam(1e-2), jax.random.PRNGKey(0), nan_simulator)
        model._runner = make_runner(model.problem, loop=loop)
        return model

    print_rate = bad if runs_of == "bad" else None
    stopped, clean = build(), build()
    with pytest.warns(RuntimeWarning, match=rf"fit stopped at iteration {bad}"):
        stopped.fit(10.0, 0.1, rng=rng, min_iterations=0, max_iterations=8,
                    print_rate=print_rate)
    clean.fit(10.0, 0.1, rng=rng, min_iterations=0, max_iterations=bad)
    assert len(stopped.history["detF"]) == bad + 1 and len(clean.history["detF"]) == bad
    np.testing.assert_array_equal(stopped.history["detF"][:bad], clean.history["detF"])
    for a, b in zip(jax.tree.leaves((stopped.final_w, stopped.state, stopped.best_w)),
                    jax.tree.leaves((clean.final_w, clean.state, clean.best_w))):
        np.testing.assert_array_equal(a, b)
    # The non-finite iteration counted as one without improvement.
    assert stopped.patience_counter == clean.patience_counter + 1
    assert stopped._max_logdetF == clean._max_logdetF


def test_a_singular_validation_fisher_matrix_is_reported_once_per_fit():
    """Validation derivatives that are all zero make the validation F singular: each
    iteration's val_detF is NaN, never an improvement, and the fit says how many there
    were in this call (not counting an earlier call's)."""
    fid, der = exact_data(jax.random.PRNGKey(2), N, 10)
    model = gradient(validation_fiducial=fid, validation_derivative=der * 0)
    with pytest.warns(RuntimeWarning, match=r"validation det F was not finite at 4 "
                      r"iteration\(s\), first at iteration 0"):
        model.fit(10.0, 0.1, min_iterations=0, max_iterations=4, patience=10)
    with pytest.warns(RuntimeWarning, match=r"validation det F was not finite at 3 "
                      r"iteration\(s\), first at iteration 4"):
        model.fit(10.0, 0.1, min_iterations=0, max_iterations=3, patience=10)
    assert np.isnan(model.history["val_detF"]).all() and len(model.history["val_detF"]) == 7
    assert np.isfinite(model.history["detF"]).all()
    assert model.patience_counter == 2    # no improvement: counted at iterations 1 and 2


def test_two_threads_cannot_fit_one_object_at_once():
    import threading
    model = gradient()
    inside, release, errors = threading.Event(), threading.Event(), []

    def callback(_):
        inside.set()
        release.wait(timeout=60)

    def first():
        try:
            model.fit(10.0, 0.1, max_iterations=2, print_rate=1, callback=callback)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(timeout=120)
    try:
        with pytest.raises(RuntimeError, match=r"GradientIMNN object at 0x[0-9a-f]+ is already "
                           r"fitting in another thread"):
            model.fit(10.0, 0.1, max_iterations=2)
    finally:
        release.set()
        thread.join(timeout=120)
    assert not errors and len(model.history["detF"]) == 2
    model.fit(10.0, 0.1, max_iterations=1)    # the lock is released when a fit returns
    assert len(model.history["detF"]) == 3
