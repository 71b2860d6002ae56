"""Low use (art. 24) and duplicate-purchase review (查重评议, art. 23(三)).

Low use: evaluated instruments whose verified utilization is below a threshold; general-purpose
(通用) ones among them are candidates for reassignment (art. 24(二)), and units whose utilization
is below the threshold are to be summoned (art. 24(一)).

Duplicate review: for a proposed purchase (classification code, key specs, location), the
region's existing instruments of the same kind with their utilization and sharing, so the
reviewers see whether capacity already exists and is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from server.evaluation.indicators import Evaluation, InstrumentFigures, compute
from server.evaluation.period import Period
from server.store.conn import Conn

DEFAULT_LOW_USE = 0.2


@dataclass(frozen=True)
class LowUse:
    instrument_id: str
    unit_id: str
    name: str
    category: str
    utilization: float | None
    reassignable: bool

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def low_use(ev: Evaluation, threshold: float = DEFAULT_LOW_USE) -> tuple[list[LowUse], list[str]]:
    """(instruments below the threshold, units below it): from verified utilization."""
    items = []
    for f in sorted(ev.instruments.values(), key=lambda f: (f.unit_id, f.id)):
        u = f.utilization.verified
        if f.evaluated and f.rated_hours > 0 and (u or 0.0) < threshold:
            items.append(LowUse(f.id, f.unit_id, f.name, f.category, u, f.category == "通用"))
    units = [
        uid
        for uid, unit in sorted(ev.units.items())
        if unit.figures.evaluated and (unit.figures.utilization.verified or 0.0) < threshold
    ]
    return items, units


@dataclass(frozen=True)
class Candidate:
    figures: InstrumentFigures
    unit_name: str
    location: str
    region: str
    model: str
    specs: str
    match: str  # which of code / specs / location matched

    def as_dict(self) -> dict[str, Any]:
        f = self.figures
        return {
            "instrument_id": f.id,
            "name": f.name,
            "unit_id": f.unit_id,
            "unit_name": self.unit_name,
            "classification_code": f.classification_code,
            "model": self.model,
            "specs": self.specs,
            "location": self.location,
            "region": self.region,
            "utilization": f.utilization.as_dict(),
            "sharing": f.sharing.as_dict(),
            "running_hours": round(f.running.verified, 2),
            "external_hours": round(f.external.verified, 2),
            "match": self.match,
        }


def duplicate_review(
    conn: Conn,
    period: Period,
    *,
    classification_code: str,
    specs: str = "",
    location: str = "",
    code_prefix: int = 6,
) -> list[Candidate]:
    """Instruments of the same kind: same classification code prefix (default: the first 6 digits
    of the 8-digit national code, i.e. the same small class). Sorted: same location first, then
    spec keywords matched, then lowest utilization (spare capacity) first."""
    prefix = classification_code.strip()[:code_prefix]
    if not prefix:
        raise ValueError("a classification code is needed for the duplicate review")
    rows = conn.execute(
        "SELECT i.id, i.unit_id, u.name, i.location, u.region, i.model, i.specs FROM instruments i"
        " JOIN units u ON u.id = i.unit_id WHERE i.classification_code LIKE %s AND i.retired_on IS NULL",
        (prefix.replace("%", r"\%").replace("_", r"\_") + "%",),
    ).fetchall()
    if not rows:
        return []
    units = sorted({r[1] for r in rows})
    ev = compute(conn, period, units)
    words = [w.lower() for w in re.split(r"[\s,;，；、]+", specs) if w]
    out = []
    for iid, _unit, unit_name, loc, region, model, inst_specs in rows:
        text = f"{model} {inst_specs}".lower()
        matched = [w for w in words if w in text]
        where = bool(location) and (location in loc or location in region)
        match = "、".join(
            ["分类代码", *(["技术指标:" + " ".join(matched)] if matched else []), *(["同地区"] if where else [])]
        )
        out.append(Candidate(ev.instruments[iid], unit_name, loc, region, model, inst_specs, match))
    out.sort(
        key=lambda c: (
            not (location and (location in c.location or location in c.region)),
            -sum(w in f"{c.model} {c.specs}".lower() for w in words),
            c.figures.utilization.verified or 0.0,
            c.figures.id,
        )
    )
    return out
