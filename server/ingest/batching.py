"""Batches that cost a live envelope no waiting: the database thread takes, at once, everything
opened since its last transaction.

Before, the open thread waited up to `batch_max_wait_ms` for a batch to fill before handing it
over. At the rate of a real fleet (5,000 instruments with a 300 s heartbeat: ~17 envelopes/s)
almost every envelope waited the full time for nothing. Here the open thread opens each message
as it arrives and leaves it in a `Handoff`; the database thread takes all that is there (up to
the batch limits) whenever it is free. A lone envelope goes straight into its own transaction;
while a transaction runs, whatever arrives meanwhile gathers into the next one, so batches grow
with the load (a burst of state changes is a few transactions, not one per envelope) and a
backlog still fills batches to their limits. Arrival order is kept.
"""

from __future__ import annotations

import threading
from collections import deque

from server.ingest.verify import Incoming, Opening, Refused

Opened = tuple[Incoming, Opening | Refused]


class Handoff:
    """Opened messages between the open thread and the database thread.

    `put` blocks while `capacity_messages` messages or `capacity_bytes` payload bytes are waiting
    (the database is behind: the broker's queue, not this process's memory, holds the rest).
    `take` returns every waiting message in arrival order, up to `max_messages` and `max_bytes`
    (always at least one), or nothing after `timeout` seconds.
    """

    def __init__(self, *, max_messages: int, max_bytes: int, capacity_messages: int, capacity_bytes: int) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.capacity_messages = capacity_messages
        self.capacity_bytes = capacity_bytes
        self._items: deque[Opened] = deque()
        self._bytes = 0
        self._cv = threading.Condition()

    def __len__(self) -> int:
        with self._cv:
            return len(self._items)

    def put(self, item: Opened, stop: threading.Event) -> bool:
        """Leave one opened message; False if `stop` was set while waiting for room."""
        size = len(item[0].payload)
        with self._cv:
            while self._items and (len(self._items) >= self.capacity_messages
                                   or self._bytes + size > self.capacity_bytes):
                if stop.is_set():
                    return False
                self._cv.wait(0.2)
            self._items.append(item)
            self._bytes += size
            self._cv.notify_all()
        return True

    def take(self, timeout: float) -> list[Opened]:
        with self._cv:
            if not self._items:
                self._cv.wait(timeout)
            out: list[Opened] = []
            size = 0
            while self._items and len(out) < self.max_messages:
                n = len(self._items[0][0].payload)
                if out and size + n > self.max_bytes:
                    break
                out.append(self._items.popleft())
                size += n
            self._bytes -= size
            if out:
                self._cv.notify_all()
            return out
