"""Published price lists (art. 12) against what units report: two pieces of evidence, never an
indicator. 服务收入 stays Σ amount of the period's external (130) service records (domain notes).

- Fee check: a service record's amount against the price list in force on its (local) start date:
  the record's own hours × the hourly rate, or its sample count × the per-sample (per-item) rate,
  at the internal rate for user type 120 and the external rate for 130. An instrument with several
  items gives several expected fees; the record agrees when its amount is within FEE_TOLERANCE of
  any, and otherwise the closest one is reported with the difference (amount − expected).
  The row in force for an item on day d is its latest `valid_from` ≤ d, unless its `valid_to` < d.
- Revenue at risk: measured external running time that no external service record covers
  (server/evaluation/reconciliation.py) × the instrument's external hourly rate. Where the rate
  changed during the period the lowest rate in force is used, so the estimate is never overstated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

from server.evaluation.indicators import params
from server.evaluation.period import Period, local_iso
from server.evaluation.sql import INST, records_in_period, rollup_tiles
from server.store.conn import Conn

if TYPE_CHECKING:  # reconciliation imports this module
    from server.evaluation.reconciliation import InstrumentUncovered

FEE_TOLERANCE = Decimal("1.00")  # 元: rounding of hours and amounts, not discounts
FEN = Decimal("0.01")
BASIS_LABELS = {"per_hour": "元/小时", "per_sample": "元/样", "per_item": "元/次"}

# Per service record of the period: the closest expected fee among the price items in force on its
# date, and the verdict ('ok', 'differs', 'no_price': no item with a rate and a quantity).
_REC_COLUMNS = """r.id, r.unit_id, r.instrument_id, r.record_no, r.start_at, r.service_hours, r.sample_count,
    r.amount, r.user_type, (r.start_at AT TIME ZONE 'Asia/Shanghai')::date AS d"""


def _checked(by_instrument: bool) -> str:
    """The verdict per record; `by_instrument` for one unit (sql.records_in_period)."""
    return f"""
WITH inst AS NOT MATERIALIZED ({INST}),
rec AS ({records_in_period(_REC_COLUMNS, by_instrument=by_instrument)}),{_CHECKED_TAIL}"""


# Only records of instruments with a price list are looked up (most instruments of a region publish
# none: their records are 'no_price' without a probe), and the closest fee is chosen among the
# priced rows only, ties by item, instead of sorting every record of the period.
_CHECKED_TAIL = """
priced_inst AS MATERIALIZED (SELECT DISTINCT q.instrument_id FROM price_list q),
expected AS (
    SELECT r.id AS rec_id, r.amount, p.item, p.basis,
           CASE WHEN r.user_type = 130 THEN p.external_price ELSE p.internal_price END AS rate,
           CASE WHEN p.basis = 'per_hour' THEN r.service_hours ELSE r.sample_count END AS qty
    FROM rec r
    CROSS JOIN LATERAL (
        SELECT DISTINCT ON (q.item) q.item, q.basis, q.internal_price, q.external_price, q.valid_to
        FROM price_list q
        WHERE q.instrument_id = r.instrument_id AND q.valid_from <= r.d
        ORDER BY q.item, q.valid_from DESC
    ) p
    WHERE r.instrument_id IN (SELECT instrument_id FROM priced_inst)
      AND (p.valid_to IS NULL OR p.valid_to >= r.d)
),
priced AS (
    SELECT e.*, round(e.rate * e.qty, 2) AS fee FROM expected e WHERE e.rate IS NOT NULL AND e.qty IS NOT NULL
),
best AS (
    SELECT DISTINCT ON (p.rec_id) p.rec_id, p.item, p.basis, p.rate, p.qty, p.fee, p.amount - p.fee AS diff
    FROM priced p
    ORDER BY p.rec_id, abs(p.amount - p.fee), p.item
),
verdict AS (
    SELECT r.*, b.item, b.basis, b.rate, b.qty, b.fee, b.diff,
           CASE WHEN b.fee IS NULL THEN 'no_price'
                WHEN abs(b.diff) <= %(fee_tol)s THEN 'ok' ELSE 'differs' END AS status
    FROM rec r LEFT JOIN best b ON b.rec_id = r.id
)
"""

_TOTALS_COLUMNS = """count(*) FILTER (WHERE status <> 'no_price'), count(*) FILTER (WHERE status = 'differs'),
       count(*) FILTER (WHERE status = 'no_price'), COALESCE(sum(diff) FILTER (WHERE status = 'differs'), 0)"""

# Per unit: how many records were checked, differ, had no applicable price; the summed difference.
FEE_TOTALS = f"""
{_checked(by_instrument=False)}
SELECT unit_id, {_TOTALS_COLUMNS}
FROM verdict GROUP BY unit_id
"""

# The same from migration 037's service totals: only records of instruments with a price list are
# checked one by one; those of the others (most of a region's) are 'no_price' and counted from the
# totals per calendar span, so the region's records are not read at all.
_PRICED_HEAD = f"""
WITH inst AS NOT MATERIALIZED ({INST}),
pinst AS MATERIALIZED (SELECT id FROM inst WHERE id IN (SELECT q.instrument_id FROM price_list q)),
rec AS ({records_in_period(_REC_COLUMNS, "pinst", by_instrument=True)}),{_CHECKED_TAIL},
unpriced AS (
    SELECT t.unit_id, sum(t.records) AS n
    FROM ({rollup_tiles("service_totals", "r.instrument_id, r.unit_id, r.records", "IN (SELECT id FROM inst)")}) t
    WHERE t.instrument_id NOT IN (SELECT instrument_id FROM priced_inst)
    GROUP BY 1
)"""
_PRICED_TOTALS = f"""
SELECT unit_id, sum(checked)::bigint, sum(differing)::bigint, sum(without)::bigint, sum(diff)
FROM (
    SELECT unit_id, {_TOTALS_COLUMNS} FROM verdict GROUP BY unit_id
    UNION ALL
    SELECT unit_id, 0, 0, n, 0 FROM unpriced
) z (unit_id, checked, differing, without, diff)
GROUP BY unit_id
"""
FEE_TOTALS_PRICED = _PRICED_HEAD + _PRICED_TOTALS

# One unit in one pass (its records read through the (instrument, start) index): per unit of the
# records, the totals of FEE_TOTALS, then one of its records whose fee differs, in FeeCheck's field
# order (NULLs when none differs), in the order of (unit, start, id).
_UNIT_DIFFERING = """
SELECT t.*, v.unit_id, v.instrument_id, v.record_no, v.start_at, v.user_type, v.service_hours, v.sample_count,
       v.item, v.basis, v.rate, v.qty, v.fee, v.amount, v.diff
