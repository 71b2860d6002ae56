"""SIGTERM and SIGINT for the server's long-running commands: set a stop Event, safely.

A signal handler runs in the main thread between two bytecodes, also while that thread holds the
lock of the very Event it waits on (inside `Event.wait`); `Event.set` in the handler then waits for
that lock forever and the process ignores every later stop (the agent's form of this failed CI on
2026-12-03: agent/waker.py). The handler here only starts a thread that sets the Event once the
main thread has let go of the lock.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType


def stop_on_signals(stop: threading.Event, announce: Callable[[int], None] | None = None) -> None:
    """SIGTERM and SIGINT set `stop`, after `announce(signum)` if given (run in that thread, not in the handler)."""

    def set_stop(signum: int) -> None:
        if announce is not None:
            announce(signum)
        stop.set()

    def handler(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=set_stop, args=(signum,), name="stop-signal", daemon=True).start()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
