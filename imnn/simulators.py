"""Built-in simulators with exact Fisher matrices (the analytic anchors,
docs/design/behaviour.md#analytic-anchors).

Each simulator is a small frozen dataclass providing

    input_shape, n_params, θ_fid, name
    simulate(key, θ) -> d                  JAX-traceable: jit, vmap, jvp in θ
    simulate_numpy(key, θ) -> (d, dd_dθ)   float64 NumPy; dd_dθ input_shape + (p,)
    fisher(θ=None) -> F                    exact, float64 (p, p); θ defaults to θ_fid

``key`` is a JAX PRNG key (raw ``(2,)`` uint32 or typed). Both ``simulate`` and
``simulate_numpy`` draw their standard-normal noise with ``jax.random.normal`` as
float32 from the key and only then promote it (to θ's dtype, resp. float64), so a
key gives the same noise whether or not ``jax_enable_x64`` is set, and the two
versions differ only by the rounding of the deterministic transformation. The
transformation and its θ-derivative in ``simulate_numpy`` are plain NumPy.

Pass ``sim.simulate`` as the simulator of the Simulator classes and
``sim.simulate_numpy`` where a simulator returning ``(d, ∂d/∂θ)`` is wanted.

Why one module of about 480 lines: the three simulators and their exact Fisher matrices
are the analytic anchors the tests and the documentation measure against; each is a
small dataclass, and most of the lines are their documented formulas.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from ._checks import int_at_least, positive_entry
from ._types import Array, ArrayLike, Key, Shape


@runtime_checkable
class AnalyticSimulator(Protocol):
    """What every built-in simulator provides (see the module docstring)."""
    name: str
    n_params: int
    input_shape: Shape
    θ_fid: np.ndarray

    def simulate(self, key: Key, θ: ArrayLike) -> Array:
        """One simulation of shape ``input_shape`` at θ (p,); JAX-traceable."""
        ...

    def simulate_numpy(self, key: Key, θ: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """One simulation and its θ-derivative, ``input_shape`` and ``input_shape + (p,)``,
        in float64 NumPy."""
        ...

    def fisher(self, θ: ArrayLike | None = None) -> np.ndarray:
        """The exact Fisher matrix (p, p) at θ (default ``θ_fid``), float64."""
        ...


# --- shared helpers ------------------------------------------------------------

def _noise(key: Key, shape: Shape) -> jax.Array:
    """Standard normals drawn as float32: the same numbers with or without x64."""
    return jax.random.normal(key, shape, jnp.float32)


def _numpy_noise(key: Key, shape: Shape) -> np.ndarray:
    return np.asarray(_noise(key, shape), dtype=np.float64)


def _jax_parameters(θ: ArrayLike, n_params: int) -> jax.Array:
    """θ as a floating JAX array of shape (n_params,) (the shape is static under jit)."""
    θ = jnp.asarray(θ)
    if θ.shape != (n_params,):
        raise ValueError(f"θ must have shape ({n_params},), got shape {θ.shape}")
    return θ.astype(jnp.promote_types(θ.dtype, jnp.float32))


def _numpy_parameters(θ: ArrayLike, n_params: int, argument: str) -> np.ndarray:
    """θ as a finite float64 NumPy array of shape (n_params,)."""
    θ = np.asarray(θ, dtype=np.float64)
    if θ.shape != (n_params,):
        raise ValueError(f"{argument} must have shape ({n_params},), got shape {θ.shape}")
    if not np.all(np.isfinite(θ)):
        raise ValueError(f"{argument} must be finite, got {θ}")
    return θ


def _read_only(θ: np.ndarray) -> np.ndarray:
    θ = θ.copy()
    θ.setflags(write=False)
    return θ


# --- n Gaussian draws --------------------------------------------------------------
# d_i = μ + sqrt(σ²) z_i. The variance-only simulator is the same model with μ = 0,
# so both classes use these three functions.

def _gaussian_simulate(key: Key, n: int, μ: Array | float, σ2: Array) -> jax.Array:
    return μ + jnp.sqrt(σ2) * _noise(key, (n,)).astype(σ2.dtype)


def _gaussian_simulate_numpy(key: Key, n: int, μ: float, σ2: float
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> d (n,), ∂d/∂μ (n,), ∂d/∂σ² (n,)."""
    z = _numpy_noise(key, (n,))
    return μ + np.sqrt(σ2) * z, np.ones(n), z / (2.0 * np.sqrt(σ2))


