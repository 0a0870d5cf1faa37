"""What every backend provides: small typed contracts with documented shapes.

Notation (docs/design/behaviour.md): ``n_s`` fiducial simulations, ``n_d`` of them with
θ-derivatives, ``p`` parameters, ``s`` summaries, ``input_shape`` the shape of
one simulation. ``w`` is a pytree of network weights: a list with one tuple of
arrays per layer (``()`` for layers without weights).

One path for data, whatever the class::

    streams --(c) batch_summaries--> per-stream outputs --assemble--> Summaries
        --(b) loss_and_cotangents--> cotangents --assemble_transpose--> per-stream
        cotangents --(d) batch_weight_gradient (one VJP per batch)--> Σ dΛ/dw

The in-memory classes are the case of one batch per stream.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:  # imnn.fitting imports this module
    from .fitting import Problem, Runner

Array = Any     # a numpy or jax array
Weights = Any   # a pytree of arrays (list of per-layer tuples for imnn.nn models)


class Summaries(NamedTuple):
    """Network outputs and their derivatives with respect to the parameters.

    x:      (n, s)      one summary per simulation
    dx_dθ:  (n_d, s, p) ∂x/∂θ for the simulations that have derivatives, or None
    The same type holds cotangents (dΛ/dx, dΛ/d(∂x/∂θ)), with the same shapes.
    """
    x: Array
    dx_dθ: Array | None


class PerturbedSummaries(NamedTuple):
    """Network outputs of the numerical-derivative classes, as the seed returns them.

    x:     (n_s, s)          the fiducial simulations' summaries
    x_mp:  (n_d, 2, p, s)    the perturbed simulations' summaries: [:, 0, α] below,
                             [:, 1, α] above θ_fid in parameter α
    """
    x: Array
    x_mp: Array


class FisherStatistics(NamedTuple):
    """Gaussian Fisher statistics of a set of summaries
    (docs/design/behaviour.md#fisher-statistics).

    μ: (s,)  C: (s, s) unbiased covariance  invC: (s, s)
    dμ_dθ: (s, p)  F: (p, p) = dμ_dθᵀ C⁻¹ dμ_dθ  invF: (p, p)
    """
    μ: Array
    C: Array
    invC: Array
    dμ_dθ: Array
    F: Array
    invF: Array


class LossParts(NamedTuple):
    """The loss Λ = −ln|F| + r(Λ2) Λ2 and its parts (all scalars).

    ``logdetF`` is NaN when F is not positive definite, and then so is Λ.
    """
    Λ: Array
    logdetF: Array
    logdetC: Array
    logdetinvC: Array
    Λ2: Array
    r: Array


# --- derivative kinds --------------------------------------------------------
# A kind says how ∂x/∂θ is obtained and which streams of simulations feed a fit.
# Streams are named; each yields batches that backends summarise with (c).

class Exact(NamedTuple):
    """∂x/∂θ by the chain rule from known ∂d/∂θ (Gradient classes).

    streams: "main" — batches (d (b,)+input_shape, ∂d/∂θ (b,)+input_shape+(p,)),
             "remaining" — batches d (b,)+input_shape.
    assemble: x = concat(main.x, remaining.x); dx_dθ = main.dx_dθ.
    """
    n_params: int
    streams = ("main", "remaining")
    derivative_streams = ("main",)


class FiniteDifference(NamedTuple):
    """Seed-matched finite differences (NumericalGradient classes).

    streams: "fiducial" — batches d (b,)+input_shape,
             "derivative" — batches of the (n_d, 2, p)+input_shape array flattened
             in C order to (2·p·n_d,)+input_shape; [:, 0, α] below, [:, 1, α] above.
    assemble: x = fiducial.x; with X = derivative.x reshaped to (n_d, 2, p, s),
              dx_dθ[i, a, α] = (X[i, 1, α, a] − X[i, 0, α, a]) / δθ[α].
    """
    δθ: Array  # (p,)
    streams = ("fiducial", "derivative")
    derivative_streams = ()


class ThroughSimulator(NamedTuple):
    """Forward-mode derivatives through a JAX-traceable simulator (Simulator classes).

    ``simulator(key, θ) -> d`` with d of shape input_shape.
    streams: "main" — batches of PRNG keys (b, 2) whose simulations get ∂x/∂θ,
             "remaining" — batches of keys (b, 2), summaries only.
    assemble: as Exact. For the reference backends the simulator may instead be
    ``simulator(key, θ) -> (d, ∂d/∂θ)`` written in NumPy (``returns_derivative``).
    """
    simulator: Callable
    θ_fid: Array  # (p,)
    returns_derivative: bool = False
    streams = ("main", "remaining")
    derivative_streams = ("main",)


Kind = Exact | FiniteDifference | ThroughSimulator


class Network(NamedTuple):
    """A network as a backend runs it.

    init: ``init(key) -> w``, the initial weights.
    apply: ``apply(w, d) -> x`` for one simulation d of shape ``input_shape``,
        returning shape ``output_shape`` = (s,).
    input_shape: the shape of one simulation.
    output_shape: (s,).
    apply_in_loops: ``apply`` written for the bodies of compiled loops (the same
        results from other operations: on a CPU the JAX backend writes imnn.nn
        convolutions as matrix products there); None where ``apply`` serves everywhere.
    """
    init: Callable
    apply: Callable
    input_shape: tuple
    output_shape: tuple
    apply_in_loops: Callable | None = None


# --- what a backend provides --------------------------------------------------

@runtime_checkable
class StatisticsBackend(Protocol):
    """(a) Fisher statistics and (b) the loss with its cotangents."""

    def fisher_statistics(self, x: Array, dx_dθ: Array) -> FisherStatistics:
        """x (n_s, s), dx_dθ (n_d, s, p) -> FisherStatistics
        (docs/design/behaviour.md#fisher-statistics)."""

    def loss(self, x: Array, dx_dθ: Array, λ: float, α: float) -> LossParts:
        """The loss and its parts (docs/design/behaviour.md#loss) for summaries x and
        derivatives dx_dθ."""

    def loss_and_cotangents(self, x: Array, dx_dθ: Array, λ: float, α: float
                            ) -> tuple[LossParts, Summaries]:
        """The loss and (dΛ/dx (n_s, s), dΛ/d(∂x/∂θ) (n_d, s, p))."""


@runtime_checkable
class BatchBackend(Protocol):
    """(c) summaries of a batch and (d) the weight gradient of a batch."""

    def network(self, model: Any, input_shape: tuple) -> Network:
        """Build a Network from an imnn.nn model (or, where supported, a user
        ``(init, apply)`` pair)."""

    def batch_summaries(self, network: Network, w: Weights, kind: Kind,
                        inputs: Any, with_derivative: bool) -> Summaries:
        """Summaries of one batch of a stream.

        inputs: as the kind's stream documents (simulations, (d, ∂d/∂θ) pairs or keys)
        returns Summaries(x (b, s), dx_dθ (b, s, p) if with_derivative else None)
        """

    def batch_weight_gradient(self, network: Network, w: Weights, kind: Kind,
                              inputs: Any, with_derivative: bool,
                              cotangents: Summaries) -> Weights:
        """One vector-Jacobian product: Σ_batch ct·∂(x, ∂x/∂θ)/∂w, a pytree like w."""

    def assemble(self, kind: Kind, outputs: dict[str, Summaries]) -> Summaries:
        """Per-stream outputs (concatenated over batches) -> Summaries (n_s, …).

        A stream with no simulations (e.g. "remaining" when n_s == n_d) is absent
        from ``outputs``; assemble treats it as empty."""

    def assemble_transpose(self, kind: Kind, cotangents: Summaries,
                           sizes: dict[str, int]) -> dict[str, Summaries]:
        """The transpose of the (linear) assemble: cotangents on Summaries ->
        cotangents on each stream's outputs (``sizes`` gives each stream's length;
        streams of size 0 are left out of the result)."""


class Backend(StatisticsBackend, BatchBackend, Protocol):
    """Everything a fit is built from."""
    name: str


# --- optimisers ----------------------------------------------------------------

class Optimiser(NamedTuple):
    """Pure optimiser functions used by every backend.

    init(w) -> state;  update(grads, state, w) -> (new_w, new_state)
    """
    init: Callable
    update: Callable


def stream_sizes(kind: Kind, n_s: int, n_d: int, n_params: int) -> dict[str, int]:
    """Number of simulations in each stream of a kind."""
    if isinstance(kind, FiniteDifference):
        return {"fiducial": n_s, "derivative": 2 * n_params * n_d}
    return {"main": n_d, "remaining": n_s - n_d}


# --- the seams a fit is assembled from ---------------------------------------------
# A class builds a Runtime from a backend name, asks it for an Executor and a
# runner, and reads its simulations from a Source. Each of the three roles has
# one implementation per way of running (JAX, the reference backends, iterators).

Streams = dict  # {stream name: (inputs, with_derivative)}, inputs (n_batches, batch, ...)


@runtime_checkable
class Executor(Protocol):
    """Runs whole streams through the network: pass 1 (summaries) and pass 2
    (the vector-Jacobian product with respect to the weights)."""

    def summaries(self, w: Weights, inputs: Any, with_derivative: bool) -> Summaries:
        """Summaries of every simulation of one stream.

        Args:
            w: the network weights.
            inputs: the stream, laid out in batches: simulations
                (n_batches, batch) + input_shape, their θ-derivatives
                (n_batches, batch) + input_shape + (p,), or simulation keys,
                as the kind decides.
            with_derivative: whether the stream carries θ-derivatives.

        Returns:
            Summaries with ``x`` (n, s) and, with derivatives, ``dx_dθ`` (n, s, p),
            n = n_batches · batch.
        """
        ...

    def summaries_and_pullback(self, w: Weights, inputs: Any, with_derivative: bool
                               ) -> tuple[Summaries, Callable[[Summaries], Weights]]:
        """``summaries(w, inputs, with_derivative)`` and the function taking
        their cotangents to the weight gradient.

        Args:
            w: the network weights.
            inputs: the stream, as for ``summaries``.
            with_derivative: whether the stream carries θ-derivatives.

        Returns:
            (summaries, pullback): summaries as ``summaries`` returns them;
            ``pullback(cotangents)`` takes cotangents shaped like the summaries
            ((n, s) and (n, s, p)) to Σ dΛ/dw, a pytree shaped like ``w``.
        """
        ...


@runtime_checkable
class Source(Protocol):
    """Where a class's simulations come from (arrays, a simulator, iterators),
    handed to the fit as streams. ``validate`` says whether it holds a
    validation set; ``validation_streams(data) -> Streams`` gives it, and is
    None where there is none."""

    validate: bool
    validation_streams: Callable[[dict], Streams] | None

    def data(self, runtime: Any, rng: Any = None) -> dict:
        """What the fit loop carries between iterations: the stored streams
        placed by ``runtime``, or a random key.

        Args:
            runtime: the Runtime that places arrays.
            rng: the fit's random key, for sources that simulate.

        Returns:
            A dict: ``{"train": streams, "validation": streams}`` for stored
            simulations, ``{"rng": key}`` for a simulator.
        """
        ...

    def training_streams(self, data: dict, i: Any) -> Streams:
        """The streams of iteration ``i``.

        Args:
            data: what ``data`` returned.
            i: the iteration index (an int or a 0-d integer array).

        Returns:
            {name: (inputs, with_derivative)}, inputs (n_batches, batch, ...).
        """
        ...

    def statistics_streams(self, data: dict, key: Any = None, validate: bool = False
                           ) -> Streams:
        """The streams the Fisher statistics are measured on after a fit.

        Args:
            data: what ``data`` returned.
            key: a random key, for sources that simulate.
            validate: use the validation set rather than the training set,
                where there is one.

        Returns:
            {name: (inputs, with_derivative)}.
        """
        ...


@runtime_checkable
class Runtime(Backend, Protocol):
    """A backend together with what a class needs to run a fit on it: placing
    arrays, building executors and the compiled fit loop.

    ``chunk``: the most iterations one call of its runner runs (between progress
    updates and callbacks)."""

    chunk: int

    @property
    def dtype(self) -> Any:
        """The working floating-point precision (a NumPy dtype)."""
        ...

    def asarray(self, array: Any) -> Array:
        """``array`` as this runtime's array type; floating values in ``dtype``."""
        ...

    def place(self, tree: Any) -> Any:
        """Every array leaf of ``tree`` placed where the fit reads it (sharded
        over the devices along the batch axis where it can)."""
        ...

    def replicate(self, tree: Any) -> Any:
        """Every array leaf of ``tree`` copied whole to every device."""
        ...

    def where(self, condition: Array, x: Any, y: Any) -> Array:
        """Elementwise select of the runtime's array library."""
        ...

    def executor(self, network: Network, kind: Kind) -> Executor:
        """The Executor running ``network`` for derivative kind ``kind``."""
        ...

    def compile(self, function: Callable) -> Callable:
        """``function`` compiled for this runtime (the identity where nothing
        compiles)."""
        ...

    def make_runner(self, problem: Problem) -> Runner:
        """The fit loop of ``problem``, built once: the static choices (the problem,
        where the iterations loop, how many one call may run) closed over.

        Args:
            problem: an ``imnn.fitting.Problem``.

        Returns:
            An ``imnn.fitting.Runner``: ``run(carry, data, settings, start, n_steps) ->
            (carry, records stacked as NumPy arrays or None, iterations run)``, with
            ``settings`` an ``imnn.fitting.FitSettings`` (λ, α, min_iterations,
            patience, max_iterations), and ``n_steps`` at most the runner's ``chunk``.
        """
        ...


__all__ = [
    "Array", "Weights", "Summaries", "PerturbedSummaries", "FisherStatistics", "LossParts", "Exact",
    "FiniteDifference", "ThroughSimulator", "Kind", "Network", "StatisticsBackend",
    "BatchBackend", "Backend", "Optimiser", "stream_sizes", "Streams", "Executor", "Source",
    "Runtime",
]
