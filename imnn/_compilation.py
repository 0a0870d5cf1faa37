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
