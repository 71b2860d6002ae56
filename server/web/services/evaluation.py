"""The web's view of the evaluation code (server/evaluation): period parsing with a person-readable
error, the configured rubric, and the reports the pages and the API both serve."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

from server.config import WebSettings
from server.evaluation import report, review, rubric
from server.evaluation.indicators import compute
from server.evaluation.period import Period
from server.exports import closing
from server.registry import proposals
from server.store.conn import Conn
from server.web.errors import ApiError
from server.web.scope import pseudonymizer
from server.web.services import figures

log = logging.getLogger(__name__)


def period_of(text: str) -> Period:
    try:
        return Period.parse(text)
    except ValueError as exc:
        raise ApiError(422, "bad_period", "err.bad_period", detail=str(exc),
                       fields=[{"field": "period", "in": "path", "message": str(exc)}]) from None


def rubric_of(settings: WebSettings) -> rubric.Rubric:
    return rubric.load(Path(settings.rubric_path) if settings.rubric_path else None)


def unit_report(conn: Conn, settings: WebSettings, period: Period, unit_id: str,
                rows: int | None = None, offset: int = 0) -> report.Report:
    """The unit's report; for a closed period the snapshot's, with the amendment beside it. `rows`
    (an open period): the long per-record lists hold only `rows` rows from the `offset`-th
    (report.unit_report), as a page draws them."""
    snap = closing.current(conn, period.label)
    if snap is not None:
        try:
            return closing.unit_view(conn, snap, unit_id)
        except LookupError:
            raise ApiError(404, "not_found", "err.not_found", what="unit", id=unit_id) from None
        except closing.SnapshotAltered:
            log.error("closed period %s: the stored report of unit %s fails its signed hash", period.label, unit_id)
            raise ApiError(500, "snapshot_altered", "err.snapshot_altered", period=period.label) from None
    # an open period: with the registry changes the unit proposed and the operator accepted, and the
    # figures both ways while proposals are open (nothing when there are none)
    rep = report.unit_report(conn, period, unit_id, rubric_of(settings), pseudonymizer(conn), rows=rows,
                             offset=offset)
    both = figures_both_ways(conn, settings, period, unit_id, first=rep)
    changes = accepted_changes(conn, settings, period, unit_id)
    rep.tables.extend(figures.tables(pseudonymizer(conn), both, changes))
    return rep


def indicators_of(rep: report.Report) -> dict[str, Any]:
    """The unit's indicators: `as_dict()["unit"]["indicators"]` without converting every table of the
    report (37,000 rows for a unit of a region: 2.3 s) to get them."""
    out: dict[str, Any] = rep.data["unit"]["indicators"]
    return out


class ShownRows(Sequence[dict[str, Any]]):
    """A table's rows for a page: its length is the table's, but only the first rows, the ones a
    page draws, are converted (and kept)."""

    def __init__(self, shown: list[dict[str, Any]], total: int) -> None:
        self.shown = shown
        self.total = total

    def __len__(self) -> int:
        return self.total

    def __eq__(self, other: object) -> bool:  # the shared cache checks a stored view comes back equal
        if isinstance(other, ShownRows):
            return self.total == other.total and self.shown == other.shown
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, as a list

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, i: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, i: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(i, slice):
            _start, stop, step = i.indices(self.total)
            if stop > len(self.shown) and step > 0:
                raise IndexError("only the first rows of this table were converted for the page")
            return self.shown[i]
        if not -self.total <= i < len(self.shown):
            raise IndexError("only the first rows of this table were converted for the page")
        return self.shown[i]


def page_view(rep: report.Report, max_rows: int, whole: tuple[str, ...] = ()) -> dict[str, Any]:
    """`rep.as_dict()` for a page that draws at most `max_rows` of each table (but all of those in
    `whole`): the same structure and values, without converting rows no page shows; the XLSX and
    the JSON API still carry every row."""
    if type(rep).as_dict is not report.Report.as_dict:
        return rep.as_dict()  # a report with a JSON of its own (a closed period's, stored already converted)
    light = report.Report(rep.title, rep.period, rep.generated_at, rep.summary, [], rep.data)
    out = light.as_dict()
    for t in rep.tables:
        total = len(t.rows) if t.total is None else t.total  # a table built for a page holds its first rows
        if t.key in whole or total <= max_rows:  # every row (a page's table then holds them all)
            out["tables"][t.key] = report.Table(t.key, t.title, t.columns, t.rows, t.notes).as_dict()
            continue
        head = report.Table(t.key, t.title, t.columns, t.rows[:max_rows], t.notes).as_dict()
        head["rows"] = ShownRows(head["rows"], total)
        out["tables"][t.key] = head
    return out


def _indicators(settings: WebSettings, period: Period, unit_id: str) -> figures.Indicators:
    def of(conn: Conn) -> dict[str, Any]:  # the indicators only: no list's rows (rows=0)
        return indicators_of(report.unit_report(conn, period, unit_id, rubric_of(settings), pseudonymizer(conn),
                                                rows=0))

    return of


def figures_both_ways(conn: Conn, settings: WebSettings, period: Period, unit_id: str,
                      first: report.Report | None = None) -> dict[str, Any]:
    """The unit's indicators as accepted and as proposed (services/figures.py)."""
    if first is not None and not proposals.listing(conn, [unit_id], "pending"):
        indicators = indicators_of(first)
        return {"as_accepted": indicators, "as_proposed": indicators, "pending": []}
    return figures.both_ways(conn, _indicators(settings, period, unit_id), unit_id)


def accepted_changes(conn: Conn, settings: WebSettings, period: Period, unit_id: str) -> list[dict[str, Any]]:
    """The unit's accepted registry changes with their effect on each indicator."""
    return figures.accepted_effects(conn, _indicators(settings, period, unit_id), unit_id)


def region_report(conn: Conn, settings: WebSettings, period: Period, *, sample_size: int = 50,
                  seed: int | None = None) -> report.Report:
    """The region's report; for a closed period the snapshot's (its spot-check sample as drawn at
    closing), with the amendment beside it."""
    snap = closing.current(conn, period.label)
    if snap is not None:
        try:
            return closing.region_view(conn, snap)
        except closing.SnapshotAltered:
            log.error("closed period %s: the stored region report fails its signed hash", period.label)
            raise ApiError(500, "snapshot_altered", "err.snapshot_altered", period=period.label) from None
    return report.region_report(region(conn, settings, period, sample_size=sample_size, seed=seed))


def require_open(conn: Conn, period: Period) -> None:
    """Changes that move a period's grades (expert scores) wait until a closed period is reopened."""
    if closing.current(conn, period.label, with_payload=False) is not None:
        raise ApiError(409, "period_closed", "err.period_closed", period=period.label)


def region(conn: Conn, settings: WebSettings, period: Period, *, sample_size: int = 50,
           seed: int | None = None) -> report.RegionResult:
    """All units; the spot-check sample is weighted and reproducible (default seed: the period's year)."""
    return report.evaluate_region(conn, period, rubric_of(settings), pseudonymizer(conn), sample_size=sample_size,
                                  seed=seed)


def low_use(conn: Conn, period: Period, threshold: float) -> dict[str, Any]:
    items, units = review.low_use(compute(conn, period), threshold)
    return {"threshold": threshold, "instruments": [i.as_dict() for i in items], "units": units}
