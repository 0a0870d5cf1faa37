"""SIGINT and SIGTERM: stop a fit at the end of the running chunk of iterations."""
from __future__ import annotations

import contextlib
import signal
import threading


class StopRequest:
    """SIGINT (Ctrl-C) and SIGTERM handlers for the main thread.

    The first signal asks the fit to stop: ``check``, called by the fit's
    callback at the end of each chunk of iterations once those are committed,
    raises KeyboardInterrupt, so the interrupted fit keeps them and a checkpoint
    can be written. A second signal raises KeyboardInterrupt at once.

    Attributes:
        signal: the number of the first signal received, or None.
    """

    def __init__(self):
        self.signal = None

    def __call__(self, signum, frame):
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum

    @contextlib.contextmanager
    def installed(self):
        """Install the handlers for the body of a ``with`` (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {s: signal.signal(s, self) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)

    def check(self) -> None:
        """Raise KeyboardInterrupt if a signal has asked the fit to stop."""
        if self.signal is not None:
            raise KeyboardInterrupt

    @property
    def name(self) -> str:
        """The received signal's name (``"SIGTERM"``)."""
        return signal.Signals(self.signal).name
