"""Registry edit forms: which fields each form shows, with labels (Chinese, English) and input kinds,
generated from the registry schema (server/registry/schema.py).

The forms post JSON to the same API routes scripts use (static/forms.js), so validation, scope
checks and the audit log are the API's; a 422 names the fields at fault and the form marks them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from server.registry import schema
from server.store.times import TZ


@dataclass(frozen=True)
class F:
    name: str
    zh: str
    en: str
    kind: str = "text"  # text, number, date, datetime, select, bool, textarea, hidden
    dtype: str = "str"  # what JSON type the API wants: str, int, bool
    options: tuple[tuple[str, str], ...] = ()
    options_en: tuple[tuple[str, str], ...] = ()  # the options' labels in English, where they differ
    required: bool = False
    create_only: bool = False  # ids: set once
    proposal: bool = False  # a unit manager's change waits for the operator (issue 13)


_INPUT = {"id": "text", "short": "text", "url": "url", "text": "textarea", "money": "number", "hours": "number",
          "service_hours": "number", "count": "number", "score": "number", "date": "date", "datetime": "datetime",
          "bool": "bool", "enum": "select", "int_enum": "select"}
_DTYPE = {"bool": "bool", "int_enum": "int", "count": "int", "score": "int"}


def _field(f: schema.F, prefix: str = "", *, create_only: bool | None = None) -> F:
    """The form field of a schema field (server/registry/schema.py)."""
    labels = f.enum_labels or tuple(str(v) for v in f.enum)
    labels_en = f.enum_labels_en or labels
    return F(prefix + f.name, f.zh, f.en, f.input or _INPUT[f.kind], _DTYPE.get(f.kind, "str"),
             tuple((str(v), lbl) for v, lbl in zip(f.enum, labels, strict=True)),
             tuple((str(v), lbl) for v, lbl in zip(f.enum, labels_en, strict=True)), f.required,
             f.create_only if create_only is None else create_only, f.proposal)


def from_schema(table: schema.Table) -> list[F]:
    """Every field of a table a person types (fields marked input="none" are set by the server)."""
    return [_field(f) for f in table.fields if f.input != "none"]


INSTRUMENT = from_schema(schema.INSTRUMENT)
ORGANISATION = from_schema(schema.ORGANISATION)
# a unit belongs to an organisation created before it: chosen from a list
UNIT = [replace(f, kind="select") if f.name == "org_id" else f for f in from_schema(schema.UNIT)]

PERSON = [
    *from_schema(schema.PERSON),
    F("unit_id", "登记身份的单位", "Unit of the identity", "select", create_only=True),
    *(replace(_field(f, "identities.0.", create_only=True), required=False) for f in schema.IDENTITY.fields),
]

# A mapping added to an existing person (PUT /api/v1/units/{unit_id}/identities; the unit is in the path).
IDENTITY = [F("unit_id", "单位", "Unit", "select", required=True), *from_schema(schema.IDENTITY)]

# One exemption (art. 13) or service case of a unit (POST /api/v1/units/{unit}/exemptions | cases).
EXEMPTION = from_schema(schema.EXEMPTION)
CASE = from_schema(schema.CASE)
PRICE = from_schema(schema.PRICE)
SERVICE = from_schema(schema.SERVICE_RECORD)


@dataclass
class Shown:
    """A field as the template draws it."""

    name: str
    label: str
    kind: str
    dtype: str
    options: list[tuple[str, str]] = field(default_factory=list)
    required: bool = False
    value: str = ""
    checked: bool = False
    proposal: bool = False
    pending: str | None = None  # the value an open proposal would set


def _text(v: Any, kind: str) -> str:
    if v is None:
        return ""
    if kind == "datetime" and isinstance(v, datetime):
        return v.astimezone(TZ).strftime("%Y-%m-%dT%H:%M")
    if isinstance(v, date | datetime):
        return v.isoformat()
    if isinstance(v, Decimal):
        return format(v.normalize(), "f") if v == v.to_integral() else str(v)
    return str(v)


def shown(fields: list[F], lang: str, values: dict[str, Any] | None, *, editing: bool,
          options: dict[str, list[tuple[str, str]]] | None = None, proposals: bool = False,
          pending: dict[str, Any] | None = None) -> list[Shown]:
    """The fields to draw; `proposals`: mark the fields whose change is a proposal (a unit manager
    editing), with the value an open proposal holds (`pending`: field -> JSON value)."""
    values, pending = values or {}, pending or {}
    out = []
    for f in fields:
        if editing and f.create_only:
            continue
        opts = list((options or {}).get(f.name, f.options_en if lang == "en" and f.options_en else f.options))
        v = values.get(f.name)
        marked = proposals and editing and f.proposal
        waiting = pending.get(f.name, ...) if marked else ...
        out.append(Shown(f.name, f.en if lang == "en" else f.zh, f.kind, f.dtype, opts, f.required,
                         _text(v, f.kind), bool(v), marked,
                         None if waiting is ... else ("—" if waiting is None else str(waiting))))
    return out
