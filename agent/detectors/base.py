"""The one interface every detector implements, and the observation it returns.

A detector answers one question per poll: what does my signal say about the instrument now?
It never raises for device trouble: a timeout, garbage or a missing port is an observation with
verdict `unknown` and an `error`. The runner still guards `poll` so a bug becomes the same thing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal, Protocol

Verdict = Literal["off", "idle", "running", "fault", "unknown"]
VERDICTS: tuple[Verdict, ...] = ("off", "idle", "running", "fault", "unknown")
Scalar = int | str | bool | None


@dataclass(frozen=True)
class Observation:
    """What one poll saw: a verdict, the evidence behind it (scalar ints/str/bool) and any error."""

    verdict: Verdict
    evidence: dict[str, Scalar] = field(default_factory=dict)
    error: str | None = None

    @classmethod
    def failed(cls, error: str, **evidence: Scalar) -> Observation:
        return cls("unknown", {**evidence, "err": error[:200]}, error[:200])


class Detector(Protocol):
    """A source of evidence about the instrument's state.

    `senses_power`: whether the verdict can tell `off` from `idle` (a file watcher cannot).
    `summary_keys`: integer evidence keys whose min/max/avg go into heartbeats.
    """

    name: str
    kind: str
    senses_power: bool
    summary_keys: tuple[str, ...]

    def poll(self, now: float) -> Observation: ...

    def close(self) -> None: ...


class RateLimit:
    """Lets an action through at most once per `period` seconds (e.g. reopening a serial port), by
    the `now` the detector's poll was given (the runner's monotonic clock) or, without one, by
    time.monotonic()."""

    def __init__(self, period: float) -> None:
        self.period = period
        self._last = -float("inf")

    def ready(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if now - self._last >= self.period:
            self._last = now
            return True
        return False

    def reset(self) -> None:
        self._last = -float("inf")
