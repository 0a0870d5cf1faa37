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

Why one module of about 650 lines: it is the page a backend author reads, and every
contract in it refers to the others (the kinds to ``Summaries``, the backends to the kinds
and ``Network``, the runtime to all of them); it holds declarations and their
documentation, no numerics.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Protocol, runtime_checkable

from jax.sharding import Mesh

if TYPE_CHECKING:  # imnn._fitting imports this module
    from ._fitting import Problem, Runner

from ._types import Array, Weights  # jax.Array | np.ndarray; a pytree of arrays


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
# Streams are named; each yields batches that backends summarise with (c). A kind owns the
# bookkeeping of its streams (names, sizes, layouts, the seed's views of its summaries); the
# numerics per kind (summaries of a batch, assemble) live in each backend, in tables keyed
# on the kind's class.

Shape = tuple[int, ...]


@runtime_checkable
class DerivativeKind(Protocol):
    """What every derivative kind provides (``Exact``, ``FiniteDifference``,
    ``ThroughSimulator``). ``p`` is ``n_params``, ``s`` the number of summaries.

    Attributes:
        streams: the names of its streams.
        derivative_streams: the streams whose batches carry θ-derivatives.
        quantities: {stream: how messages name its size}, e.g. ``{"main": "n_d"}``.
        simulates: whether stream inputs are PRNG keys the backend simulates from.
        seed_cotangent_name: how messages name the cotangent of the second element
            of ``seed_summaries``.
    """

    streams: tuple[str, ...]
    derivative_streams: tuple[str, ...]
    quantities: dict[str, str]
    simulates: bool
    seed_cotangent_name: str

    @property
    def n_params(self) -> int:
        """The number of parameters p."""
        ...

    def stream_sizes(self, n_s: int, n_d: int) -> dict[str, int]:
        """The number of simulations in each stream, for ``n_s`` fiducial simulations of
        which ``n_d`` have θ-derivatives."""
        ...

    def seed_summaries(self, outputs: dict[str, Summaries],
                       assemble: Callable[[Any, dict[str, Summaries]], Summaries]
                       ) -> Summaries | PerturbedSummaries:
        """What the seed's ``get_summaries`` returns from per-stream outputs (each
        stream's summaries concatenated over batches); ``assemble(kind, outputs)`` is
        the backend's assembly."""
        ...

    def seed_derivative_shape(self, n_d: int, n_summaries: int) -> Shape:
        """The shape of the second element of ``seed_summaries`` (and of its cotangent)."""
        ...

    def stream_cotangents(self, ct_x: Array, ct_second: Array, n_d: int
                          ) -> dict[str, Summaries]:
        """The transpose of ``seed_summaries``'s layout: cotangents ``ct_x`` (n_s, s) and
        ``ct_second`` (``seed_derivative_shape``) -> cotangents on every stream's
        outputs (streams of size 0 included, empty)."""
        ...

    def seed_batch_attributes(self, n_s: int, n_d: int, n_summaries: int, n_devices: int,
                              n_per_device: int) -> dict[str, Any]:
        """The batching attributes the seed's aggregated and Dataset classes show,
        {attribute name: value}, for batches of ``n_devices · n_per_device``."""
        ...


# What Exact and ThroughSimulator share: streams "main" (the n_d simulations with
# θ-derivatives) and "remaining" (the n_s − n_d without).

def _main_stream_sizes(self: MainKind, n_s: int, n_d: int) -> dict[str, int]:
    """{"main": n_d, "remaining": n_s − n_d}."""
    return {"main": n_d, "remaining": n_s - n_d}


def _main_seed_summaries(self: MainKind, outputs: dict[str, Summaries],
                         assemble: Callable[[Any, dict[str, Summaries]], Summaries]
                         ) -> Summaries:
    """The assembled Summaries(x (n_s, s), dx_dθ (n_d, s, p))."""
    return assemble(self, outputs)


def _main_seed_derivative_shape(self: MainKind, n_d: int, n_summaries: int) -> Shape:
    """(n_d, s, p): the shape of dx_dθ."""
    return (n_d, n_summaries, self.n_params)


