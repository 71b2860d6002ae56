"""Evaluation periods in Asia/Shanghai calendar time.

The regulation evaluates the previous calendar year (art. 22); any other period is allowed for
the lab manager's own look. A period is a half-open range of local dates [start, end).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from server import clock
from server.store.times import TZ


@dataclass(frozen=True)
class Period:
    start: date
    end: date  # exclusive

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"period end {self.end} must be after its start {self.start}")

    @classmethod
    def year(cls, year: int) -> Period:
        return cls(date(year, 1, 1), date(year + 1, 1, 1))

    @classmethod
    def default(cls, now: datetime | None = None) -> Period:
        """The evaluation year: the calendar year before today's, in Asia/Shanghai."""
        today = now.astimezone(TZ).date() if now else clock.today()
        return cls.year(today.year - 1)

    @classmethod
    def parse(cls, text: str) -> Period:
        """'2025' or '2025-01-01..2025-07-01' (end exclusive)."""
        text = text.strip()
        if re.fullmatch(r"\d{4}", text):
            return cls.year(int(text))
        m = re.fullmatch(r"(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})", text)
        if not m:
            raise ValueError(f"period {text!r} is neither YYYY nor YYYY-MM-DD..YYYY-MM-DD")
        return cls(date.fromisoformat(m.group(1)), date.fromisoformat(m.group(2)))

    @property
    def label(self) -> str:
        if self.start.month == 1 and self.start.day == 1 and self.end == date(self.start.year + 1, 1, 1):
            return str(self.start.year)
        return f"{self.start.isoformat()}..{self.end.isoformat()}"

    @property
    def previous(self) -> Period:
        """The period of the same length just before this one (a year for a calendar year)."""
        if self.label.isdigit():
            return Period.year(self.start.year - 1)
        return Period(self.start - (self.end - self.start), self.start)

    @property
    def t0(self) -> datetime:
        return datetime.combine(self.start, datetime.min.time(), TZ)

    @property
    def t1(self) -> datetime:
        return datetime.combine(self.end, datetime.min.time(), TZ)

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    @property
    def last_day(self) -> date:
        return self.end - timedelta(days=1)


def year_fraction(first: date, end: date) -> float:
    """Σ over the days in [first, end) of 1 / (days in that day's year): the share of a yearly
    quota those days earn. A whole calendar year gives exactly 1.0, leap or not."""
    total = 0.0
    day = first
    while day < end:
        year_end = date(day.year + 1, 1, 1)
        stop = min(end, year_end)
        total += (stop - day).days / (year_end - date(day.year, 1, 1)).days
        day = stop
    return total


def local_iso(ts: datetime | None) -> str | None:
    """A timestamp as Asia/Shanghai ISO text, the time people in the region read."""
    return None if ts is None else ts.astimezone(TZ).isoformat()
