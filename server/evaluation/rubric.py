"""Grades from a configurable rubric (weights, curves, thresholds are the evaluators' to set).

A rubric is a TOML file (see rubrics/default.toml): criteria scored from indicators through
piecewise-linear curves or entered by experts, grade thresholds, subsidy coefficients. Experts may
override any criterion with a note; the sheet keeps both the computed and the final points.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from server.evaluation.indicators import Aggregate, UnitIndicators
from server.store.conn import Conn

INDICATORS = ("open_rate", "utilization", "utilization_mean", "sharing", "revenue", "service_cases")
FAILED = "不合格"


class Criterion(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    label: str
    group: str
    kind: Literal["indicator", "expert"]
    max_points: float = Field(gt=0)
    indicator: Literal["open_rate", "utilization", "utilization_mean", "sharing", "revenue", "service_cases"] | None = (
        None
    )
    curve: list[tuple[float, float]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Criterion:
        if self.kind == "indicator":
            if self.indicator is None or len(self.curve) < 2:
                raise ValueError(
                    f"criterion {self.key}: an indicator criterion needs `indicator` and a curve of >= 2 points"
                )
            xs = [x for x, _ in self.curve]
            if xs != sorted(xs) or len(set(xs)) != len(xs):
                raise ValueError(f"criterion {self.key}: curve x values must increase")
            if any(not 0 <= y <= self.max_points for _, y in self.curve):
                raise ValueError(f"criterion {self.key}: curve points must lie within 0..max_points")
        return self

    def points(self, value: float | None) -> float:
        """Piecewise-linear through the curve, clamped at both ends; no value scores 0."""
        if value is None:
            return 0.0
        pts = self.curve
        if value <= pts[0][0]:
            return pts[0][1]
        for (x0, y0), (x1, y1) in itertools.pairwise(pts):
            if value <= x1:
                return y0 + (y1 - y0) * (value - x0) / (x1 - x0)
        return pts[-1][1]


class Rubric(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    basis: Literal["verified", "including_unverified"] = "verified"
    grades: dict[str, float]
    subsidy: dict[str, str] = Field(default_factory=lambda: {"优秀": "0.20", "良好": "0.10", "cap": "300000.00"})
    criteria: list[Criterion] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Rubric:
        keys = [c.key for c in self.criteria]
        if len(keys) != len(set(keys)):
            raise ValueError("criterion keys must be unique")
        if not self.grades:
            raise ValueError("at least one grade threshold is needed")
        return self

    @property
    def max_total(self) -> float:
        return sum(c.max_points for c in self.criteria)

    def grade(self, total: float) -> str:
        for name, threshold in sorted(self.grades.items(), key=lambda kv: -kv[1]):
            if total >= threshold:
                return name
        return FAILED

    @property
    def coefficients(self) -> dict[str, Decimal]:
        return {k: Decimal(v) for k, v in self.subsidy.items() if k != "cap"}

    @property
    def cap(self) -> Decimal:
        return Decimal(self.subsidy.get("cap", "300000.00"))


def load(path: Path | None = None) -> Rubric:
    """A rubric file, or the sample shipped with the package."""
    if path is None:
        text = (resources.files("server.evaluation") / "rubrics" / "default.toml").read_text(encoding="utf-8")
    else:
        text = path.read_text(encoding="utf-8")
    return Rubric.model_validate(tomllib.loads(text))


@dataclass(frozen=True)
class ExpertScore:
    points: float
    note: str
    expert: str


@dataclass
class ScoreLine:
    key: str
    label: str
    group: str
    max_points: float
    value: float | None
    computed: float | None
    override: ExpertScore | None

    @property
    def points(self) -> float:
        if self.override is not None:
            return min(self.override.points, self.max_points)
        return self.computed or 0.0

    @property
    def pending(self) -> bool:
        return self.computed is None and self.override is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "group": self.group,
            "max_points": self.max_points,
            "value": self.value,
            "computed": None if self.computed is None else round(self.computed, 2),
            "override": None if self.override is None else round(self.override.points, 2),
            "note": self.override.note if self.override else "",
            "expert": self.override.expert if self.override else "",
            "points": round(self.points, 2),
            "pending": self.pending,
        }


@dataclass
class ScoreSheet:
    unit_id: str
    unit_name: str
    rubric: str
    basis: str
    lines: list[ScoreLine] = field(default_factory=list)

    @property
    def total(self) -> float:
        return round(sum(line.points for line in self.lines), 2)

    @property
    def complete(self) -> bool:
        return not any(line.pending for line in self.lines)

    grade: str = FAILED

    def as_dict(self) -> dict[str, Any]:
        return {
            "unit_id": self.unit_id,
            "unit_name": self.unit_name,
            "rubric": self.rubric,
            "basis": self.basis,
            "lines": [line.as_dict() for line in self.lines],
            "total": self.total,
            "grade": self.grade,
            "complete": self.complete,
        }


def indicator_values(unit: UnitIndicators, basis: str) -> dict[str, float | None]:
    agg: Aggregate = unit.figures

    def pick(r: Any) -> float | None:
        v = r.verified if basis == "verified" else r.including_unverified
        return None if v is None else float(v)

    return {
        "open_rate": agg.open_rate,
        "utilization": pick(agg.utilization),
        "utilization_mean": pick(agg.utilization_mean),
        "sharing": pick(agg.sharing),
        "revenue": float(agg.revenue),
        "service_cases": float(unit.cases),
    }


def score(rubric: Rubric, unit: UnitIndicators, experts: Mapping[str, ExpertScore]) -> ScoreSheet:
    values = indicator_values(unit, rubric.basis)
    sheet = ScoreSheet(unit.id, unit.name, rubric.name, rubric.basis)
    for c in rubric.criteria:
        value = values[c.indicator] if c.indicator else None
        computed = c.points(value) if c.kind == "indicator" else None
        sheet.lines.append(ScoreLine(c.key, c.label, c.group, c.max_points, value, computed, experts.get(c.key)))
    sheet.grade = rubric.grade(sheet.total)
    return sheet


def expert_scores(conn: Conn, period_label: str) -> dict[str, dict[str, ExpertScore]]:
    """The latest expert score per unit and criterion for the period."""
    out: dict[str, dict[str, ExpertScore]] = {}
    rows = conn.execute(
        "SELECT DISTINCT ON (unit_id, criterion) unit_id, criterion, points, note, expert"
        " FROM expert_scores WHERE period = %s ORDER BY unit_id, criterion, created_at DESC, id DESC",
        (period_label,),
    )
    for unit, criterion, points, note, expert in rows:
        out.setdefault(unit, {})[criterion] = ExpertScore(float(points), note, expert)
    return out


def record_expert_score(
    conn: Conn, rubric: Rubric, unit_id: str, period_label: str, criterion: str, points: float, note: str, expert: str
) -> None:
    """Store an expert's score; the criterion must exist and the points fit its maximum."""
    c = next((c for c in rubric.criteria if c.key == criterion), None)
    if c is None:
        raise ValueError(f"criterion {criterion!r} is not in rubric {rubric.name!r}")
    if not 0 <= points <= c.max_points:
        raise ValueError(f"{criterion}: points must be within 0..{c.max_points}")
    if not note.strip():
        raise ValueError("an expert score needs a note saying why")
    conn.execute(
        "INSERT INTO expert_scores (unit_id, period, criterion, points, note, expert) VALUES (%s, %s, %s, %s, %s, %s)",
        (unit_id, period_label, criterion, points, note, expert),
    )
