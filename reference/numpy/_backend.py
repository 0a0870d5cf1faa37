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
        """x (n_s, s), dx_dθ (n_d, s, p) -> FisherStatistics (spec §1)."""
        return _statistics.fisher_statistics(x, dx_dθ)

    def loss(self, x, dx_dθ, λ: float, α: float) -> LossParts:
        """Λ = −ln|F| + r(Λ2) Λ2 and its parts; NaN when F is not positive definite."""
        return _statistics.loss(x, dx_dθ, λ, α)

    def loss_and_cotangents(self, x, dx_dθ, λ: float, α: float) -> tuple[LossParts, Summaries]:
        """The loss and Summaries(dΛ/dx (n_s, s), dΛ/d(∂x/∂θ) (n_d, s, p))."""
        return _statistics.loss_and_cotangents(x, dx_dθ, λ, α)

    # --- (c), (d): batches ------------------------------------------------------------

    def network(self, model, input_shape: tuple) -> Network:
        """An imnn.nn model (Serial or single layer) -> Network with float64 init/apply."""
        if not nn.is_model(model):
            raise TypeError(
                f"the reference backends only run imnn.nn models (built with imnn.nn.serial "
                f"from imnn.nn layers), got {type(model).__name__}: {model!r}; "
                f"use backend='jax' for other models such as stax (init, apply) pairs")
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
