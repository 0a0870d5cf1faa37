"""The seed's summary and gradient methods, the ``SeedStatistics`` mixin of
``BaseIMNN``: ``get_summaries``, ``set_F_statistics``, ``get_gradient`` and
``get_summary``.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Self

import numpy as np
from jax import tree_util

from ._sources import SimulatorSource, as_raw_key, check_array
from .contracts import (
    Array,
    Exact,
    Kind,
    Network,
    PerturbedSummaries,
    Runtime,
    Source,
    Summaries,
    Weights,
)


class SeedStatistics:
    """Mixin of ``BaseIMNN``: the summaries of the data (or of fresh simulations),
    the Fisher statistics, and pass 2 on its own.

    Reads from the object: ``runtime``, ``network``, ``source``, ``kind``,
    ``validate``, the sizes ``n_s, n_d, n_params, n_summaries``, ``input_shape``,
    ``θ_fid``, ``w``, the compiled ``_statistics`` and ``_pass_two`` and the plain
    ``_summaries_of_statistics_data`` (made by ``_attach``) and the method ``_data(rng)``. ``set_F_statistics`` writes
    ``w, F, invF, C, invC, μ, dμ_dθ``.
    """

    # What the object provides (declared here, set by BaseIMNN).
    runtime: Runtime
    network: Network
    source: Source
    kind: Kind
    validate: bool
    n_s: int
    n_d: int
    n_params: int
    n_summaries: int
    input_shape: tuple[int, ...]
    θ_fid: np.ndarray
    w: Weights
    _statistics: dict[bool, Callable]
    _summaries_of_statistics_data: dict[bool, Callable]
    _pass_two: Callable
    _data: Callable[[Array | None], dict]

    def _statistics_data(self, key, validate, caller):
        """(data, key) for the summaries of the training or validation data, or of
        fresh simulations from ``key`` (simulator classes)."""
        if not isinstance(validate, (bool, np.bool_)):
            raise TypeError(f"validate must be a bool, got {type(validate).__name__}")
        if isinstance(self.source, SimulatorSource):
            return {}, as_raw_key(key, "key")
        if validate and not self.validate:
            raise ValueError(f"{caller}(validate=True) needs a validation set, and this "
                             f"{type(self).__name__} has none: pass validate=False (training "
                             "data)")
        return self._data(None), None

    def get_summaries(self, w: Weights | None = None, key: Array | None = None,
                      validate: bool = False) -> Summaries | PerturbedSummaries:
        """All network outputs and their θ-derivatives.

        Args:
            w: weights (default: ``self.w``).
            key: JAX PRNG key; simulator classes summarise ``n_s`` fresh
                simulations made from it (required there, unused otherwise).
            validate: summarise the validation set (True) or the training data
                (False); simulator classes ignore it.

        Returns:
            ``Summaries(x (n_s, s), dx_dθ (n_d, s, p))``; for the numerical
            derivative classes ``PerturbedSummaries(x (n_s, s), x_mp (n_d, 2, p,
            s))``, the outputs of the perturbed simulations in their stored layout
            (``x_mp[:, 0, α]`` below, ``x_mp[:, 1, α]`` above θ_fid in parameter α).

        Raises:
            TypeError: ``validate`` not a bool, or (simulator classes) ``key`` not a JAX
                PRNG key.
            ValueError: ``validate=True`` without a validation set, or no ``key``
                for a simulator class.
        """
        w = self.w if w is None else w
        data, key = self._statistics_data(key, validate, "get_summaries")
        outputs = self._statistics[bool(validate)](w, data, key)
        return self.kind.seed_summaries(outputs, self.runtime.assemble)

    def set_F_statistics(self, w: Weights | None = None, key: Array | None = None,
                         validate: bool = True) -> Self:
        """Fill ``F, invF, C, invC, μ, dμ_dθ`` for score compression.

        Args:
            w: weights; when given they become ``self.w`` (default: ``self.w``).
            key: JAX PRNG key; simulator classes use fresh simulations from it
                (required there, unused otherwise).
            validate: use the validation set when there is one (True), else the
                training data; False: the training data.

        Returns:
            self.

        Raises:
            TypeError: ``validate`` not a bool, or (simulator classes) ``key`` not a JAX
                PRNG key.
        """
        if not isinstance(validate, (bool, np.bool_)):
            raise TypeError(f"validate must be a bool, got {type(validate).__name__}")
        if w is not None:
            self.w = w
        data, key = self._statistics_data(key, bool(validate) and self.validate,
                                          "set_F_statistics")
        stats = self._fisher_statistics[bool(validate) and self.validate](self.w, data, key)
        for name in ("F", "invF", "C", "invC", "μ", "dμ_dθ"):
            setattr(self, name, np.asarray(getattr(stats, name), np.float64))
        return self

    @functools.cached_property
    def _fisher_statistics(self) -> dict[bool, Callable]:
        """{validate: (w, data, key) -> FisherStatistics}: the summaries of the statistics
        data, their assembly and the statistics in one compiled program each (compiled
        as two, the summaries and the rest, a first fit took one more program)."""
        runtime, kind = self.runtime, self.kind

        def build(summaries):
            def fisher(w, data, key):
                s = runtime.assemble(kind, summaries(w, data, key))
                return runtime.fisher_statistics(s.x, s.dx_dθ)
            return runtime.compile(fisher)

        return {validate: build(summaries)
                for validate, summaries in self._summaries_of_statistics_data.items()}

    def get_gradient(self, dΛ_dx: tuple[Array, Array], w: Weights | None = None,
                     key: Array | None = None) -> Weights:
        """Pass 2 on its own: the weight gradient Σ_i dΛ/dx_i · ∂x_i/∂w (and the
        θ-derivative term) over the training data, from the cotangents of every
        simulation's summaries, one vector-Jacobian product per batch.

        ``get_summaries(w, key)``, then the loss's gradient with respect to those
        summaries, then ``get_gradient`` equals the fit's own gradient.

        Args:
            dΛ_dx: ``(dΛ/dx (n_s, s), dΛ/d(∂x/∂θ) (n_d, s, p))``; for the
                numerical derivative classes ``(dΛ/dx (n_s, s), dΛ/dx_mp (n_d,
                2, p, s))``, shaped like ``get_summaries``'s outputs.
            w: weights (default: ``self.w``).
            key: JAX PRNG key; simulator classes re-make the simulations of
                ``get_summaries(w, key)`` from it (required there).

        Returns:
            The gradient, a pytree like ``w``.

        Raises:
            TypeError, ValueError: ``dΛ_dx`` not a pair of arrays of the shapes above, or
                (simulator classes) ``key`` not a JAX PRNG key.
        """
        w = self.w if w is None else w
        if isinstance(self.source, SimulatorSource):
            data = {"rng": as_raw_key(key, "key")}
        else:
            data = self._data(None)
        return self._pass_two(w, data, self._stream_cotangents(dΛ_dx))

    def _stream_cotangents(self, dΛ_dx) -> dict:
        s = self.n_summaries
        second = self.kind.seed_derivative_shape(self.n_d, s)
        if not isinstance(dΛ_dx, (tuple, list)) or len(dΛ_dx) != 2:
            raise TypeError(f"dΛ_dx must be a pair (dΛ/dx {(self.n_s, s)}, "
                            f"{self.kind.seed_cotangent_name} {second}), got "
                            f"{type(dΛ_dx).__name__}")
        ct_x = self.runtime.asarray(check_array("dΛ_dx[0]", dΛ_dx[0], (self.n_s, s)))
        ct_d = self.runtime.asarray(check_array("dΛ_dx[1]", dΛ_dx[1], second))
        streams = self.kind.stream_cotangents(ct_x, ct_d, self.n_d)
        return {name: ct for name, ct in streams.items() if self.source.sizes[name]}

    def get_summary(self, input: Any, w: Weights | None = None, θ: Array | None = None,
                    derivative: bool = False,
                    gradient: bool = False) -> Array | tuple[Array, Array] | Weights:
        """One example through the network (the seed's per-example method).

        ``input`` is, by flags (``d`` a simulation of shape input_shape, ``dd_dθ``
        its θ-derivative input_shape + (p,), ``key`` a PRNG key for simulator
        classes, which simulate at ``θ``):

        - neither flag: ``d`` (``key``) -> the summary x (s,);
        - ``derivative``: ``(d, dd_dθ)`` (``key``) -> ``(x (s,), ∂x/∂θ (s, p))``;
        - ``gradient``: ``(dΛ_dx (s,), d)`` (``(dΛ_dx, key)``) -> the weight
          gradient of ``dΛ_dx · x``, a pytree like ``w``;
        - both: ``((dΛ_dx (s,), d2Λ_dxdθ (s, p)), (d, dd_dθ))`` (``(…, key)``)
          -> the weight gradient of ``dΛ_dx · x + Σ d2Λ_dxdθ ∘ ∂x/∂θ``.

        Gradients are one vector-Jacobian product (never a Jacobian ∂x/∂w).
        Numerical derivative classes take no ``derivative`` (their θ-derivatives
        come from differences of summaries).

        Args:
            input: see above.
            w: weights (default: ``self.w``).
            θ: parameters to simulate at (simulator classes; default θ_fid);
                unused by the other classes.
            derivative: also the θ-derivative (see above).
            gradient: the weight gradient (see above).

        Returns:
            See above.

        Raises:
            TypeError: a flag that is not a bool, or ``input`` not of the structure the
                flags ask for.
            ValueError: arrays of the wrong shape, or ``derivative=True`` on a numerical
                derivative class.
        """
        w = self.w if w is None else w
        for name, flag in (("derivative", derivative), ("gradient", gradient)):
            if not isinstance(flag, (bool, np.bool_)):
                raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
        if derivative and not self.kind.derivative_streams:
            raise ValueError(f"derivative must be False for {type(self).__name__}: its "
                             "θ-derivatives are differences of summaries of the perturbed "
                             "simulations, not per-example derivatives")
        s, p = self.n_summaries, self.n_params
        ct = None
        if gradient:
            if not isinstance(input, (tuple, list)) or len(input) != 2:
                raise TypeError("with gradient=True, input must be a pair (cotangents, "
                                "example)")
            ct, input = input
            if derivative:
                if not isinstance(ct, (tuple, list)) or len(ct) != 2:
                    raise TypeError("with gradient=True and derivative=True the cotangents "
                                    "must be a pair (dΛ_dx (s,), d2Λ_dxdθ (s, p))")
                ct = Summaries(check_array("dΛ_dx", ct[0], (s,))[None],
                               check_array("d2Λ_dxdθ", ct[1], (s, p))[None])
            else:
                ct = Summaries(check_array("dΛ_dx", ct, (s,))[None], None)
            ct = tree_util.tree_map(self.runtime.asarray, ct)
        if isinstance(self.source, SimulatorSource):
            θ = self.θ_fid if θ is None else check_array("θ", θ, (p,)).astype(np.float64)
            kind = self.kind._replace(θ_fid=θ)
            inputs = as_raw_key(input, "input")[None]
        else:
            kind = Exact(p)
            if derivative:
                if not isinstance(input, (tuple, list)) or len(input) != 2:
                    raise TypeError("with derivative=True, the example must be a pair "
                                    "(d, dd_dθ)")
                inputs = (check_array("d", input[0], self.input_shape, floating=True)[None],
                          check_array("dd_dθ", input[1], self.input_shape + (p,),
                                      floating=True)[None])
            else:
                inputs = check_array("d", input, self.input_shape, floating=True)[None]
        inputs = tree_util.tree_map(self.runtime.asarray, inputs)
        if gradient:
            return self.runtime.batch_weight_gradient(self.network, w, kind, inputs,
                                                      derivative, ct)
        out = self.runtime.batch_summaries(self.network, w, kind, inputs, derivative)
        return (out.x[0], out.dx_dθ[0]) if derivative else out.x[0]