def _gaussian_fisher(n: int, σ2: float) -> tuple[float, float]:
    """(F_μμ, F_σ²σ²) = (n/σ², n/(2σ⁴)); F_μσ² = 0."""
    return n / σ2, n / (2.0 * σ2 ** 2)


class _GaussianDraws:
    """n Gaussian draws whose variance σ² is the last parameter (the two
    dataclasses below): checks and the input shape."""

    def __post_init__(self) -> None:
        int_at_least("n", self.n, 1)
        object.__setattr__(self, "θ_fid", _read_only(self._parameters(self.θ_fid, "θ_fid")))

    @property
    def input_shape(self) -> Shape:
        """The shape of one simulation, (n,)."""
        return (self.n,)

    def _parameters(self, θ: ArrayLike, argument: str) -> np.ndarray:
        θ = _numpy_parameters(θ, self.n_params, argument)
        positive_entry(argument, f"σ² = θ[{self.n_params - 1}]", θ[-1])
        return θ


@dataclass(frozen=True, eq=False)
class GaussianMeanVariance(_GaussianDraws):
    """n independent draws d_i = μ + sqrt(σ²) z_i, z_i ~ N(0, 1); θ = (μ, σ²).

    input_shape (n,). F = diag(n/σ², n/(2σ⁴)): diag(10, 5), det F = 50 at the
    default θ_fid = (0, 1) with n = 10.

    Args:
        n: draws per simulation, >= 1 (default 10).
        θ_fid: (2,) the fiducial (μ, σ²), finite, σ² > 0 (default (0, 1)); stored as a
            read-only float64 array.

    Raises:
        ValueError: ``n`` not an integer >= 1, or ``θ_fid`` not as described.
    """
    n: int = 10
    θ_fid: ArrayLike = (0.0, 1.0)

    name: ClassVar[str] = "gaussian_mean_variance"
    n_params: ClassVar[int] = 2

    def simulate(self, key: Key, θ: ArrayLike) -> jax.Array:
        """One simulation; JAX-traceable (jit, vmap, jvp in θ).

        Args:
            key: a JAX PRNG key.
            θ: (2,) the parameters (μ, σ²).

        Returns:
            (n,) the draws, in θ's floating dtype (at least float32).

        Raises:
            ValueError: θ not of shape (2,).
        """
        θ = _jax_parameters(θ, 2)
        return _gaussian_simulate(key, self.n, θ[0], θ[1])

    def simulate_numpy(self, key: Key, θ: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """One simulation and its θ-derivative in float64 NumPy (the same noise as
        ``simulate`` for the same key).

        Args:
            key: a JAX PRNG key.
            θ: (2,) the parameters (μ, σ²), finite, σ² > 0.

        Returns:
            d (n,) and ∂d/∂θ (n, 2).

        Raises:
            ValueError: θ not finite of shape (2,), or σ² <= 0.
        """
        μ, σ2 = self._parameters(θ, "θ")
        d, dd_dμ, dd_dσ2 = _gaussian_simulate_numpy(key, self.n, μ, σ2)
        return d, np.stack([dd_dμ, dd_dσ2], axis=-1)

    def fisher(self, θ: ArrayLike | None = None) -> np.ndarray:
        """The exact Fisher matrix diag(n/σ², n/(2σ⁴)).

        Args:
            θ: (2,) the parameters (μ, σ²); None (default) for ``θ_fid``.

        Returns:
            (2, 2) float64.

        Raises:
            ValueError: θ not finite of shape (2,), or σ² <= 0.
        """
        _, σ2 = self._parameters(self.θ_fid if θ is None else θ, "θ")
        return np.diag(_gaussian_fisher(self.n, σ2))


@dataclass(frozen=True, eq=False)
class GaussianVariance(_GaussianDraws):
    """n independent draws d_i = sqrt(σ²) z_i, z_i ~ N(0, 1); θ = (σ²,).

    input_shape (n,). F = n/(2σ⁴): 5 at the default θ_fid = (1,) with n = 10.

    Args:
        n: draws per simulation, >= 1 (default 10).
        θ_fid: (1,) the fiducial (σ²,), finite and > 0 (default (1,)); stored as a
            read-only float64 array.

    Raises:
        ValueError: ``n`` not an integer >= 1, or ``θ_fid`` not as described.
    """
    n: int = 10
    θ_fid: ArrayLike = (1.0,)

    name: ClassVar[str] = "gaussian_variance"
    n_params: ClassVar[int] = 1

    def simulate(self, key: Key, θ: ArrayLike) -> jax.Array:
        """One simulation; JAX-traceable (jit, vmap, jvp in θ).

        Args:
            key: a JAX PRNG key.
            θ: (1,) the parameter (σ²,).

        Returns:
            (n,) the draws, in θ's floating dtype (at least float32).

        Raises:
            ValueError: θ not of shape (1,).
        """
        θ = _jax_parameters(θ, 1)
        return _gaussian_simulate(key, self.n, 0.0, θ[0])

    def simulate_numpy(self, key: Key, θ: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """One simulation and its θ-derivative in float64 NumPy (the same noise as
        ``simulate`` for the same key).

        Args:
            key: a JAX PRNG key.
            θ: (1,) the parameter (σ²,), finite and > 0.

        Returns:
            d (n,) and ∂d/∂θ (n, 1).

        Raises:
            ValueError: θ not finite of shape (1,), or σ² <= 0.
        """
        (σ2,) = self._parameters(θ, "θ")
        d, _, dd_dσ2 = _gaussian_simulate_numpy(key, self.n, 0.0, σ2)
        return d, dd_dσ2[:, None]

    def fisher(self, θ: ArrayLike | None = None) -> np.ndarray:
        """The exact Fisher matrix [[n/(2σ⁴)]].

        Args:
            θ: (1,) the parameter (σ²,); None (default) for ``θ_fid``.

        Returns:
            (1, 1) float64.

        Raises:
            ValueError: θ not finite of shape (1,), or σ² <= 0.
        """
        (σ2,) = self._parameters(self.θ_fid if θ is None else θ, "θ")
        return np.array([[_gaussian_fisher(self.n, σ2)[1]]])


# --- 2-D Gaussian random field ------------------------------------------------------

def power_law_fisher(k: ArrayLike, θ: ArrayLike) -> np.ndarray:
    """Mode-counting Fisher of P(k) = A k^−B, θ = (A, B): ½ Σ_modes ∂lnP/∂θ_i ∂lnP/∂θ_j.

    ∂lnP/∂A = 1/A, ∂lnP/∂B = −ln k. det F does not depend on the units of k (they
    shift ln k by a constant); F_AB and F_BB do.

    Args:
        k: wavenumbers (any shape, all > 0), one entry per independent real Gaussian
            degree of freedom with variance ∝ P(k).
        θ: (2,) the parameters (A, B), finite, A > 0.

    Returns:
        (2, 2) float64.

    Raises:
        ValueError: ``k`` empty or not finite and positive, or θ not finite of shape (2,)
            with A > 0.
    """
    k = np.asarray(k, dtype=np.float64).ravel()
    if k.size == 0 or not np.all(k > 0) or not np.all(np.isfinite(k)):
        raise ValueError("k must be a non-empty array of finite positive wavenumbers")
    A, _ = _field_parameters(θ, "θ")
    score = np.stack([np.full_like(k, 1.0 / A), -np.log(k)])
    return 0.5 * score @ score.T


def _field_parameters(θ: ArrayLike, argument: str) -> np.ndarray:
    θ = _numpy_parameters(θ, 2, argument)
    positive_entry(argument, "A = θ[0]", θ[0])
    return θ


def _field_numpy(z: np.ndarray, amplitude: np.ndarray, d_amplitude: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The linear map z -> d = Re ifft2(amplitude · fft2(z)) and its θ-derivative.

    z (..., N, N), amplitude (N, N), d_amplitude (p, N, N) -> d (..., N, N),
    ∂d/∂θ (..., N, N, p). The map is linear in the amplitude, so its derivative is
    the same map with ∂amplitude/∂θ.
    """
    z_k = np.fft.fft2(z)
    d = np.fft.ifft2(amplitude * z_k).real
    d_amplitude = np.expand_dims(d_amplitude, tuple(range(1, z.ndim - 1)))
    dd = np.fft.ifft2(d_amplitude * z_k).real  # (p, ..., N, N)
    return d, np.moveaxis(dd, 0, -1)


@dataclass(frozen=True, eq=False)
class GaussianRandomField:
    """A 2-D Gaussian random field on an N×N periodic grid with P(k) = A k^−B; θ = (A, B).

    input_shape (N, N), no channel axis (add one with ``imnn.nn.Reshape((N, N, 1))``).

    Conventions
    - Wavenumbers: k = 2π |n| / N for the integer DFT frequencies n = (n_x, n_y) in
      ``np.fft.fftfreq`` order, i.e. radians per pixel (a box of side N pixels);
      ``self.k`` holds |k| on the grid. This is the earlier IMNN library's k.
    - Field: d = L(θ) z, z an N×N white-noise image, L = Re ifft2 ∘ diag(a(k)) ∘ fft2
      with amplitude a(k) = sqrt(P(k)). a is even in k, so L is real and symmetric and
      d is real. Then ⟨|fft2(d)(k)|²⟩ = N² P(k), and the pixel covariance is
      Σ(θ) = L Lᵀ with Σ_xy = N⁻² Σ_k P(k) e^{ik·(x−y)} (diagonal in Fourier space).
    - k = 0: P(0) is infinite for B > 0, so the k = 0 amplitude is set to zero for
      every θ: each simulation has exactly zero mean and Σ has rank N² − 1 (its null
      vector is the constant image, which ∂Σ/∂θ annihilates too). The Fisher matrix
      is that of the density on the zero-mean subspace.

    Fisher (``fisher(θ, method)``), both exact and equal to rounding:
    - "modes" (default, any N): ``power_law_fisher`` over the N² − 1 grid points
      k ≠ 0. In the real Fourier basis Σ has one eigenvector with eigenvalue P(k) per
      grid point: a pair ±k (k ≢ −k) gives two (cos and sin), a self-conjugate
      Nyquist mode (N even: (N/2, 0), (0, N/2), (N/2, N/2)) gives one. So summing
      over the whole grid counts every independent real degree of freedom once.
    - "pixel" (N ≤ 32): F_ij = ½ Tr(Σ⁻¹ ∂_iΣ Σ⁻¹ ∂_jΣ) with L and ∂L/∂θ built
      column by column from the simulator's own NumPy transformation; Σ⁻¹ is taken
      on the zero-mean subspace (Σ + 𝟙𝟙ᵀ/N² is inverted; the added direction carries
      no θ-dependence and so no information).

    The earlier library's 128×128 anchor, det F = 967 560.53 at (A, B) = (1, 0.5),
    is ``power_law_fisher(k[1:N//2, 1:N//2], θ)``: it counts only the (N/2 − 1)²
    wavevectors with 1 ≤ n_x, n_y < N/2, one real degree of freedom each (F_AA =
    3969/2 = 1984.5), a quarter of the field's information per parameter. Counting
    all N² − 1 = 16383 degrees of freedom of this simulator gives
    F = [[8191.5, −6365.164], [−6365.164, 7076.180]], det F = 17 449 217.9.

    Args:
        N: pixels per side, >= 2 (default 32).
        θ_fid: (2,) the fiducial (A, B), finite, A > 0 (default (1, 0.5)); stored as a
            read-only float64 array.

    Raises:
        ValueError: ``N`` not an integer >= 2, or ``θ_fid`` not as described.
    """
    N: int = 32
    θ_fid: ArrayLike = (1.0, 0.5)

    name: ClassVar[str] = "gaussian_random_field"
    n_params: ClassVar[int] = 2
    pixel_fisher_max_N: ClassVar[int] = 32

    def __post_init__(self) -> None:
        int_at_least("N", self.N, 2)
        object.__setattr__(self, "θ_fid", _read_only(_field_parameters(self.θ_fid, "θ_fid")))

    @property
    def input_shape(self) -> Shape:
        """The shape of one simulation, (N, N)."""
        return (self.N, self.N)

    @cached_property
    def k(self) -> np.ndarray:
        """|k| = 2π|n|/N on the grid, (N, N), fftfreq order (k[0, 0] = 0)."""
        n = np.fft.fftfreq(self.N) * self.N
        return _read_only(2.0 * np.pi / self.N * np.hypot(n[:, None], n[None, :]))

    @cached_property
    def _log_k(self) -> np.ndarray:
        """ln k with 0 at k = 0 (where the amplitude is masked to zero anyway)."""
        return _read_only(np.log(np.where(self.k > 0, self.k, 1.0)))

    def simulate(self, key: Key, θ: ArrayLike) -> jax.Array:
        """One field; JAX-traceable (jit, vmap, jvp in θ).

        Args:
            key: a JAX PRNG key.
            θ: (2,) the parameters (A, B).

        Returns:
            (N, N) the field, in θ's floating dtype (at least float32).

        Raises:
            ValueError: θ not of shape (2,).
        """
        θ = _jax_parameters(θ, 2)
        A, B = θ[0], θ[1]
        half = self.N // 2 + 1  # rfft2 keeps last-axis frequencies 0..N//2
        log_k = jnp.asarray(self._log_k[:, :half], θ.dtype)
        mask = jnp.asarray(self.k[:, :half] > 0, θ.dtype)
        amplitude = jnp.sqrt(A) * jnp.exp(-0.5 * B * log_k) * mask
        z = _noise(key, self.input_shape).astype(θ.dtype)
        return jnp.fft.irfft2(amplitude * jnp.fft.rfft2(z), s=self.input_shape)

    def _amplitude_numpy(self, θ: ArrayLike, argument: str) -> tuple[np.ndarray, np.ndarray]:
        """a(k) = sqrt(A) k^(−B/2) (0 at k = 0), (N, N), and ∂a/∂θ, (2, N, N)."""
        A, B = _field_parameters(θ, argument)
        a = np.where(self.k > 0, np.sqrt(A) * np.exp(-0.5 * B * self._log_k), 0.0)
        return a, np.stack([a / (2.0 * A), -0.5 * self._log_k * a])

    def simulate_numpy(self, key: Key, θ: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """One field and its θ-derivative in float64 NumPy (the same noise as
        ``simulate`` for the same key).

        Args:
            key: a JAX PRNG key.
            θ: (2,) the parameters (A, B), finite, A > 0.

        Returns:
            d (N, N) and ∂d/∂θ (N, N, 2).

        Raises:
            ValueError: θ not finite of shape (2,), or A <= 0.
        """
        a, da = self._amplitude_numpy(θ, "θ")
        return _field_numpy(_numpy_noise(key, self.input_shape), a, da)

    def fisher(self, θ: ArrayLike | None = None, method: str = "modes") -> np.ndarray:
        """The exact Fisher matrix; see the class docstring for the two methods.

        Args:
            θ: (2,) the parameters (A, B); None (default) for ``θ_fid``.
            method: ``"modes"`` (default, any N) or ``"pixel"`` (N <= 32).

        Returns:
            (2, 2) float64.

        Raises:
            ValueError: θ not finite of shape (2,) with A > 0, an unknown ``method``, or
                ``"pixel"`` with N > 32.
        """
        θ = self.θ_fid if θ is None else θ
        if method == "modes":
            return power_law_fisher(self.k[self.k > 0], θ)
        if method == "pixel":
            return self._pixel_fisher(θ)
        raise ValueError(f"method must be 'modes' or 'pixel', got {method!r}")

    def _pixel_fisher(self, θ: ArrayLike) -> np.ndarray:
        if self.N > self.pixel_fisher_max_N:
            raise ValueError(
                f"method='pixel' builds N²×N² matrices and is limited to "
                f"N <= {self.pixel_fisher_max_N}, got N = {self.N}; use method='modes'")
        n_pix = self.N ** 2
        a, da = self._amplitude_numpy(θ, "θ")
        basis = np.eye(n_pix).reshape(n_pix, self.N, self.N)
        columns, d_columns = _field_numpy(basis, a, da)  # column m of L is L e_m
        L = columns.reshape(n_pix, n_pix).T
        dL = np.moveaxis(d_columns.reshape(n_pix, n_pix, 2), -1, 0).transpose(0, 2, 1)
        Σ = L @ L.T
        dΣ = [dL_i @ L.T + L @ dL_i.T for dL_i in dL]
        # Σ and ∂Σ both annihilate the constant image u (1ᵀL = 1ᵀ∂L = 0: zero-mean
        # fields), so adding uuᵀ makes Σ invertible without changing the trace on
        # the zero-mean subspace.
        factor = scipy.linalg.cho_factor(Σ + np.full((n_pix, n_pix), 1.0 / n_pix))
        X = [scipy.linalg.cho_solve(factor, dΣ_i) for dΣ_i in dΣ]
        return 0.5 * np.array([[np.sum(X_i * X_j.T) for X_j in X] for X_i in X])


__all__ = [
    "AnalyticSimulator", "GaussianMeanVariance", "GaussianVariance",
    "GaussianRandomField", "power_law_fisher",
]
