"""The fast acceptance check (protocols/fastcheck.py) against the reference models (records.py).

The fast check may only accept what the reference accepts (a refusal, and its reason, always
comes from the reference); it should accept the valid envelopes agents send, or it is no faster.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from protocols import fastcheck
from protocols.canonical import MAX_SAFE_INT, dumps_sorted
from protocols.errors import ProtocolError, Reason
from protocols.records import MAX_T, MIN_T, Envelope
from protocols.validate import open_envelope
from protocols.vectors import _envelope, _rechain, _records, build

H = "ab" * 32


def _valid_body() -> dict[str, Any]:
    return copy.deepcopy(_VALID)


def _make_valid() -> dict[str, Any]:
    recs = _records()
    recs.append({**recs[-1], "seq": len(recs) + 1, "type": "spool_overflow",
                 "dropped": [{"first": 2, "last": 3, "last_hash": H}]})
    for k in ("state", "prev_state", "rule", "evidence"):
        recs[-1].pop(k, None)
    body = _envelope(_rechain(recs))
    body["sig"] = "A" * 86
    return body


_VALID = _make_valid()


def _reference_accepts(body: Any) -> bool:
    try:
        Envelope.model_validate(body)
    except ValidationError:
        return False
    return True


def test_valid_envelopes_take_the_fast_path() -> None:
    body = _valid_body()
    assert _reference_accepts(body)
    assert fastcheck.accepts(body)
    assert fastcheck.accepts(orjson.loads(build()["envelope"]["wire"]))


def test_vectors_agree() -> None:
    """Every fixed vector whose body parses: fast accept implies reference accept."""
    doc = build()
    checked = 0
    for case in doc["invalid"]:
        try:
            body = orjson.loads(base64.b64decode(case["wire_b64"]))
        except orjson.JSONDecodeError:
            continue
        checked += 1
        if fastcheck.accepts(body):
            assert _reference_accepts(body), case["name"]
    assert checked >= 10


EDGES: list[Any] = [
    None, True, False, 0, 1, -1, 2, MAX_SAFE_INT, MAX_SAFE_INT + 1, -MAX_SAFE_INT - 1, MIN_T, MIN_T - 1, MAX_T,
    MAX_T + 1, 86_400_000, 86_400_001, 1.0, 0.5, "", "a", "a\n", "\na", "A", "Ab-_9", "x" * 64, "x" * 65,
    "x" * 86, "A" * 86 + "\n", "y" * 256, "y" * 257, "z" * 128, "z" * 129, H, H + "\n", H.upper(), H[:63],
    "0123456789abcdef", "0123456789abcdef\n", "0123456789ABCDEF", "hmac-sha256:ab", "card", "os", "idle",
    "running", "Running", "state", "heartbeat", "sample", "mW", "m W", "%/_", "x" * 17, "质谱", [], [1], [None],
    [1.5], [True], ["a"], {}, {"a": 1}, {"A": 1}, {"a\n": 1}, {"a": {"b": 1}}, {"a": {"B": 1}}, {"a": {"b": 1.5}},
    {"a": {"b": [1]}}, {"a": {"b": {"c": 1}}}, {"a": {"b": "y" * 257}}, {f"k{i}": 1 for i in range(17)},
    {"a": {f"k{i}": 1 for i in range(17)}}, {"first": 1, "last": 1, "last_hash": H},
    [{"first": 3, "last": 2, "last_hash": H}], [{"first": 1, "last": 1, "last_hash": H, "x": 1}],
    [{"first": 1, "last": 1, "last_hash": H.upper()}], [{"first": 1, "last": 2}], [0] * 3601,
]
KEYS = ["v", "msg", "agent", "key", "unit", "instrument", "boot", "sig", "sent", "records", "seq", "t", "mono", "prev",
        "type", "state", "prev_state", "rule", "evidence", "period_ms", "session", "method", "user", "reason", "signal",
        "start", "step_ms", "values", "event", "detail", "dropped", "extra"]


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    body = _valid_body()
    for _ in range(draw(st.integers(1, 3))):
        records: Any = body.get("records")
        where = draw(st.integers(-1, len(records) - 1 if isinstance(records, list) and records else -1))
        target = body if where < 0 or not isinstance(records[where], dict) else records[where]
        key = draw(st.sampled_from(KEYS))
        if draw(st.integers(0, 9)) == 0:
            target.pop(key, None)
        else:
            target[key] = copy.deepcopy(draw(st.sampled_from(EDGES)))
    return body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_fast_accepts_only_what_the_reference_accepts(body: dict[str, Any]) -> None:
    if fastcheck.accepts(body):
        assert _reference_accepts(body), body


@pytest.mark.parametrize("edit", [
    lambda b: b["records"][0].update(agent=b["agent"] + "\n"),
    lambda b: b.update(agent=b["agent"] + "\n"),
    lambda b: b["records"][3]["evidence"]["power"].update({"Mw": 1}),
    lambda b: b["records"][3]["evidence"].update({"pow\n": {}}),
    lambda b: b["records"][2].update(user="alice"),
    lambda b: b["records"][-1]["dropped"][0].update(first=9, last=8),
    lambda b: b["records"][4].update(unit="mW\n"),
    lambda b: b["records"][1].update(prev=H[:-1] + "\n"),
    lambda b: b["records"][1].update(prev=H[:-2] + "A"),
    lambda b: b.update(records=[]),
    lambda b: b["records"][3].update(period_ms=True),
    lambda b: b["records"][3].update(evidence={f"d{i}": {} for i in range(17)}),
    lambda b: b["records"][3].update(evidence={"power": {f"k{i}": 1 for i in range(17)}}),
    lambda b: b["records"][3].update(evidence={"power": {"mw": MAX_SAFE_INT + 1}}),
    lambda b: b["records"][3].update(evidence={"power": {"note": "y" * 257}}),
    lambda b: b["records"][0].update(detail={f"k{i}": 1 for i in range(17)}),
    lambda b: b["records"][1].update(rule="y" * 257),
    lambda b: b["records"][2].update(user="hmac-sha256:" + "z" * 117),
    lambda b: b["records"][4].update(values=[0] * 3601),
    lambda b: b["records"][4].update(step_ms=0),
    lambda b: b["records"][4].update(signal="Power"),
    lambda b: b["records"][-1].update(dropped=[{"first": 1, "last": 1, "last_hash": H}] * 257),
    lambda b: b["records"][-1].update(dropped=[]),
    lambda b: b.update(records=b["records"] * 286),
    lambda b: b.update(sent=MAX_T + 1),
    lambda b: b["records"][0].update(t=MIN_T - 1),
    lambda b: b["records"][0].update(mono=-1),
    lambda b: b["records"][0].update(extra=1),
    lambda b: b["records"][0].pop("mono"),
])
def test_hand_made_refusals(edit: Any) -> None:
    body = _valid_body()
    edit(body)
    assert not _reference_accepts(body)
    assert not fastcheck.accepts(body)


@pytest.mark.parametrize("records", [462, True, "x", {"a": 1}, None])
def test_records_not_a_list_is_a_schema_refusal(records: Any) -> None:
    """Found by tests/security/test_fuzz_ingest.py: `"records":462` raised TypeError out of
    open_envelope (and stopped ingest's open thread) instead of being refused."""
    body = _valid_body()
    body["records"] = records
    with pytest.raises(ProtocolError) as err:
        open_envelope(dumps_sorted(body), defer_records=True)
    assert err.value.reason is Reason.SCHEMA
