"""SPEC.md, the models, the generated schemas and the vectors say the same thing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from protocols import records, schema_export, vectors
from protocols.errors import Reason
from protocols.topics import Kind

SPEC = (Path(records.__file__).parent / "SPEC.md").read_text(encoding="utf-8")

RECORD_MODELS: dict[str, type[BaseModel]] = {
    "state": records.StateRecord,
    "heartbeat": records.HeartbeatRecord,
    "session_start": records.SessionStartRecord,
    "session_end": records.SessionEndRecord,
    "sample": records.SampleRecord,
    "lifecycle": records.LifecycleRecord,
    "spool_overflow": records.SpoolOverflowRecord,
}
MESSAGE_SECTIONS: dict[str, type[BaseModel]] = {
    "record common fields": records.RecordBase,
    "message rec": records.Envelope,
    "message birth": records.Birth,
    "message death": records.Death,
    "message ack": records.Ack,
    "message cmd": records.Command,
    "dropped range": records.DroppedRange,
}


def _section_fields(title: str) -> set[str]:
    match = re.search(rf"^#+ [^\n]*{re.escape(title)}[^\n]*\n(.*?)(?=^#)", SPEC, flags=re.M | re.S | re.I)
    assert match, f"SPEC.md has no section titled like {title!r}"
    return set(re.findall(r"^\| `([a-z_]+)` \|", match.group(1), flags=re.M))


@pytest.mark.parametrize("rtype", list(RECORD_MODELS))
def test_each_record_type_is_specified_field_for_field(rtype: str) -> None:
    model = RECORD_MODELS[rtype]
    own = set(model.model_fields) - set(records.RecordBase.model_fields)
    assert _section_fields(f"record `{rtype}`") == own
    assert rtype in records.RECORD_TYPES


@pytest.mark.parametrize("title", list(MESSAGE_SECTIONS))
def test_each_message_is_specified_field_for_field(title: str) -> None:
    model = MESSAGE_SECTIONS[title]
    fields = set(model.model_fields)
    if title == "message rec":
        fields -= {"records"}  # described in its own section
        fields |= {"records"}
    assert _section_fields(title) == fields


def test_every_reason_and_kind_is_specified() -> None:
    for reason in Reason:
        assert f"`{reason.value}`" in SPEC, reason
    for kind in Kind:
        assert f"`{kind.value}`" in SPEC, kind


def test_spec_example_matches_the_vectors() -> None:
    doc = json.loads(vectors.VECTOR_FILE.read_text(encoding="utf-8"))
    first = doc["records"][0]
    assert first["canonical"] in SPEC
    assert first["sha256"] in SPEC
    assert doc["keys"]["agent"]["public"] in SPEC


def test_limits_in_spec_match_code() -> None:
    from protocols.envelope import MAX_CONTROL_BYTES, MAX_ENVELOPE_BYTES, MAX_RECORD_BYTES, MAX_RECORDS

    for value in (MAX_ENVELOPE_BYTES, MAX_RECORDS, MAX_RECORD_BYTES, MAX_CONTROL_BYTES):
        assert f"{value:,}" in SPEC or str(value) in SPEC, value


def test_schemas_are_current() -> None:
    for name, text in schema_export.render().items():
        path = schema_export.SCHEMA_DIR / name
        assert path.exists() and path.read_text(encoding="utf-8") == text, "run: python -m protocols.schema_export"
