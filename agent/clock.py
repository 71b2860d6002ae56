"""Wall clock and monotonic clock, and the detection of wall-clock jumps between them.

`t` in records is the wall clock (UTC ms) because that is what people and evaluators read; `mono`
(ms since this agent boot) cannot jump, so comparing the two deltas at every tick reveals NTP
corrections and users changing the clock. A wall clock outside the protocol's window (dead CMOS
battery: 1970 or 2000) would make records invalid, so `t` then advances from the last sane
reading by the monotonic clock instead, and the runner records that.
"""

from __future__ import annotations

import time

MIN_T = 1_577_836_800_000  # == protocols.records.MIN_T (pydantic-free copy; a test keeps them equal)
MAX_T = 4_102_444_800_000  # == protocols.records.MAX_T


class Clock:
    def __init__(self, jump_ms: int, last_t: int = 0) -> None:
        self.jump_ms = jump_ms
        self._mono0 = time.monotonic_ns()
        self._anchor_t = max(last_t, MIN_T)
        self._anchor_mono = 0
        self.wall_invalid = False
        self._check_wall = self._wall()
        self._check_mono = 0

    @staticmethod
    def _wall() -> int:
        return time.time_ns() // 1_000_000

    def mono(self) -> int:
        return (time.monotonic_ns() - self._mono0) // 1_000_000

    def now(self) -> tuple[int, int]:
        """(t, mono) for a record: t is UTC ms and always within the protocol's window."""
        mono = self.mono()
        wall = self._wall()
        if MIN_T <= wall <= MAX_T:
            self.wall_invalid = False
            self._anchor_t, self._anchor_mono = wall, mono
            return wall, mono
        self.wall_invalid = True
        return min(self._anchor_t + (mono - self._anchor_mono), MAX_T), mono

    def check_jump(self) -> tuple[int, int] | None:
        """(jump_ms, wall_now) when the wall clock moved by more than `jump_ms` against mono."""
        mono = self.mono()
        wall = self._wall()
        drift = (wall - self._check_wall) - (mono - self._check_mono)
        self._check_wall, self._check_mono = wall, mono
        if abs(drift) > self.jump_ms:
            return drift, wall
        return None