FROM totals t LEFT JOIN verdict v ON v.unit_id = t.unit_id AND v.status = 'differs'
ORDER BY t.unit_id, v.start_at, v.id
"""
FEE_UNIT = f"""
{_checked(by_instrument=True)},
totals AS (SELECT unit_id, {_TOTALS_COLUMNS} FROM verdict GROUP BY unit_id)""" + _UNIT_DIFFERING
# The same with the totals of FEE_TOTALS_PRICED: only the records of instruments with a price list
# are read and checked (the others are 'no_price', counted from 037's service totals), as the
# region does; the differing records are among those checked.
FEE_UNIT_PRICED = f"""
{_PRICED_HEAD},
totals AS ({_PRICED_TOTALS})""" + _UNIT_DIFFERING

# Per instrument, the lowest and highest external hourly rate in force on some day of the period.
EXTERNAL_HOURLY = f"""
WITH inst AS NOT MATERIALIZED ({INST})
SELECT p.instrument_id, min(p.external_price), max(p.external_price)
FROM price_list p JOIN inst ON inst.id = p.instrument_id
WHERE p.basis = 'per_hour' AND p.external_price IS NOT NULL
  AND p.valid_from < %(end)s AND (p.valid_to IS NULL OR p.valid_to >= %(start)s)
  AND NOT EXISTS (
      SELECT 1 FROM price_list n
      WHERE n.instrument_id = p.instrument_id AND n.item = p.item
        AND n.valid_from > p.valid_from AND n.valid_from <= %(start)s
  )
