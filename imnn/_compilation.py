"""JAX's persistent compilation cache, switched on for imnn's fits.

Compiling the fit step, the statistics and the validation pass takes most of a
short run's time. With the cache on, a later process on the same machine with
the same shapes, dtypes and JAX version loads the compiled programs from disk
instead of compiling them again.
"""
from __future__ import annotations

import os
from pathlib import Path

ENVIRONMENT_VARIABLE = "IMNN_COMPILATION_CACHE"
_OFF = {"0", "off", "false", "no", "none", ""}


def default_cache_dir() -> Path:
    """The cache folder used when none is given.

    Returns:
        ``$IMNN_COMPILATION_CACHE`` when it names a folder, otherwise
        ``$XDG_CACHE_HOME/imnn/jax`` (``~/.cache/imnn/jax`` when
        ``XDG_CACHE_HOME`` is unset).
    """
    named = os.environ.get(ENVIRONMENT_VARIABLE)
    if named is not None and named.strip().lower() not in _OFF:
        return Path(named).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "imnn" / "jax"


def cache_disabled_by_environment() -> bool:
    """Whether ``IMNN_COMPILATION_CACHE`` is set to ``0``, ``off``, ``false`` or ``no``."""
    named = os.environ.get(ENVIRONMENT_VARIABLE)
    return named is not None and named.strip().lower() in _OFF


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path:
    """Switch on JAX's persistent compilation cache for this process.

    Every program JAX compiles from now on (imnn's or the user's) is written to
    ``path`` and read back by later processes that compile the same program.
    Call it once, before the first fit; calling it again with another path
    moves the cache.

    Args:
        path: the cache folder, created if missing. ``None``: the folder named
            by ``$IMNN_COMPILATION_CACHE``, else ``~/.cache/imnn/jax``.

    Returns:
        The absolute path of the cache folder.

    Raises:
        ValueError: ``path`` exists and is not a folder, or cannot be created.
    """
    import jax

    folder = Path(path).expanduser() if path is not None else default_cache_dir()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"path: the compilation cache {str(folder)!r} exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"path: cannot create the compilation cache folder {str(folder)!r}: "
                         f"{error.strerror or error}") from None
    folder = folder.resolve()
    jax.config.update("jax_compilation_cache_dir", str(folder))
    # imnn's programs compile in well under JAX's default threshold of one second
    # each on small problems, yet together they are most of a short run: keep them all.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    try:  # the cache may already be initialised in this process with another folder
        from jax.experimental.compilation_cache import compilation_cache
        compilation_cache.reset_cache()
    except (ImportError, AttributeError):
        pass
    return folder


# --- compiler options of imnn's programs ------------------------------------------------
# xla_backend_optimization_level 2 (LLVM -O2 instead of -O3), measured on imnn's
# fit programs on a CPU (docs/performance/compilation.md, bench/bench_compile.py):
# the threefry random bits of every simulator-based program took 1.4-1.7 CPU s
# to compile at -O3 and 0.3 s at -O2, and no fit step ran slower (their time is
# in matrix products, library calls either way). XLA's classic loop emitters
# (xla_cpu_use_fusion_emitters off) compiled a dense fit step in two thirds of
# the time too, but ran the aggregated finite-difference step 3x slower: not used.
# An XLA that does not know an option gets its defaults.
CPU_OPTIONS = {"xla_backend_optimization_level": 2}
_supported: dict[str, bool] = {}


def compiler_options(platform: str | None = None) -> dict | None:
    """XLA compiler options for imnn's compiled programs on ``platform``.

    Args:
        platform: ``"cpu"``, ``"gpu"``, ...; ``None``: JAX's default backend.

    Returns:
        A dict for ``jax.jit(..., compiler_options=...)``, or ``None`` where
        imnn changes nothing (accelerators, or an XLA without the options, or
        ``IMNN_XLA_DEFAULTS=1`` in the environment).
    """
    import jax

    if os.environ.get("IMNN_XLA_DEFAULTS", "").strip().lower() not in _OFF:
        return None
    platform = platform or jax.default_backend()
    if platform != "cpu":
        return None
    if platform not in _supported:
        _supported[platform] = _accepted(CPU_OPTIONS)
    return dict(CPU_OPTIONS) if _supported[platform] else None


def _accepted(options: dict) -> bool:
    """Whether this XLA knows every option (an unknown one fails the compile)."""
    import jax
    import numpy as np

    try:
        jax.jit(lambda x: x + 1, compiler_options=options).lower(np.float32(0)).compile()
    except Exception:  # noqa: BLE001 - any failure means: leave XLA's defaults
        return False
    return True
