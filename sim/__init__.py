"""Simulated devices and schedules, with ground truth, for tests, benchmarks and demos.

- `serial_instrument.SerialInstrument`: an instrument answering status queries on a pty.
- `modbus_meter.ModbusMeter`: a Modbus RTU power meter (slave side) on a pty; `ModbusBus`:
  several meters, one address each, on one pty (an RS-485 bus, as a gateway reads it).
- `control_software.ControlSoftware`: a fake control-software process whose acquisition runs
  start and stop on command (a child process that uses CPU and writes a data file).
- `Schedule` / `ScheduleDriver`: a scripted schedule of runs that switches the devices and
  records when each switch really happened (the ground truth the agent is judged against).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Schedule:
    """Runs as (start, end) offsets in seconds from the schedule's start."""

    runs: Sequence[tuple[float, float]]

    def __post_init__(self) -> None:
        last = 0.0
        for start, end in self.runs:
            if not last <= start < end:
                raise ValueError(f"runs must be ordered and non-overlapping: {self.runs}")
            last = end

    @property
    def duration(self) -> float:
        return self.runs[-1][1] if self.runs else 0.0

    def running_at(self, offset: float) -> bool:
        return any(start <= offset < end for start, end in self.runs)


@dataclass
class ScheduleDriver:
    """Plays a schedule in a thread: calls `start_run()` / `end_run()` at the scripted offsets and
    keeps the wall-clock ms at which each call happened (`truth`: list of (start_ms, end_ms))."""

    schedule: Schedule
    start_run: Callable[[], None]
    end_run: Callable[[], None]
    truth: list[tuple[int, int]] = field(default_factory=list)
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._play, name="schedule", daemon=True)
        self._thread.start()

    def _play(self) -> None:
        t0 = time.monotonic()
        for start, end in self.schedule.runs:
            if self._stop.wait(max(0.0, t0 + start - time.monotonic())):
                return
            self.start_run()
            began = time.time_ns() // 1_000_000
            if self._stop.wait(max(0.0, t0 + end - time.monotonic())):
                return
            self.end_run()
            self.truth.append((began, time.time_ns() // 1_000_000))

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def stop(self) -> None:
        self._stop.set()
        self.join(5)
