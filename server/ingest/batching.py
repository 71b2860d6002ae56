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

One wait is left: a batch waits for messages still coming less than `gap_s` apart, up to
`linger_s` after its first message arrived, so messages sent together (a reconnecting agent's
birth and spool, several envelopes of one agent) are judged in one transaction, sorted by seq, as
when every batch waited `batch_max_wait_ms` to fill; a lone heartbeat waits `gap_s` (10 ms by
default) instead, and a batch that gathered during a transaction has usually waited long enough.
"""

from __future__ import annotations

import threading
import time
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
        self._items: deque[tuple[float, Opened]] = deque()  # (when it came, message)
        self._bytes = 0
        self._last_put = 0.0
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
            self._last_put = time.monotonic()
            self._items.append((self._last_put, item))
            self._bytes += size
            self._cv.notify_all()
        return True

    def take(self, timeout: float, *, linger_s: float = 0.0, gap_s: float = 0.0) -> list[Opened]:
        """What is waiting (or the first message to come within `timeout`), once messages have
        stopped coming `gap_s` apart or `linger_s` after the first of them came."""
        with self._cv:
            if not self._items:
                self._cv.wait(timeout)
            if self._items:
                deadline = self._items[0][0] + linger_s
                while len(self._items) < self.max_messages and self._bytes < self.max_bytes:
                    left = min(deadline, self._last_put + gap_s) - time.monotonic()
                    if left <= 0:
                        break
                    self._cv.wait(left)
            out: list[Opened] = []
            size = 0
            while self._items and len(out) < self.max_messages:
                n = len(self._items[0][1][0].payload)
                if out and size + n > self.max_bytes:
                    break
                out.append(self._items.popleft()[1])
                size += n
            self._bytes -= size
            if out:
                self._cv.notify_all()
            return out