def _main_stream_cotangents(self: MainKind, ct_x: Array, ct_second: Array, n_d: int
                            ) -> dict[str, Summaries]:
    """{"main": (ct_x[:n_d], ct_second), "remaining": (ct_x[n_d:], None)}."""
    return {"main": Summaries(ct_x[:n_d], ct_second), "remaining": Summaries(ct_x[n_d:], None)}


def _main_seed_batch_attributes(self: MainKind, n_s: int, n_d: int, n_summaries: int,
                                n_devices: int, n_per_device: int) -> dict[str, Any]:
    """n_remaining, n_iterations, n_remaining_iterations, batch_shape and
    remaining_batch_shape."""
    per_pass = n_devices * n_per_device
    n_iterations, n_remaining_iterations = n_d // per_pass, (n_s - n_d) // per_pass
    return {"n_remaining": n_s - n_d, "n_iterations": n_iterations,
            "n_remaining_iterations": n_remaining_iterations,
            "batch_shape": (n_devices, n_iterations, n_per_device),
            "remaining_batch_shape": (n_devices, n_remaining_iterations, n_per_device)}


_MAIN_QUANTITIES = {"main": "n_d", "remaining": "n_s - n_d"}


class Exact(NamedTuple):
    """∂x/∂θ by the chain rule from known ∂d/∂θ (Gradient classes).

    streams: "main" — batches (d (b,)+input_shape, ∂d/∂θ (b,)+input_shape+(p,)),
             "remaining" — batches d (b,)+input_shape.
    assemble: x = concat(main.x, remaining.x); dx_dθ = main.dx_dθ.
    Stored as arrays: fiducial (n_s,)+input_shape, derivative (n_d,)+input_shape+(p,)
    belonging to the first n_d fiducial simulations.

    Attributes:
        n_params: the number of parameters p.
    """
    n_params: int
    streams = ("main", "remaining")
    derivative_streams = ("main",)
    quantities = _MAIN_QUANTITIES
    simulates = False
    seed_cotangent_name = "dΛ/d(∂x/∂θ)"
    stream_sizes = _main_stream_sizes
    seed_summaries = _main_seed_summaries
    seed_derivative_shape = _main_seed_derivative_shape
    stream_cotangents = _main_stream_cotangents
    seed_batch_attributes = _main_seed_batch_attributes

    def stored_shapes(self, n_s: int, n_d: int, input_shape: Shape) -> tuple[Shape, Shape]:
        """The shapes of the stored arrays: (fiducial (n_s,)+input_shape, derivative
        (n_d,)+input_shape+(p,))."""
        return (n_s,) + tuple(input_shape), (n_d,) + tuple(input_shape) + (self.n_params,)

    def stored_streams(self, fiducial: Array, derivative: Array) -> dict[str, Any]:
        """The stored arrays as stream inputs: {"main": (fiducial[:n_d], derivative),
        "remaining": fiducial[n_d:]}."""
        n_d = derivative.shape[0]
        return {"main": (fiducial[:n_d], derivative), "remaining": fiducial[n_d:]}


