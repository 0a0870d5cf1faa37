"""Argument types shared by the commands' parsers."""
from __future__ import annotations

import argparse

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
