"""The web's view of the evaluation code (server/evaluation): period parsing with a person-readable
error, the configured rubric, and the reports the pages and the API both serve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server.config import WebSettings
from server.evaluation import report, review, rubric
from server.evaluation.indicators import compute
from server.evaluation.period import Period
from server.store.conn import Conn
from server.web.errors import ApiError
from server.web.scope import pseudonymizer


def period_of(text: str) -> Period:
    try:
        return Period.parse(text)
    except ValueError as exc:
        raise ApiError(422, "bad_period", "err.bad_period", detail=str(exc),
                       fields=[{"field": "period", "in": "path", "message": str(exc)}]) from None


def rubric_of(settings: WebSettings) -> rubric.Rubric:
    return rubric.load(Path(settings.rubric_path) if settings.rubric_path else None)


def unit_report(conn: Conn, settings: WebSettings, period: Period, unit_id: str) -> report.Report:
    return report.unit_report(conn, period, unit_id, rubric_of(settings), pseudonymizer(conn))


def region(conn: Conn, settings: WebSettings, period: Period, *, sample_size: int = 50,
           seed: int | None = None) -> report.RegionResult:
    """All units; the spot-check sample is weighted and reproducible (default seed: the period's year)."""
    return report.evaluate_region(conn, period, rubric_of(settings), pseudonymizer(conn), sample_size=sample_size,
                                  seed=seed)


def low_use(conn: Conn, period: Period, threshold: float) -> dict[str, Any]:
    items, units = review.low_use(compute(conn, period), threshold)
    return {"threshold": threshold, "instruments": [i.as_dict() for i in items], "units": units}