class FiniteDifference(NamedTuple):
    """Seed-matched finite differences (NumericalGradient classes).

    streams: "fiducial" — batches d (b,)+input_shape,
             "derivative" — batches of the (n_d, 2, p)+input_shape array flattened
             in C order to (2·p·n_d,)+input_shape; [:, 0, α] below, [:, 1, α] above.
    assemble: x = fiducial.x; with X = derivative.x reshaped to (n_d, 2, p, s),
              dx_dθ[i, a, α] = (X[i, 1, α, a] − X[i, 0, α, a]) / δθ[α].

    Attributes:
        δθ: the parameter differences, shape (p,).
    """
    δθ: Array  # (p,)
    streams = ("fiducial", "derivative")
    derivative_streams = ()
    quantities = {"fiducial": "n_s", "derivative": "2·p·n_d (= 2 · n_params · n_d)"}
    simulates = False
    seed_cotangent_name = "dΛ/dx_mp"

    @property
    def n_params(self) -> int:
        """The number of parameters p, the length of δθ."""
        return len(self.δθ)

    def stream_sizes(self, n_s: int, n_d: int) -> dict[str, int]:
        """{"fiducial": n_s, "derivative": 2·p·n_d}."""
        return {"fiducial": n_s, "derivative": 2 * self.n_params * n_d}

    def stored_shapes(self, n_s: int, n_d: int, input_shape: Shape) -> tuple[Shape, Shape]:
        """The shapes of the stored arrays: (fiducial (n_s,)+input_shape, derivative
        (n_d, 2, p)+input_shape)."""
        return (n_s,) + tuple(input_shape), (n_d, 2, self.n_params) + tuple(input_shape)

    def stored_streams(self, fiducial: Array, derivative: Array) -> dict[str, Any]:
        """The stored arrays as stream inputs: {"fiducial": fiducial, "derivative":
        derivative flattened in C order to (2·p·n_d,)+input_shape}."""
        return {"fiducial": fiducial,
                "derivative": derivative.reshape((-1,) + derivative.shape[3:])}

    def seed_summaries(self, outputs: dict[str, Summaries],
                       assemble: Callable[[Any, dict[str, Summaries]], Summaries]
                       ) -> PerturbedSummaries:
        """PerturbedSummaries(x (n_s, s), x_mp (n_d, 2, p, s)): the derivative stream's
        summaries in their stored layout."""
        x = outputs["fiducial"].x
        return PerturbedSummaries(x, outputs["derivative"].x.reshape(
            (-1, 2, self.n_params, x.shape[-1])))

    def seed_derivative_shape(self, n_d: int, n_summaries: int) -> Shape:
        """(n_d, 2, p, s): the shape of x_mp."""
        return (n_d, 2, self.n_params, n_summaries)

    def stream_cotangents(self, ct_x: Array, ct_second: Array, n_d: int
                          ) -> dict[str, Summaries]:
        """{"fiducial": ct_x, "derivative": ct_second flattened to (2·p·n_d, s)}."""
        return {"fiducial": Summaries(ct_x, None),
                "derivative": Summaries(ct_second.reshape((-1, ct_x.shape[-1])), None)}

    def seed_batch_attributes(self, n_s: int, n_d: int, n_summaries: int, n_devices: int,
                              n_per_device: int) -> dict[str, Any]:
        """fiducial_iterations, derivative_iterations, derivative_output_shape,
        fiducial_batch_shape and derivative_batch_shape."""
        per_pass = n_devices * n_per_device
        fiducial, derivative = n_s // per_pass, 2 * self.n_params * n_d // per_pass
        return {"fiducial_iterations": fiducial, "derivative_iterations": derivative,
                "derivative_output_shape": (n_d, 2, self.n_params, n_summaries),
                "fiducial_batch_shape": (n_devices, fiducial, n_per_device),
                "derivative_batch_shape": (n_devices, derivative, n_per_device)}


class ThroughSimulator(NamedTuple):
    """Forward-mode derivatives through a JAX-traceable simulator (Simulator classes).

    ``simulator(key, θ) -> d`` with d of shape input_shape.
    streams: "main" — batches of PRNG keys (b, 2) whose simulations get ∂x/∂θ,
             "remaining" — batches of keys (b, 2), summaries only.
    assemble: as Exact. For the reference backends the simulator may instead be
    ``simulator(key, θ) -> (d, ∂d/∂θ)`` written in NumPy (``returns_derivative``).

    Attributes:
        simulator: ``simulator(key, θ) -> d`` (or ``(d, ∂d/∂θ)``, see above).
        θ_fid: the fiducial parameters, shape (p,).
        returns_derivative: whether ``simulator`` returns ``(d, ∂d/∂θ)``.
    """
    simulator: Callable
    θ_fid: Array  # (p,)
    returns_derivative: bool = False
    streams = ("main", "remaining")
    derivative_streams = ("main",)
    quantities = _MAIN_QUANTITIES
    simulates = True
    seed_cotangent_name = "dΛ/d(∂x/∂θ)"
    stream_sizes = _main_stream_sizes
    seed_summaries = _main_seed_summaries
    seed_derivative_shape = _main_seed_derivative_shape
    stream_cotangents = _main_stream_cotangents
    seed_batch_attributes = _main_seed_batch_attributes

    @property
    def n_params(self) -> int:
        """The number of parameters p, the length of θ_fid."""
        return len(self.θ_fid)

    def key_streams(self, keys: Array, n_d: int) -> dict[str, Array]:
        """Simulation keys (n_s, 2) as stream inputs: {"main": keys[:n_d], "remaining":
        keys[n_d:]}."""
        return {"main": keys[:n_d], "remaining": keys[n_d:]}


