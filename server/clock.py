"""The one "now" that every rule reads.

Rules that depend on the date — trend spans, rated hours of a running period, registration
deadlines, the default evaluation period, session expiry, plausibility windows, lock-outs — ask
this module, never `datetime.now()` / `date.today()`, so a test (or an operator replaying a past
day) sets "now" once for the whole process and every rule agrees. Timing of I/O (timeouts,
latencies, back-off) is not a rule and keeps using `time.monotonic()`.

`JISHI_NOW` (ISO 8601 with an offset, e.g. `2026-03-01T09:00:00+08:00`) starts a process with a
clock that reads that instant and then advances with real time, which is how the date sweep runs
server subprocesses "on" a given day.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta

from server.store.times import TZ, dt_to_ms


class Clock:
    """Wall-clock time shifted by a fixed offset (zero for the real clock), optionally frozen."""

    def __init__(self, offset: timedelta = timedelta(0), frozen: datetime | None = None) -> None:
        self.offset = offset
        self.frozen = frozen

    def now(self) -> datetime:
        if self.frozen is not None:
            return self.frozen
        return datetime.fromtimestamp(time.time(), UTC) + self.offset


def _from_env() -> Clock:
    text = os.environ.get("JISHI_NOW", "").strip()
    if not text:
        return Clock()
    start = datetime.fromisoformat(text)
    if start.tzinfo is None:
        raise ValueError(f"JISHI_NOW={text!r} needs a UTC offset, e.g. 2026-03-01T09:00:00+08:00")
    return Clock(offset=start - datetime.fromtimestamp(time.time(), UTC))


_clock = _from_env()


def now() -> datetime:
    """The current instant, timezone-aware (UTC)."""
    return _clock.now()


def now_ms() -> int:
    """The current instant in UTC milliseconds, as records and acks carry it."""
    return dt_to_ms(_clock.now())


def today() -> date:
    """Today's date in Asia/Shanghai, the calendar every indicator is counted in."""
    return _clock.now().astimezone(TZ).date()


@contextmanager
def frozen_at(instant: datetime) -> Iterator[datetime]:
    """Make every rule in this process see `instant` as now until the block ends (tests)."""
    global _clock
    if instant.tzinfo is None:
        raise ValueError("frozen_at needs a timezone-aware datetime")
    previous, _clock = _clock, Clock(frozen=instant)
    try:
        yield instant
    finally:
        _clock = previous


@contextmanager
def running_from(instant: datetime) -> Iterator[datetime]:
    """Like `frozen_at`, but the clock keeps ticking from `instant` (for tests with live servers)."""
    global _clock
    if instant.tzinfo is None:
        raise ValueError("running_from needs a timezone-aware datetime")
    previous = _clock
    _clock = Clock(offset=instant - datetime.fromtimestamp(time.time(), UTC))
    try:
        yield instant
    finally:
        _clock = previous