GROUP BY p.instrument_id
"""


@dataclass
class FeeCheck:
    """A service record whose amount differs from the published price list."""

    unit_id: str
    instrument_id: str
    record_no: str
    start_at: datetime
    user_type: int
    service_hours: Decimal
    sample_count: int | None
    item: str
    basis: str
    rate: Decimal
    quantity: Decimal
    expected: Decimal
    amount: Decimal
    difference: Decimal  # amount − expected: > 0 charged above the list, < 0 below

    def as_dict(self) -> dict[str, Any]:
        return {
            "unit_id": self.unit_id,
            "instrument_id": self.instrument_id,
            "record_no": self.record_no,
            "start_at": local_iso(self.start_at),
            "user_type": self.user_type,
            "service_hours": str(self.service_hours),
            "sample_count": self.sample_count,
            "item": self.item,
            "basis": self.basis,
            "rate": str(self.rate),
            "quantity": str(self.quantity),
            "expected": str(self.expected),
            "amount": str(self.amount),
            "difference": str(self.difference),
        }


@dataclass
class UnitFees:
    unit_id: str
    checked: int = 0
    differing: int = 0
    without_price: int = 0
    difference: Decimal = Decimal("0.00")

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "differing": self.differing,
            "without_price": self.without_price,
            "difference": str(self.difference),
        }


@dataclass
class FeeChecks:
    tolerance: Decimal
    records: list[FeeCheck] = field(default_factory=list)  # listed for a single unit only
    units: dict[str, UnitFees] = field(default_factory=dict)


def check_fees(
    conn: Conn,
    period: Period,
    unit_ids: Sequence[str] | None = None,
    *,
    tolerance: Decimal = FEE_TOLERANCE,
    precomputed: bool = True,
) -> FeeChecks:
    """Service records of the period against the price lists; records listed for one unit only (a
    region gets per-unit totals, so memory stays bounded). `precomputed=False`: the records
    without a price list counted one by one (the reference for FEE_TOTALS_PRICED and
    FEE_UNIT_PRICED)."""
    p = params(period, unit_ids) | {"fee_tol": tolerance}
    out = FeeChecks(tolerance)
    for uid in unit_ids or ():
        out.units[uid] = UnitFees(uid)
    if unit_ids is not None and len(unit_ids) == 1:
        seen: set[str] = set()
        unit_sql = FEE_UNIT_PRICED if precomputed else FEE_UNIT
        for uid, checked, differing, without, diff, *record in conn.execute(unit_sql, p).fetchall():
            if uid not in seen:  # the unit's first row
                seen.add(uid)
                out.units[uid] = UnitFees(uid, checked, differing, without, Decimal(diff).quantize(FEN))
            if record[0] is not None:
                out.records.append(FeeCheck(*record))
        return out
    for uid, checked, differing, without, diff in conn.execute(FEE_TOTALS_PRICED if precomputed else FEE_TOTALS, p):
        out.units[uid] = UnitFees(uid, checked, differing, without, Decimal(diff).quantize(FEN))
    return out


@dataclass
class RevenueAtRisk:
    """Measured external hours without a service record, priced at the external hourly rate."""

    unit_id: str
    instrument_id: str
    uncovered_verified: float
    uncovered_unverified: float
    rate: Decimal | None  # lowest external hourly rate in force during the period; None: no price
    rate_changed: bool = False

    @property
    def estimate_verified(self) -> Decimal | None:
        return None if self.rate is None else _money(self.rate * Decimal(str(round(self.uncovered_verified, 4))))

    @property
    def estimate_all(self) -> Decimal | None:
        hours = Decimal(str(round(self.uncovered_verified + self.uncovered_unverified, 4)))
        return None if self.rate is None else _money(self.rate * hours)

    def as_dict(self) -> dict[str, Any]:
        return {
            "unit_id": self.unit_id,
            "instrument_id": self.instrument_id,
            "uncovered_verified": round(self.uncovered_verified, 4),
            "uncovered_unverified": round(self.uncovered_unverified, 4),
            "external_hourly_rate": None if self.rate is None else str(self.rate),
            "rate_changed": self.rate_changed,
            "estimate_verified": None if self.estimate_verified is None else str(self.estimate_verified),
            "estimate_all": None if self.estimate_all is None else str(self.estimate_all),
        }


def _money(v: Decimal) -> Decimal:
    return v.quantize(FEN, ROUND_HALF_UP)


def revenue_at_risk(conn: Conn, period: Period, uncovered: Sequence[InstrumentUncovered]) -> list[RevenueAtRisk]:
    """Per instrument with uncovered external hours (reconciliation.InstrumentUncovered items):
    the estimate of the service revenue that no service record declares."""
    items = [u for u in uncovered if u.uncovered_verified + u.uncovered_unverified > 0]
    if not items:
        return []
    units = sorted({u.unit_id for u in items})
    rates = {r[0]: (r[1], r[2]) for r in conn.execute(EXTERNAL_HOURLY, params(period, units))}
    out = []
    for u in items:
        lo, hi = rates.get(u.instrument_id, (None, None))
        out.append(
            RevenueAtRisk(u.unit_id, u.instrument_id, u.uncovered_verified, u.uncovered_unverified, lo, lo != hi)
        )
    return out


def total(items: Sequence[RevenueAtRisk], verified_only: bool = True) -> Decimal:
    """Σ estimate over the instruments that have an external hourly rate."""
    values = [i.estimate_verified if verified_only else i.estimate_all for i in items]
    return sum((v for v in values if v is not None), Decimal("0.00"))
