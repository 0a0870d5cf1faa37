"""Argument types shared by the commands' parsers."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._errors import CommandError
from ._schema import BACKENDS  # noqa: F401 - re-exported for the commands' choices


def positive(text: str) -> int:
    """argparse type: a positive integer."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def add_cache_arguments(p) -> None:
    """``--compilation-cache DIR`` and ``--no-compilation-cache``."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--compilation-cache", type=Path, metavar="DIR",
                       help="keep JAX's compiled programs in DIR (default: "
                            "$IMNN_COMPILATION_CACHE, else ~/.cache/imnn/jax)")
    group.add_argument("--no-compilation-cache", action="store_true",
                       help="compile afresh and write no cache (also: "
                            "IMNN_COMPILATION_CACHE=off)")


def use_compilation_cache(args) -> Path | None:
    """Switch JAX's persistent compilation cache on as the options and the
    environment say.

    Args:
        args: the parsed options of ``add_cache_arguments``.

    Returns:
        The cache folder, or None when the cache is off.

    Raises:
        CommandError: the folder cannot be used.
    """
    import jax

    from imnn._compilation import cache_disabled_by_environment, enable_compilation_cache
    if args.no_compilation_cache or (args.compilation_cache is None
                                     and cache_disabled_by_environment()):
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    try:
        return enable_compilation_cache(args.compilation_cache)
    except ValueError as error:
        option = "--compilation-cache" if args.compilation_cache else "IMNN_COMPILATION_CACHE"
        raise CommandError(f"{option}: {str(error).removeprefix('path: ')}") from None
