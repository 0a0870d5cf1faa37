"""Property-based: every generated bad input to a constructor, to ``fit`` or to
``get_estimate``/``summarise`` is a ValueError or TypeError naming the argument,
raised before any work; good inputs to ``get_estimate`` never give NaN."""
import functools

import jax
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import imnn

from conftest import INPUT_SHAPE, mlp, θ_FID

N_S, N_D = 20, 10
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


@functools.cache
def data():
    """Fiducial (n_s, 10) draws of N(0, 1) and their exact ∂d/∂θ (n_d, 10, 2) = (1, z/2)."""
    z = np.random.default_rng(1).normal(size=(N_S,) + INPUT_SHAPE)
    return z, np.stack([np.ones_like(z[:N_D]), z[:N_D] / 2], axis=-1)


def arguments(**change):
    fid, der = data()
    args = dict(n_s=N_S, n_d=N_D, n_params=2, n_summaries=2, input_shape=INPUT_SHAPE,
                θ_fid=θ_FID, model=mlp(4), optimiser=optax.adam(1e-3),
                key_or_state=jax.random.PRNGKey(0), fiducial=fid, derivative=der)
    args.update(change)
    return args


@functools.cache
def fitted():
    """One fitted object for the module (two iterations are enough to have statistics)."""
    return imnn.GradientIMNN(**arguments()).fit(10.0, 0.1, max_iterations=2)


def refused(name, call):
    """``call()`` raises ValueError/TypeError whose message names ``name``."""
    with pytest.raises((ValueError, TypeError)) as caught:
        call()
    assert name in str(caught.value), (name, str(caught.value))


# --- strategies of bad values ------------------------------------------------------------

not_an_int = st.one_of(st.floats(allow_nan=True), st.text(max_size=3), st.none(), st.booleans(),
                       st.lists(st.integers(), max_size=2))
bad_count = st.one_of(not_an_int, st.integers(-5, 0))
non_finite = st.sampled_from([np.nan, np.inf, -np.inf])


def broken(shape):
    """Arrays that are not a finite float array of ``shape``: another shape, a
    non-float dtype, a NaN/inf, values beyond float32's range, or no array."""
    wrong_shape = hnp.array_shapes(min_dims=0, max_dims=4, max_side=4).filter(
        lambda s: s != shape).flatmap(lambda s: hnp.arrays(np.float64, s))
    wrong_dtype = st.sampled_from([np.int64, np.int32, np.bool_, np.complex128, "U3"]).flatmap(
        lambda dtype: hnp.arrays(dtype, shape))

    def with_value(value):
        return hnp.arrays(np.float64, shape, elements=st.floats(-1, 1)).flatmap(
            lambda a: st.integers(0, a.size - 1).map(
                lambda i: np.where(np.arange(a.size).reshape(a.shape) == i, value, a)))

    return st.one_of(wrong_shape, wrong_dtype, non_finite.flatmap(with_value),
                     st.floats(1e20, 1e300).flatmap(with_value),
                     st.sampled_from(["data", None, {"a": 1}, [[1.0], [1.0, 2.0]]]))


# --- constructors ------------------------------------------------------------------------

@SETTINGS
@given(name=st.sampled_from(["n_s", "n_d", "n_params", "n_summaries"]), value=bad_count)
def test_bad_sizes(name, value):
    refused(name, lambda: imnn.GradientIMNN(**arguments(**{name: value})))


@SETTINGS
@given(value=st.one_of(
    st.lists(st.one_of(st.integers(-3, 0), st.floats(0.5, 2.5), st.booleans(), st.text(max_size=1)),
             min_size=1, max_size=3).map(tuple),
    st.integers(), st.text(max_size=3), st.none()))
def test_bad_input_shape(value):
    refused("input_shape", lambda: imnn.GradientIMNN(**arguments(input_shape=value)))


def acceptable_θ(v):
    """Integer parameter values are fine (θ_fid = (0, 1) is common), and so are large
    ones that float32 holds; nothing else of broken((2,)) is."""
    return isinstance(v, np.ndarray) and v.shape == (2,) and (
        v.dtype.kind == "i" or (v.dtype.kind == "f" and np.all(np.abs(v) <= 3.4e38)))


