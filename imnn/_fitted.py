"""``FittedIMNN``: a fit read from an .imnn file, which summarises, estimates and
compresses on any backend without the training data or the simulator.
"""
from __future__ import annotations

import math
from typing import Any

import jax

from ._estimates import Estimates
from ._models import model_kind
from ._runtime import BACKENDS, make_backend
from ._saved import STATISTICS, WEIGHTS, Saved, weights_into
from ._tables import model_from_tables, model_to_tables

# --- a fitted network, for evaluation -------------------------------------------------------

class FittedIMNN(Estimates):
    """A fitted IMNN read from a file: it summarises, estimates and compresses
    without the training data or the simulator.

    Attributes:
        class_name: the class it was fitted with.
        backend: the backend it evaluates on.
        model: the model (rebuilt from the file for imnn.nn, else the one given).
        model_kind: the kind of model.
        input_shape, n_s, n_d, n_params, n_summaries: as the fitted object's.
        θ_fid: (p,) the fiducial parameters; δθ: (p,) or None.
        w, best_w, final_w: the weights, in the model's structure.
        state: the optimiser state's leaves (a list); state_paths: their key paths.
        history: the fit's history.
        F, invF: (p, p); C, invC: (s, s); μ: (s,); dμ_dθ: (s, p) (None when the
            file has no statistics).
        fit_iteration, patience_counter: the fit's progress.
        metadata: the metadata given to ``save``.

    Methods as the IMNN classes: ``summarise(d, w=None)``, ``get_estimate(d)``,
    ``compressor()`` (a JAX function ``d (n,)+input_shape -> θ̂ (n, p)`` for
    imnn.lfi), ``plot(...)``. ``imnn.save(fitted, path)`` writes it again.

    Args:
        saved: what ``read`` returns.
        backend: see ``load``.
        model: see ``load``.
    """

    def __init__(self, saved: Saved, backend: str | None = None, model: Any = None) -> None:
        m = saved.manifest
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
        self.model_kind = m["model_kind"]
        self.model = _model_for(saved, model)
        self.class_name, self.metadata = m["class"], m["metadata"]
        self.n_s, self.n_d, self.n_params, self.n_summaries = (
            m["n_s"], m["n_d"], m["n_params"], m["n_summaries"])
        self.input_shape = tuple(m["input_shape"])
        self.θ_fid = saved.arrays["θ_fid"]
        self.δθ = saved.arrays.get("δθ")
        self.runtime = make_backend(backend or m["backend"])
        self.backend = self.runtime.name
        self.network = self.runtime.network(self.model, self.input_shape)
        if tuple(self.network.output_shape) != (self.n_summaries,):
            raise ValueError(f"the model given gives summaries of shape "
                             f"{tuple(self.network.output_shape)}, the fit in {saved.path} "
                             f"has n_summaries = {self.n_summaries}")
        weights = weights_into(saved, self.network.init(jax.random.PRNGKey(0)), self.runtime,
                                "the model given" if model is not None else "its model")
        self.w, self.best_w, self.final_w = (weights[name] for name in WEIGHTS)
        self.state, self.state_paths = saved.state_leaves(), list(m["state_paths"])
        self.history = saved.history()
        self.fit_iteration, self.patience_counter = m["fit_iteration"], m["patience_counter"]
        self._max_logdetF = float(saved.arrays["max_logdetF"])
        for name in STATISTICS:
            setattr(self, name, saved.arrays.get(f"statistics/{name}"))

    @property
    def max_detF(self) -> float:
        """The largest det F of the fit (0 when it has not run)."""
        return math.exp(self._max_logdetF) if math.isfinite(self._max_logdetF) else 0.0

    def __repr__(self):
        return (f"FittedIMNN({self.class_name}, backend={self.backend!r}, "
                f"model_kind={self.model_kind!r}, input_shape={self.input_shape}, "
                f"n_params={self.n_params}, {self.fit_iteration} iterations)")


def _model_for(saved, model):
    """The model to evaluate the saved weights with: ``model`` if given (of the
    saved kind), else the imnn.nn model the file describes."""
    m, path = saved.manifest, saved.path
    saved_kind = m["model_kind"] + (f" ({m['model_type']})" if m["model_type"] else "")
    if model is None:
        if m["model_kind"] != "imnn.nn":
            raise ValueError(f"{path} holds the weights of a model of kind {saved_kind}, "
                             "which the file does not describe: give the model again, "
                             "imnn.load(path, model=...)")
        return model_from_tables(m["model"], f"{path}: model")
    kind = model_kind(model)
    if kind != m["model_kind"]:
        raise ValueError(f"{path} holds the weights of a model of kind {saved_kind}; model= "
                         f"is of kind {kind}: give the same kind of model it was fitted with")
    if kind == "imnn.nn" and model_to_tables(model) != m["model"]:
        raise ValueError(f"model= is not the model of {path}: its model is {m['model']}, "
                         f"model= is {model_to_tables(model)}")
    return model