Kind = Exact | FiniteDifference | ThroughSimulator
MainKind = Exact | ThroughSimulator  # the kinds with streams "main" and "remaining"


def kind_entry(table: dict[type, Any], kind: Any, where: str) -> Any:
    """A backend's entry for derivative kind ``kind`` in ``table`` (keyed on kind classes).

    Args:
        table: {kind class: entry}.
        kind: a derivative kind.
        where: the table's place, for the message (e.g. "backends/jax/summaries.py _ONE").

    Returns:
        ``table[type(kind)]``.

    Raises:
        TypeError: no entry for the kind's class.
    """
    try:
        return table[type(kind)]
    except KeyError:
        raise TypeError(f"unknown derivative kind {type(kind).__name__}: no entry for it in "
                        f"{where}") from None


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
    """The number of simulations in each stream of a kind (``kind.stream_sizes``).

    Args:
        kind: a derivative kind.
        n_s: the number of fiducial simulations.
        n_d: how many of them have θ-derivatives.
        n_params: the number of parameters; must be the kind's.

    Returns:
        {stream name: number of simulations}.

    Raises:
        ValueError: ``n_params`` is not the kind's number of parameters.
    """
    if n_params != kind.n_params:
        raise ValueError(f"n_params = {n_params}, but the {type(kind).__name__} kind has "
                         f"{kind.n_params} parameters")
    return kind.stream_sizes(n_s, n_d)


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

    def pullback(self, w: Weights, inputs: Any, with_derivative: bool
                 ) -> Callable[[Summaries], Weights]:
        """Pass 2 alone: the function taking a stream's summary cotangents to the
        weight gradient, as ``summaries_and_pullback(w, inputs, with_derivative)[1]``.
        An executor that can skip pass 1 here does; otherwise it runs pass 1 and
        drops its summaries (a compiler removes them).

        Args:
            w: the network weights.
            inputs: the stream, as for ``summaries``.
            with_derivative: whether the stream carries θ-derivatives.

        Returns:
            ``pullback(cotangents)``: cotangents shaped like the summaries ((n, s)
            and (n, s, p)) to Σ dΛ/dw, a pytree shaped like ``w``.
        """
        ...

    def keep_within(self, memory_budget: int | None, sizes: dict[str, int]) -> int | None:
        """Let pass 1 keep work for pass 2 within ``memory_budget`` bytes per
        device, for training streams of these sizes. An executor that keeps
        nothing between the passes ignores it.

        Args:
            memory_budget: bytes per device, or None for the executor's default.
            sizes: {stream name: number of simulations}.

        Returns:
            The budget in bytes the executor works within (``memory_budget``
            unchanged where the executor does not plan).
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
    updates and callbacks).

    ``mesh``: the device mesh simulations are sharded over (one axis, along the
    batch), or None where the runtime runs on one device or on the host.

    ``traces``: whether the runtime's arrays are JAX arrays and its functions are
    traced by JAX. Then a simulator is checked by abstract evaluation
    (``jax.eval_shape``) and must return one simulation (its θ-derivatives come
    from forward-mode autodiff), every value of the fit's carry is replicated on
    the devices like the weights, and the network's ``apply`` is a JAX function
    a compressor can close over. False for the NumPy/Numba reference runtimes."""

    chunk: int
    mesh: Mesh | None
    traces: bool

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
            problem: an ``imnn._fitting.Problem``.

        Returns:
            An ``imnn._fitting.Runner``: ``run(carry, data, settings, start, n_steps) ->
            (carry, records stacked as NumPy arrays or None, iterations run)``, with
            ``settings`` an ``imnn._fitting.FitSettings`` (λ, α, min_iterations,
            patience, max_iterations), and ``n_steps`` at most the runner's ``chunk``.
            ``run`` stops after a non-finite iteration and hands back the weights and
            optimiser state from before it (``imnn._fitting.undo_update``).
        """
        ...


__all__ = [
    "Array", "Weights", "Summaries", "PerturbedSummaries", "FisherStatistics", "LossParts", "Exact",
    "FiniteDifference", "ThroughSimulator", "Kind", "DerivativeKind", "kind_entry", "Network", "StatisticsBackend",
    "BatchBackend", "Backend", "Optimiser", "stream_sizes", "Streams", "Executor", "Source",
    "Runtime",
]
