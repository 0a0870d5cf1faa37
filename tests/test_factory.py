"""The factory (docs/design/behaviour.md#factory): ``IMNN(**kwargs)`` picks the class the
arguments describe, and says what is missing or superfluous when they describe none."""
from itertools import cycle

import jax
import numpy as np
import optax
import pytest

import imnn

from conftest import INPUT_SHAPE, exact_data, mlp, numerical_data, simulator, δθ, θ_FID

N_S, N_D = 24, 12


def common(**change):
    arguments = dict(n_s=N_S, n_d=N_D, n_params=2, n_summaries=2, input_shape=INPUT_SHAPE,
                     θ_fid=θ_FID, model=mlp(4, 1), optimiser=optax.adam(1e-3),
                     key_or_state=jax.random.PRNGKey(0))
    arguments.update(change)
    return arguments


def aggregation():
    devices = jax.devices()[:2]
    return dict(host=devices[0], devices=devices, n_per_device=3)


def iterators(n=2):
    """Lists of n iterators (construction reads none of them)."""
    return [cycle([np.zeros((3,) + INPUT_SHAPE)]) for _ in range(n)]


def exact():
    fiducial, derivative = exact_data(jax.random.PRNGKey(1), N_S, N_D)
    return dict(fiducial=fiducial, derivative=derivative)


def numerical():
    fiducial, derivative = numerical_data(jax.random.PRNGKey(1), N_S, N_D)
    return dict(fiducial=fiducial, derivative=derivative, δθ=δθ)


VALID = [
    (lambda: dict(simulator=simulator), imnn.SimulatorIMNN),
    (lambda: dict(simulator=simulator, **aggregation()), imnn.AggregatedSimulatorIMNN),
    (exact, imnn.GradientIMNN),
    (lambda: dict(**exact(), validation_fiducial=exact()["fiducial"],
                  validation_derivative=exact()["derivative"]), imnn.GradientIMNN),
    (lambda: dict(**exact(), **aggregation()), imnn.AggregatedGradientIMNN),
    (lambda: dict(**exact(), **aggregation(), prefetch=None, cache=False),
     imnn.AggregatedGradientIMNN),
    (numerical, imnn.NumericalGradientIMNN),
    (lambda: dict(**numerical(), **aggregation()), imnn.AggregatedNumericalGradientIMNN),
    (lambda: dict(main=iterators(), remaining=iterators(), **aggregation()),
     imnn.DatasetGradientIMNN),
    (lambda: dict(main=iterators(), remaining=iterators(), validation_main=iterators(),
                  validation_remaining=iterators(), **aggregation()), imnn.DatasetGradientIMNN),
    (lambda: dict(fiducial=iterators(), derivative=iterators(), δθ=δθ, **aggregation()),
     imnn.DatasetNumericalGradientIMNN),
    (lambda: dict(fiducial=iterators(), derivative=iterators(), δθ=δθ,
                  validation_fiducial=iterators(), validation_derivative=iterators(),
                  **aggregation()), imnn.DatasetNumericalGradientIMNN),
]


@pytest.mark.parametrize("data, cls", VALID)
def test_factory_picks_the_class(data, cls):
    model = imnn.IMNN(**common(), **data())
    assert type(model) is cls
    assert (model.n_s, model.n_d, model.input_shape) == (N_S, N_D, INPUT_SHAPE)


def test_factory_passes_the_backend_on():
    model = imnn.IMNN(**common(), **exact(), backend="numpy")
    assert type(model) is imnn.GradientIMNN and model.backend == "numpy"


def test_factory_model_fits_like_the_class():
    """The factory builds the very class, with the arguments given: same fit."""
    direct = imnn.GradientIMNN(*common().values(), *exact().values())
    built = imnn.IMNN(**common(), **exact())
    for model in (direct, built):
        model.fit(10.0, 0.1, max_iterations=5)
    np.testing.assert_array_equal(built.history["detF"], direct.history["detF"])


INVALID = [
    (lambda: {}, r"IMNN needs data: a simulator, fiducial and derivative"),
    (lambda: dict(simulator=simulator, **exact()),
     r"contradictory data: simulator and fiducial, derivative select different IMNN classes"),
    (lambda: dict(main=iterators(), remaining=iterators(), **exact()),
     r"contradictory data: fiducial, derivative and main, remaining"),
    (lambda: dict(**exact(), host=jax.devices()[0]),
     r"host given without devices, n_per_device: host, devices and n_per_device go together"),
    (lambda: dict(simulator=simulator, devices=jax.devices()[:2], n_per_device=3),
     r"devices, n_per_device given without host"),
    (lambda: dict(fiducial=exact()["fiducial"]),
     r"fiducial and derivative go together: derivative is missing"),
    (lambda: dict(fiducial=iterators(), derivative=exact()["derivative"], δθ=δθ,
                  **aggregation()),
     r"fiducial is a list of iterators but derivative is not"),
    (lambda: dict(fiducial=iterators(), derivative=iterators(), **aggregation()),
     r"select DatasetNumericalGradientIMNN, which needs δθ; for exact derivatives read from "
     r"iterators pass main and remaining"),
    (lambda: dict(fiducial=iterators(), derivative=iterators(), δθ=δθ),
     r"DatasetNumericalGradientIMNN needs host, devices and n_per_device"),
    (lambda: dict(main=iterators(), remaining=iterators()),
     r"DatasetGradientIMNN needs host, devices and n_per_device"),
    (lambda: dict(main=exact()["fiducial"], remaining=iterators(), **aggregation()),
     r"main must be a list of iterators \(one per device\) for DatasetGradientIMNN"),
    (lambda: dict(simulator=simulator, δθ=δθ),
     r"δθ is superfluous for SimulatorIMNN, which the other arguments select; δθ is only for "
     r"numerical derivatives"),
    (lambda: dict(main=iterators(), remaining=iterators(), δθ=δθ, **aggregation()),
     r"δθ is superfluous for DatasetGradientIMNN"),
    (lambda: dict(**exact(), prefetch=None),
     r"prefetch is superfluous for GradientIMNN.*prefetch and cache belong to the Aggregated "
     r"array classes"),
    (lambda: dict(**exact(), validation_main=iterators()),
     r"validation_main is superfluous for GradientIMNN.*go with main and remaining"),
    (lambda: dict(simulator=simulator, validation_fiducial=exact()["fiducial"]),
     r"validation_fiducial is superfluous for SimulatorIMNN"),
]


@pytest.mark.parametrize("data, message", INVALID)
def test_factory_says_what_is_missing_or_superfluous(data, message):
    with pytest.raises(TypeError, match=message):
        imnn.IMNN(**common(), **data())


def test_factory_names_missing_and_unknown_arguments():
    arguments = common()
    del arguments["n_s"], arguments["model"]
    with pytest.raises(TypeError, match=r"GradientIMNN \(selected by the data given\) needs "
                                        r"n_s, model too"):
        imnn.IMNN(**arguments, **exact())
    with pytest.raises(TypeError, match=r"unknown argument\(s\) n_sims, learning_rate"):
        imnn.IMNN(**common(), **exact(), n_sims=10, learning_rate=1e-3)
    with pytest.raises(TypeError):
        imnn.IMNN(N_S, N_D)   # keywords only
