"""The regulation's time zone and the conversions between stored instants and datetimes.

Records carry UTC milliseconds; PostgreSQL stores timestamptz; packs and bundles store receive
times as microseconds since 1970 UTC. Every conversion happens here so that rounding is the same
everywhere.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

TZ_NAME = "Asia/Shanghai"
TZ = ZoneInfo(TZ_NAME)  # every indicator is counted in this calendar
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ms_to_dt(ms: int, tz: ZoneInfo | None = None) -> datetime:
    """UTC milliseconds as an aware datetime (in UTC, or in `tz`)."""
    return datetime.fromtimestamp(ms / 1000, tz or UTC)


def s_to_dt(s: float) -> datetime:
    """A receive time as `time.time()` gives it (float seconds) as an aware UTC datetime."""
    return datetime.fromtimestamp(s, UTC)


def s_to_ms(s: float) -> int:
    """Float seconds since 1970 UTC as UTC milliseconds (truncated)."""
    return int(s * 1000)


def dt_to_ms(dt: datetime) -> int:
    """An aware datetime as UTC milliseconds, computed as ingest always has (derivation depends on it)."""
    return int(dt.timestamp() * 1000)


def us_to_dt(us: int) -> datetime:
    """Microseconds since 1970 UTC (packs, bundles) as an aware UTC datetime, exactly."""
    return EPOCH + timedelta(microseconds=us)


def dt_to_us(dt: datetime) -> int:
    """An aware datetime as microseconds since 1970 UTC, exactly."""
    return (dt - EPOCH) // timedelta(microseconds=1)
