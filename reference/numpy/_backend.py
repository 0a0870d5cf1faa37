"""The reference backends: the Backend contract in float64, without JAX numerics.

``ReferenceBackend`` is abstract: it implements every method once and is
completed by naming the ``kernels`` (the hot loops) a concrete backend runs.
``NumpyBackend`` is final; ``imnn.reference.numba.NumbaBackend`` supplies
compiled kernels to the same structure.
"""
from __future__ import annotations

import abc
from typing import final

from imnn import nn
from imnn._models import model_kind
from imnn.contracts import FisherStatistics, LossParts, Network, Summaries

from . import _statistics, _streams
from ._kernels import NUMPY_KERNELS, Kernels
from ._network import ReferenceModel


class ReferenceBackend(abc.ABC):
    """Backend contract (imnn.contracts.Backend), float64, for imnn.nn models only.

    Concrete backends provide ``name`` and ``kernels``.
    """

    @property
    @abc.abstractmethod
    def name(self) -> str: ...

    @property
    @abc.abstractmethod
    def kernels(self) -> Kernels: ...

    # --- (a), (b): statistics and loss ----------------------------------------------

    def fisher_statistics(self, x, dx_dθ) -> FisherStatistics:
        """x (n_s, s), dx_dθ (n_d, s, p) -> FisherStatistics
        (docs/design/behaviour.md#fisher-statistics)."""
        return _statistics.fisher_statistics(x, dx_dθ)

    def loss(self, x, dx_dθ, λ: float, α: float) -> LossParts:
        """Λ = −ln|F| + r(Λ2) Λ2 and its parts; NaN when F is not positive definite."""
        return _statistics.loss(x, dx_dθ, λ, α)

    def loss_and_cotangents(self, x, dx_dθ, λ: float, α: float) -> tuple[LossParts, Summaries]:
        """The loss and Summaries(dΛ/dx (n_s, s), dΛ/d(∂x/∂θ) (n_d, s, p))."""
        return _statistics.loss_and_cotangents(x, dx_dθ, λ, α)

    # --- (c), (d): batches ------------------------------------------------------------

    def network(self, model, input_shape: tuple) -> Network:
        """An imnn.nn model (Serial or single layer) -> Network with float64 init/apply.

        Args:
            model: an imnn.nn model (``imnn.nn.serial(...)`` or one layer).
            input_shape: the shape of one simulation (no batch axis).

        Returns:
            Network(init, apply, input_shape, output_shape); weights a list of per-layer
            tuples of float64 arrays.

        Raises:
            TypeError: ``model`` is not an imnn.nn model; the message names its kind (the
                other kinds run on backend='jax').
        """
        try:
            kind = model_kind(model)
        except TypeError:
            kind = None
        if kind != "imnn.nn":
            given = (f"a {kind} model ({type(model).__name__}), which runs on backend='jax'"
                     if kind is not None else
                     f"{type(model).__name__}: {model!r}; the other kinds of model ((init, "
                     "apply) pairs, flax and equinox modules, imnn.nn.from_function) run on "
                     "backend='jax'")
            raise TypeError(f"the {self.name} backend runs only imnn.nn models (built with "
                            f"imnn.nn.serial from imnn.nn layers); got {given}")
        input_shape = tuple(int(n) for n in input_shape)
        apply = ReferenceModel(model, input_shape, self.kernels)
        return Network(init=lambda key: nn.init_weights(model, input_shape, key), apply=apply,
                       input_shape=input_shape, output_shape=apply.output_shape)

    def batch_summaries(self, network: Network, w, kind, inputs,
                        with_derivative: bool) -> Summaries:
        """Summaries(x (b, s), dx_dθ (b, s, p) if with_derivative else None) of one batch."""
        model = self._model(network)
        Z = _streams.stacked_inputs(kind, inputs, with_derivative, model.input_shape)
        out, _ = model.forward(w, Z)
        return _streams.summaries_of(out, with_derivative)

    def batch_weight_gradient(self, network: Network, w, kind, inputs, with_derivative: bool,
                              cotangents: Summaries) -> list:
        """Σ_batch ct·∂(x, ∂x/∂θ)/∂w: a list of per-layer tuples like w."""
        model = self._model(network)
        Z = _streams.stacked_inputs(kind, inputs, with_derivative, model.input_shape)
        out, residuals = model.forward(w, Z)
        G = _streams.stacked_cotangents(cotangents, with_derivative)
        if G.shape != out.shape:
            raise ValueError(f"cotangents stack to shape {G.shape}, outputs have {out.shape}")
        return model.backward(w, residuals, G)

    def assemble(self, kind, outputs: dict) -> Summaries:
        """Per-stream outputs -> Summaries (n_s, …) (see imnn.contracts kinds)."""
        return _streams.assemble(kind, outputs)

    def assemble_transpose(self, kind, cotangents: Summaries, sizes: dict) -> dict:
        """Cotangents on Summaries -> cotangents on each stream's outputs."""
        return _streams.assemble_transpose(kind, cotangents, sizes)

    def _model(self, network: Network) -> ReferenceModel:
        model = network.apply
        if not isinstance(model, ReferenceModel):
            raise TypeError(f"the {self.name} backend runs networks built by its own "
                            f"network() method, got apply={model!r}")
        if model.kernels is not self.kernels:
            raise ValueError(f"this network was built by the {model.kernels.name} backend, "
                             f"not the {self.name} backend")
        return model


@final
class NumpyBackend(ReferenceBackend):
    """The float64 reference backend with NumPy kernels."""
    name = "numpy"
    kernels = NUMPY_KERNELS
