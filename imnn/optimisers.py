"""Optimisers: optax GradientTransformations, or the legacy
``(init, update, get_params)`` triple of ``jax.example_libraries.optimizers``.

Both are adapted to one pure interface, :class:`imnn.contracts.Optimiser`:
``init(w) -> state`` and ``update(grads, state, w) -> (new_w, new_state)``,
so the fit loop never asks which kind it was given.

:func:`default_optimiser` and :data:`DEMO_RECIPE` are the measured defaults that
reach the information: Adam along a decaying learning rate, and the settings of
the mean/variance demo (see the guide page "Getting the most information").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from . import nn
from ._types import PyTree, Weights
from .contracts import Optimiser

if TYPE_CHECKING:
    import optax


class LegacyState(NamedTuple):
    """State of a legacy optimiser: its step count and its own state."""
    step: Any
    inner: Any


def as_optimiser(optimiser: Any) -> Optimiser:
    """Adapt a user's optimiser to the pure ``init``/``update`` interface.

    Args:
        optimiser: an ``optax.GradientTransformation`` (anything with callable ``init``
            and ``update``), or the ``(init, update, get_params)`` triple of
            ``jax.example_libraries.optimizers``.

    Returns:
        ``Optimiser(init, update)``: ``init(w) -> state`` and
        ``update(grads, state, w) -> (new_w, new_state)``.

    Raises:
        TypeError: ``optimiser`` is neither.
    """
    if _is_optax(optimiser):
        import optax

        def update(grads: Weights, state: PyTree, w: Weights) -> tuple[Weights, PyTree]:
            updates, state = optimiser.update(grads, state, w)
            return optax.apply_updates(w, updates), state

        return Optimiser(optimiser.init, update)
    if _is_legacy_triple(optimiser):
        legacy_init, legacy_update, get_params = optimiser

        def init(w: Weights) -> LegacyState:
            return LegacyState(0, legacy_init(w))

        def update(grads: Weights, state: LegacyState, w: Weights
                   ) -> tuple[Weights, LegacyState]:
            inner = legacy_update(state.step, grads, state.inner)
            return get_params(inner), LegacyState(state.step + 1, inner)

        return Optimiser(init, update)
    raise TypeError(
        "optimiser must be an optax.GradientTransformation (e.g. optax.adam(1e-3)) or the "
        "(init, update, get_params) triple of jax.example_libraries.optimizers, got "
        f"{type(optimiser).__name__}")


def _is_optax(obj: Any) -> bool:
    return callable(getattr(obj, "init", None)) and callable(getattr(obj, "update", None))


def _is_legacy_triple(obj: Any) -> bool:
    return isinstance(obj, tuple) and len(obj) == 3 and all(callable(f) for f in obj)


# --- measured defaults --------------------------------------------------------------

def default_optimiser(max_iterations: int, learning_rate: float = 1e-2,
                      final_learning_rate: float = 1e-4) -> optax.GradientTransformation:
    """Adam whose learning rate falls along a cosine from ``learning_rate`` at the
    first iteration to ``final_learning_rate`` at iteration ``max_iterations``
    (and stays there after it).

    Why: det F estimated on one iteration's n_s simulations scatters by several
    per cent, and so does its gradient. At a constant rate the weights keep
    wandering over a plateau a few per cent below the information the network
    can hold (Adam at 10⁻³ keeps 89–94 % of det F on the mean/variance
    problem); a large rate early and a small one late lets them settle. Fit for
    all ``max_iterations`` (patience ≥ max_iterations): stopping early would
    stop while the rate is still high.

    Args:
        max_iterations: iterations over which the rate decays (the fit's
            ``max_iterations``); a positive integer.
        learning_rate: Adam's rate at the first iteration, positive (default 1e-2).
        final_learning_rate: the rate reached at ``max_iterations``, positive and
            at most ``learning_rate`` (default 1e-4).

    Returns:
        An ``optax.GradientTransformation`` (``optax.adam`` with an
        ``optax.cosine_decay_schedule``), to pass as any IMNN's ``optimiser``.

    Raises:
        ValueError: if an argument is out of its range.
    """
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) \
            or max_iterations < 1:
        raise ValueError(f"max_iterations must be a positive integer, got {max_iterations!r}")
    for name, value in (("learning_rate", learning_rate),
                        ("final_learning_rate", final_learning_rate)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    if final_learning_rate > learning_rate:
        raise ValueError(f"final_learning_rate ({final_learning_rate}) must be at most "
                         f"learning_rate ({learning_rate})")
    import optax
    return optax.adam(optax.cosine_decay_schedule(
        float(learning_rate), max_iterations, alpha=final_learning_rate / learning_rate))


@dataclass(frozen=True)
class FitRecipe:
    """The settings of a SimulatorIMNN fit: simulations, network, stopping,
    regulariser and learning rate.

    Attributes:
        n_s: simulations per iteration for the covariance.
        n_d: of those, simulations whose derivatives ∂x/∂θ are taken (the
            forward-mode derivatives cost most of an iteration).
        width: units of each of the network's two hidden ``Dense`` layers.
        activation: name of the ``imnn.nn`` activation after each hidden layer
            (``"Softplus"``, ``"Elu"``, ``"Tanh"``, ...).
        max_iterations: iterations of the fit, and of the learning-rate decay.
        patience: iterations without a new best det F before stopping early;
            at least ``max_iterations`` so that the decay runs to its end.
        min_iterations: iterations before patience starts counting.
        λ: strength of the covariance regulariser (``fit``'s ``λ``).
        ε: closeness of the covariance to the identity at which the
            regulariser weakens (``fit``'s ``ε``).
        learning_rate: Adam's first learning rate.
        final_learning_rate: Adam's learning rate at ``max_iterations``.
        best: whether ``fit`` keeps the weights of the iteration with the largest
            det F (``fit``'s ``best``) rather than the last ones. That det F is
            measured on one iteration's n_s simulations and scatters by a few
            per cent, so its maximum is partly luck; once the learning rate has
            decayed the last weights are the better estimate.
    """
    n_s: int
    n_d: int
    width: int
    activation: str
    max_iterations: int
    patience: int
    min_iterations: int
    λ: float
    ε: float
    learning_rate: float
    final_learning_rate: float
    best: bool

    def __post_init__(self) -> None:
        for name in ("n_s", "n_d", "width", "max_iterations", "patience", "min_iterations"):
            value = getattr(self, name)
            least = 0 if name == "min_iterations" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        if self.n_d > self.n_s:
            raise ValueError(f"n_d ({self.n_d}) must be at most n_s ({self.n_s})")
        for name in ("λ", "ε", "learning_rate", "final_learning_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not isinstance(self.best, bool):
            raise ValueError(f"best must be a bool, got {self.best!r}")
        if not isinstance(getattr(nn, str(self.activation), None), nn.Activation) and \
                self.activation not in ("Elu", "LeakyRelu"):
            raise ValueError("activation must name an imnn.nn activation (Softplus, Elu, Tanh, "
                             f"Relu, Sigmoid, LeakyRelu), got {self.activation!r}")

    def optimiser(self) -> optax.GradientTransformation:
        """:func:`default_optimiser` decaying over this recipe's ``max_iterations``."""
        return default_optimiser(self.max_iterations, self.learning_rate,
                                 self.final_learning_rate)

    def model(self, n_summaries: int) -> nn.Serial:
        """The network: ``Dense(width)``, activation, ``Dense(width)``,
        activation, ``Dense(n_summaries)`` (an ``imnn.nn`` model, any backend).

        Args:
            n_summaries: number of summaries the network outputs.

        Returns:
            ``imnn.nn.Serial``.
        """
        activation = getattr(nn, self.activation)
        if not isinstance(activation, nn.Activation):  # Elu, LeakyRelu: factories
            activation = activation()
        return nn.serial(nn.Dense(self.width), activation, nn.Dense(self.width), activation,
                         nn.Dense(n_summaries))

    def optimiser_table(self) -> dict:
        """The optimiser as the command line's ``[optimiser]`` TOML table:
        ``{"name": "adam", "learning_rate": {"schedule": "cosine_decay", ...}}``."""
        return {"name": "adam", "learning_rate": {
            "schedule": "cosine_decay", "init_value": self.learning_rate,
            "decay_steps": self.max_iterations,
            "alpha": self.final_learning_rate / self.learning_rate}}

    def fit_arguments(self) -> dict:
        """Keyword arguments of ``fit``: ``λ``, ``ε``, ``patience``,
        ``min_iterations``, ``max_iterations`` and ``best``."""
        return {"λ": self.λ, "ε": self.ε, "patience": self.patience,
                "min_iterations": self.min_iterations, "max_iterations": self.max_iterations,
                "best": self.best}


#: The demo's recipe (``imnn demo``, the README's quick start). On the mean/variance
#: problem (10 draws of N(μ, σ²) at θ = (0, 1), det F = 50) it keeps 97.9–98.5 % of
#: det F on 20 000 fresh simulations for every seed tried (0–8) (the earlier demo, Adam at
#: 10⁻³ with λ = 10, 89–94 %), in about 40 % of the earlier demo's CPU time.
#: ``python bench/bench_information.py`` measures each of its choices.
DEMO_RECIPE = FitRecipe(n_s=2000, n_d=500, width=64, activation="Softplus",
                        max_iterations=2000, patience=2000, min_iterations=100, λ=1.2, ε=0.1,
                        learning_rate=1e-2, final_learning_rate=1e-4, best=False)