@SETTINGS
@given(value=broken((2,)).filter(lambda v: not acceptable_θ(v)))
def test_bad_θ_fid(value):
    refused("θ_fid", lambda: imnn.GradientIMNN(**arguments(θ_fid=value)))


@SETTINGS
@given(name=st.sampled_from(["fiducial", "derivative", "validation_fiducial",
                             "validation_derivative"]), data=st.data())
def test_bad_simulations(name, data):
    fid, der = globals()["data"]()
    shape = (fid if "fiducial" in name else der).shape
    value = data.draw(broken(shape))
    change = {name: value}
    if name.startswith("validation_"):    # its partner is good
        partner = "validation_derivative" if name.endswith("fiducial") else "validation_fiducial"
        change[partner] = der if partner.endswith("derivative") else fid
    if value is None and name.startswith("validation_"):
        name = "validation_"               # validation_X is missing: its partner's name is given
    refused(name, lambda: imnn.GradientIMNN(**arguments(**change)))


@SETTINGS
@given(value=st.one_of(st.integers(), st.text(max_size=3), st.none(),
                       hnp.arrays(np.float32, (2,)), hnp.arrays(np.uint32, (3,))))
def test_bad_key(value):
    refused("key_or_state", lambda: imnn.GradientIMNN(**arguments(key_or_state=value)))


# --- fit arguments -------------------------------------------------------------------------

FIT_ARGUMENTS = {
    "λ": st.one_of(st.floats(max_value=0.0), non_finite, st.text(max_size=2), st.none(),
                   st.floats(0.0, 0.9, exclude_min=True)),
    "ε": st.one_of(st.floats(max_value=0.0), non_finite, st.text(max_size=2), st.none()),
    "patience": bad_count,
    "min_iterations": st.one_of(not_an_int, st.integers(-5, -1)),
    "max_iterations": bad_count,
    "print_rate": st.one_of(not_an_int.filter(lambda v: v is not None), st.integers(-5, 0)),
    "best": st.one_of(st.integers(), st.text(max_size=2), st.none()),
    "on_nan": st.one_of(st.text(max_size=5).filter(lambda v: v not in ("stop", "raise", "warn")),
                        st.integers(), st.none()),
    "rng": st.one_of(st.integers(), st.text(min_size=1, max_size=3),
                     hnp.arrays(np.float64, (2,)), hnp.arrays(np.uint32, (3,))),
    "callback": st.one_of(st.integers(), st.text(max_size=2)),
}


@SETTINGS
@given(name=st.sampled_from(sorted(FIT_ARGUMENTS)), data=st.data())
def test_bad_fit_arguments(name, data):
    model = fitted()
    before = len(model.history["detF"])
    value = data.draw(FIT_ARGUMENTS[name])
    arguments = {"λ": 10.0, "ε": 0.1, name: value}
    refused(name, lambda: model.fit(**arguments))
    assert len(model.history["detF"]) == before     # refused before any work


# --- estimates ------------------------------------------------------------------------------

@SETTINGS
@given(data=st.data(), method=st.sampled_from(["get_estimate", "summarise"]))
def test_bad_simulations_to_estimate(data, method):
    shape = data.draw(st.sampled_from([INPUT_SHAPE, (3,) + INPUT_SHAPE]))
    value = data.draw(broken(shape).filter(
        lambda v: not (isinstance(v, np.ndarray) and v.dtype.kind == "i"
                       and v.shape[-1:] == INPUT_SHAPE and v.ndim <= 2)))
    refused("d", lambda: getattr(fitted(), method)(value))


@SETTINGS
@given(d=hnp.arrays(np.float64, st.sampled_from([INPUT_SHAPE, (4,) + INPUT_SHAPE]),
                    elements=st.floats(-1e6, 1e6)))
def test_good_simulations_give_finite_estimates(d):
    estimate = fitted().get_estimate(d)
    assert estimate.shape == d.shape[:-1] + (2,) and np.isfinite(estimate).all()
