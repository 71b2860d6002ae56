"""Records hashed as slices of the envelope's wire bytes (protocols.validate.record_slices) are
hashed over exactly the bytes the reference encodes: the canonical bytes of each record."""

from __future__ import annotations

import copy
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.canonical import dumps_sorted
from protocols.validate import check_records, open_envelope, record_slices
from protocols.vectors import _envelope, _rechain, _records, build

TRICKY = ['},{"agent":"', '"records":[{', '}],"sent":', "\\", '\\"', '"', "}", "{", "],[", "质谱\u2028", "\x00\x1f",
          '},{\\"agent\\":\\"']


def _body(text: str = "") -> dict[str, Any]:
    recs = copy.deepcopy(_records())
    recs[1]["rule"] = text
    recs[1]["evidence"]["process"]["name"] = text + "x"
    recs[0]["detail"]["reason"] = text
    body = _envelope(_rechain(recs))
    body["sig"] = "A" * 86
    return body


def _encoded_one_by_one(body: dict[str, Any]) -> list[bytes]:
    return [dumps_sorted(r) for r in body["records"]]


def test_slices_are_the_records_canonical_bytes() -> None:
    wire = build()["envelope"]["wire"]
    wire = wire.encode() if isinstance(wire, str) else wire
    body = orjson.loads(wire)
    assert record_slices(wire, len(body["records"])) == _encoded_one_by_one(body)
    for text in TRICKY:
        b = _body(text)
        raw = dumps_sorted(b)
        assert record_slices(raw, len(b["records"])) == _encoded_one_by_one(b), text
        assert check_records(None, b, raw) == check_records(None, b)
        assert open_envelope(raw).hashes == check_records(None, b)


def test_one_record_and_a_wrong_count() -> None:
    b = _body()
    b["records"] = b["records"][:1]
    raw = dumps_sorted(b)
    assert record_slices(raw, 1) == _encoded_one_by_one(b)
    assert record_slices(raw, 2) is None
    assert record_slices(b"{}", 1) is None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.sampled_from(list('{}[]",:\\agentrcods \u00e9\x01')), max_size=40))
def test_any_text_in_records_never_shifts_a_cut(text: str) -> None:
    b = _body(text)
    raw = dumps_sorted(b)
    assert record_slices(raw, len(b["records"])) == _encoded_one_by_one(b)
