"""Post-subsidy (后补助, art. 23(二)): coefficient by grade x previous-year external revenue, capped.

"Previous year" is the year before the evaluation is held, i.e. the evaluation year itself: the
2026 evaluation grades 2025 and pays on 2025's external revenue. Money is Decimal, rounded half-up
to the fen. A unit under an art. 25 sanction (false data) gets nothing in the sanctioned years.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

FEN = Decimal("0.01")
DEFAULT_COEFFICIENTS = {"优秀": Decimal("0.20"), "良好": Decimal("0.10")}
DEFAULT_CAP = Decimal("300000.00")


@dataclass(frozen=True)
class Subsidy:
    grade: str
    revenue: Decimal
    coefficient: Decimal
    uncapped: Decimal
    amount: Decimal
    capped: bool
    note: str = ""

    def as_dict(self) -> dict[str, str | bool]:
        return {
            "grade": self.grade,
            "revenue": str(self.revenue),
            "coefficient": str(self.coefficient),
            "uncapped": str(self.uncapped),
            "amount": str(self.amount),
            "capped": self.capped,
            "note": self.note,
        }


def post_subsidy(
    grade: str,
    revenue: Decimal,
    *,
    coefficients: dict[str, Decimal] | None = None,
    cap: Decimal = DEFAULT_CAP,
    sanction: str | None = None,
) -> Subsidy:
    """The subsidy for one unit. `sanction` is the reason when art. 25 applies to the year."""
    if revenue < 0:
        raise ValueError("revenue cannot be negative")
    revenue = revenue.quantize(FEN, ROUND_HALF_UP)
    coef = (coefficients or DEFAULT_COEFFICIENTS).get(grade, Decimal(0))
    uncapped = (revenue * coef).quantize(FEN, ROUND_HALF_UP)
    if sanction:
        return Subsidy(grade, revenue, coef, uncapped, Decimal("0.00"), False, f"第二十五条：{sanction}")
    amount = min(uncapped, cap.quantize(FEN))
    return Subsidy(grade, revenue, coef, uncapped, amount, uncapped > cap)
