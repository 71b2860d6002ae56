"""What every import kind is made of: its columns (with the Chinese synonyms people write), how one
row becomes a record or a list of reasons, and how an accepted record is written.

The engine (server/registry/importer.py) reads the sheet, finds the header, runs `KindSpec.check`
on every row, and writes all records with `KindSpec.write` only when no row was rejected. A kind
module (import_prices.py, ...) only describes its sheet; it never commits.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from server.registry import parse
from server.registry.queries import InstrumentRef
from server.store.conn import Conn

TENTH = Decimal("0.1")
FEN = Decimal("0.01")


@dataclass(frozen=True)
class FieldSpec:
    key: str
    synonyms: tuple[str, ...]
    required: bool = False


def norm(s: str) -> str:
    """Header text without spaces, line breaks, and with ASCII parentheses."""
    return re.sub(r"\s+", "", s).replace("（", "(").replace("）", ")").replace("：", ":").lower()


@dataclass(frozen=True)
class ImportOptions:
    """Settings of one import beyond the file. `card_key`: the deployment's card key, so a sheet of
    raw card numbers can be hashed on import exactly as the agents hash them (never stored raw).
    `operator`: the import runs with the operator's rights (the CLI, an operator on the web); a
    unit manager's import (False) reaches only the unit's own people, and its changes of figures
    become proposals (issue 13), recorded as made by `actor`."""

    card_key: bytes | None = None
    operator: bool = True
    actor: str = "import"


@dataclass
class Row:
    """One sheet row with the header's column map: typed accessors that collect errors."""

    cells: list[Any]
    cols: dict[str, int]
    headers: dict[str, str]
    rec: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def get(self, key: str) -> Any:
        j = self.cols.get(key)
        return self.cells[j] if j is not None and j < len(self.cells) else None

    def text(self, key: str) -> str:
        return parse.text(self.get(key))

    def take(self, key: str, fn: Callable[[Any], Any], label: str, default: Any = None) -> None:
        """rec[key] = fn(cell); a blank cell gives `default` (when not None); a bad one an error."""
        v = self.get(key)
        if parse.is_blank(v):
            if default is not None:
                self.rec[key] = default
            return
        try:
            self.rec[key] = fn(v)
        except ValueError as e:
            self.errors.append(f"{label}：{e}")

    def require(self, key: str, label: str) -> None:
        """An error for a required value that is missing (and not already reported as bad)."""
        if key not in self.rec and not any(e.startswith(label) for e in self.errors):
            self.errors.append(f"缺少{label}")

    def money(self, key: str, label: str) -> None:
        self.take(key, lambda v: parse.parse_decimal(v, what=label).quantize(FEN, ROUND_HALF_UP), label)

    def date(self, key: str, label: str) -> None:
        self.take(key, parse.parse_date, label)

    def texts(self, *keys: str) -> None:
        for key in keys:
            self.take(key, parse.text, key, "")


def find_instrument(ref: str, instruments: dict[str, InstrumentRef]) -> InstrumentRef | None:
    """An instrument of the unit by platform id or the unit's own number."""
    if not ref:
        return None
    return instruments.get(ref) or next((r for r in instruments.values() if r.internal_no == ref), None)


def instrument_of(row: Row, key: str, instruments: dict[str, InstrumentRef], *, required: bool = True) -> None:
    """rec['instrument_id'] from the row's instrument number, or an error."""
    ref = row.text(key)
    inst = find_instrument(ref, instruments)
    if not ref:
        if required:
            row.errors.append("缺少仪器编号")
    elif inst is None:
        row.errors.append(f"本单位没有编号为“{ref}”的仪器")
    else:
        row.rec["instrument_id"] = inst.id


# (row, context) -> (record, errors, key): the key names the row in the report and finds duplicates.
CheckRow = Callable[[Row, Any], tuple[dict[str, Any], list[str], str]]
# (conn, record, batch id, context): writes one accepted record, never commits.
WriteRecord = Callable[[Conn, dict[str, Any], int, Any], None]
# (conn, unit id, options) -> context shared by the rows of one file (instruments, people, ...).
LoadContext = Callable[[Conn, str, ImportOptions], Any]


@dataclass(frozen=True)
class KindSpec:
    """One importable kind of sheet. `label` and `description` are shown on the import page."""

    key: str
    label: str
    description: str
    fields: list[FieldSpec]
    load: LoadContext
    check: CheckRow
    write: WriteRecord
    # column groups of which at least one must be present: (fields, name in the report)
    one_of: tuple[tuple[tuple[str, ...], str], ...] = ()

    def missing_columns(self, cols: dict[str, int]) -> list[str]:
        missing = [s.synonyms[0] for s in self.fields if s.required and s.key not in cols]
        missing += [name for keys, name in self.one_of if not any(k in cols for k in keys)]
        return missing
