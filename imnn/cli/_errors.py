"""The command line's error type and exit statuses."""
from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1   # a failure while running (a damaged file, a fit that broke)
EXIT_USAGE = 2   # a user's mistake: a bad config, a missing file, a wrong option


class CommandError(Exception):
    """A problem the user can fix: printed as one line on stderr, no traceback.

    Args:
        message: what is wrong and, where it helps, what to do.
        code: the exit status, ``EXIT_USAGE`` (2) or ``EXIT_ERROR`` (1).
    """

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


def one_line(error: BaseException) -> str:
    """A foreign exception as ``Type: first line of its message``."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")
