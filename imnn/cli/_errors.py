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
