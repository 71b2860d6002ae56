"""Reading the spreadsheets units already keep: cells as people type them.

Dates come as Excel dates, serial numbers or text (2024年3月5日, 2024/3/5, 2024.3.5, 20240305);
amounts with ¥, thousands separators or 万; enumerations in Chinese or as platform codes.
Each parser returns the value or raises ValueError with a Chinese message for the row report.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from server.store.times import TZ

_EXCEL_EPOCH = date(1899, 12, 30)
MAX_AMOUNT = Decimal(10) ** 12  # numeric(14, 2), the widest column a number goes to
YEARS = range(1900, 2101)


class Formula(str):
    """The text of a spreadsheet formula cell (=...): imported as written, never evaluated, never
    taken as the value the file claims it last computed (server/registry/untrusted.py)."""


def _no_formula(value: Any, what: str) -> None:
    if isinstance(value, Formula):
        raise ValueError(f"{what}是公式“{value}”，公式不被计算也不取其缓存结果；请先将该列“选择性粘贴为数值”")
_DATE_RE = re.compile(r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?$")
_DATETIME_RE = re.compile(
    r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?\s*[T ]?\s*"
    r"(\d{1,2})\s*(?:[:：时点]\s*(\d{1,2})?\s*分?)?\s*(?:[:：]\s*(\d{1,2})\s*秒?)?$"
)


def text(value: Any) -> str:
    """A cell as trimmed text ('' for empty); whole floats lose their '.0' (Excel numbers)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def is_blank(value: Any) -> bool:
    return text(value) == ""


def parse_date(value: Any) -> date:
    _no_formula(value, "日期")
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        if 20000 <= value <= 80000:  # Excel serial day number (1954..2119)
            return _EXCEL_EPOCH + timedelta(days=int(value))
        s = text(value)
    else:
        s = text(value)
    if re.fullmatch(r"\d{8}", s):
        s = f"{s[:4]}-{s[4:6]}-{s[6:]}"
    m = _DATE_RE.match(s)
    if not m:
        raise ValueError(f"无法识别的日期“{s}”（应为 2024-03-05 或 2024年3月5日）")
    try:
        if int(m.group(1)) not in YEARS:
            raise ValueError(f"日期“{s}”超出 1900–2100 年")
        return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        raise ValueError(f"日期“{s}”不存在") from None


def parse_datetime(value: Any) -> datetime:
    """Local (Asia/Shanghai) time; a bare date means 00:00."""
    _no_formula(value, "时间")
    if isinstance(value, datetime):
        return value.replace(tzinfo=TZ) if value.tzinfo is None else value
    if isinstance(value, date):
        return datetime.combine(value, time(), TZ)
    if isinstance(value, int | float) and not isinstance(value, bool) and 20000 <= value <= 80000:
        days = int(value)
        seconds = round((float(value) - days) * 86400)
        return datetime.combine(_EXCEL_EPOCH + timedelta(days=days), time(), TZ) + timedelta(seconds=seconds)
    s = text(value)
    m = _DATETIME_RE.match(s)
    if not m:
        try:
            return datetime.combine(parse_date(s), time(), TZ)
        except ValueError:
            raise ValueError(f"无法识别的时间“{s}”（应为 2024-03-05 09:00 或 2024年3月5日9时）") from None
    y, mo, d, h, mi, sec = (int(g) if g else 0 for g in m.groups())
    if y not in YEARS:
        raise ValueError(f"时间“{s}”超出 1900–2100 年")
    try:
        return datetime(y, mo, d, h, mi, sec, tzinfo=TZ)
    except ValueError:
        raise ValueError(f"时间“{s}”不存在") from None


def parse_decimal(value: Any, *, scale: Decimal = Decimal(1), what: str = "数值") -> Decimal:
    """Amounts like 350000, '¥350,000.00', '35万', '35 万元'; `scale` multiplies plain numbers
    (a column headed 原值（万元） has scale 10,000)."""
    _no_formula(value, what)
    if isinstance(value, bool):
        raise ValueError(f"{what}“{value}”不是数字")
    if isinstance(value, int | float | Decimal):
        result = Decimal(str(value)) * scale
    else:
        s = text(value).replace(",", "").replace("，", "").replace("¥", "").replace("￥", "").replace(" ", "")
        factor = scale
        if s.endswith("万元") or s.endswith("万"):
            s, factor = s.rstrip("元").rstrip("万"), Decimal(10000)
        elif s.endswith("元"):  # an explicit unit beats the column's
            s, factor = s[:-1], Decimal(1)
        try:
            result = Decimal(s) * factor
        except InvalidOperation:
            raise ValueError(f"{what}“{text(value)}”不是数字") from None
    if not result.is_finite() or result < 0:
        raise ValueError(f"{what}“{text(value)}”不能为负数")
    if result >= MAX_AMOUNT:
        raise ValueError(f"{what}“{text(value)}”过大")
    return result


def parse_count(value: Any, what: str) -> int:
    """A whole number of things (samples): '12', 12.0, '12个'."""
    _no_formula(value, what)
    s = text(value).rstrip("个件样次").strip()
    try:
        d = Decimal(s)
    except InvalidOperation:
        raise ValueError(f"{what}“{text(value)}”不是整数") from None
    if not d.is_finite() or d < 0 or d != d.to_integral_value():
        raise ValueError(f"{what}“{text(value)}”应为非负整数")
    if d > 1_000_000_000:
        raise ValueError(f"{what}“{text(value)}”过大")
    return int(d)


def parse_choice(value: Any, choices: dict[str, str], what: str) -> str:
    """One of an enumeration, given by any of its spellings (exact, then contained)."""
    _no_formula(value, what)
    s = text(value).replace(" ", "")
    if s in choices:
        return choices[s]
    for spelling, canonical in choices.items():
        if spelling and spelling in s:
            return canonical
    allowed = "、".join(sorted(set(choices.values())))
    raise ValueError(f"{what}“{s}”不在可选值（{allowed}）中")


def parse_bool(value: Any, what: str) -> bool:
    _no_formula(value, what)
    s = text(value)
    if s in ("是", "Y", "y", "yes", "true", "True", "1", "开放", "√", "✓"):
        return True
    if s in ("否", "N", "n", "no", "false", "False", "0", "不开放", "×"):
        return False
    raise ValueError(f"{what}“{s}”应为 是/否")
