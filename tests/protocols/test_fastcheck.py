"""The fast acceptance check (protocols/fastcheck.py) against the reference models (records.py).

The fast check may only accept what the reference accepts (a refusal, and its reason, always
comes from the reference); it should accept the valid envelopes agents send, or it is no faster.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from protocols import fastcheck
from protocols.canonical import MAX_SAFE_INT, dumps_sorted
from protocols.errors import ProtocolError, Reason
from protocols.records import MAX_T, MIN_T, Envelope
from protocols.validate import check_records, open_envelope, open_typed
from protocols.vectors import _envelope, _rechain, _records, build
from tests.protocols.helpers import unescaped

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


# -- decode: the ingest's typed way in (validate.open_typed) -------------------------------------


def _reference_opens(raw: bytes) -> bool:
    """Whether the reference path accepts the bytes: canonical form, version, then the models."""
    try:
        open_envelope(raw, defer_records=True)
    except ProtocolError:
        return False
    return True


def test_valid_envelopes_decode_to_the_parsed_values() -> None:
    vector = build()["envelope"]["wire"].encode("utf-8")
    for body in (_valid_body(), orjson.loads(vector)):
        raw = dumps_sorted(unescaped(body))
        env = fastcheck.decode(raw)
        assert env is not None
        assert msgspec.to_builtins(env) == orjson.loads(raw)
        for rec, parsed in zip(env.records, orjson.loads(raw)["records"], strict=True):
            assert rec["type"] == parsed["type"] == type(rec).type
            assert {k: msgspec.to_builtins(rec[k]) for k in parsed} == parsed
            assert rec.get("nothing", 7) == 7
            with pytest.raises(KeyError):
                rec["nothing"]
    # the vectors' envelope has a Chinese string with an escaped quote: the reference way; its
    # Chinese alone (the escapes dropped; the signature does not matter here) the fast way
    assert b"\\" in vector and not vector.isascii()
    assert fastcheck.decode(vector) is None and _reference_opens(vector)
    chinese = vector.replace(b'\\"', b"").replace(b"\\n", b"")
    assert not chinese.isascii() and fastcheck.decode(chinese) is not None and _reference_opens(chinese)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_decode_takes_only_what_the_reference_takes(body: dict[str, Any]) -> None:
    try:
        raw = dumps_sorted(unescaped(body))
    except (orjson.JSONEncodeError, TypeError):
        return
    if fastcheck.decode(raw) is not None:
        assert _reference_opens(raw), body


def _with(body: dict[str, Any], old: bytes, new: bytes) -> bytes:
    raw = dumps_sorted(body)
    assert old in raw
    return raw.replace(old, new, 1)


BYTE_EDITS: list[tuple[str, bytes, bytes]] = [
    ("white space", b'"v":1', b'"v": 1'),
    ("trailing new line", b'"v":1}', b'"v":1}\n'),
    ("key order", b'"unit":"', b'"unix":0,"unit":"'),
    ("duplicate key", b'"v":1', b'"v":1,"v":1'),
    ("negative zero", b'"boot":1', b'"boot":-0'),
    ("exponent", b'"boot":1', b'"boot":1e0'),
    ("float", b'"boot":1', b'"boot":1.0'),
    ("escaped letter", b'"msg":"rec"', b'"msg":"r\\u0065c"'),
    ("escaped slash", b'"rule":"', b'"rule":"\\/'),
    ("lone surrogate", b'"rule":"', b'"rule":"\\ud800'),
    ("escaped control", b'"rule":"', b'"rule":"\\u001f'),
    ("short escape", b'"rule":"', b'"rule":"\\n'),
    ("raw control", b'"rule":"', b'"rule":"\x1f'),
    ("raw DEL", b'"rule":"', b'"rule":"\x7f'),
    ("non-ASCII", b'"rule":"', '"rule":"质谱'.encode()),
    ("not UTF-8", b'"rule":"', b'"rule":"\xff'),
    ("line separator", b'"rule":"', '"rule":"\u2028'.encode()),
    ("astral", b'"rule":"', '"rule":"\U0001f600'.encode()),
    ("encoded surrogate", b'"rule":"', b'"rule":"\xed\xa0\x80'),
    ("overlong", b'"rule":"', b'"rule":"\xc0\xaf'),
    ("above U+10FFFF", b'"rule":"', b'"rule":"\xf4\x90\x80\x80'),
    ("non-ASCII key", b'"v":1', '"v":1,"\u00e9":1'.encode()),
    ("NUL", b'"rule":"', b'"rule":"\x00'),
    ("truncated", b'"v":1}', b'"v":1'),
    ("boolean version", b'"v":1', b'"v":true'),
    ("big int", b'"boot":1', b'"boot":9007199254740992'),
]


@pytest.mark.parametrize(("name", "old", "new"), BYTE_EDITS, ids=[e[0] for e in BYTE_EDITS])
def test_decode_takes_no_bytes_the_reference_refuses(name: str, old: bytes, new: bytes) -> None:
    """Edits of the wire bytes the parsed-body mutations cannot make: spelling, escapes, bytes
    the two JSON libraries may read or write apart. None may be taken unless the reference takes it."""
    raw = _with(unescaped(_valid_body()), old, new)
    if fastcheck.decode(raw) is not None:
        assert _reference_opens(raw), name
    if name in ("raw DEL", "non-ASCII", "line separator", "astral"):  # valid and canonical: taken by both
        assert fastcheck.decode(raw) is not None and _reference_opens(raw)


def test_vectors_decode_as_the_reference_opens() -> None:
    """Every fixed vector: decode takes it only if the reference path opens it."""
    for case in build()["invalid"]:
        raw = base64.b64decode(case["wire_b64"])
        if fastcheck.decode(raw) is not None:
            assert _reference_opens(raw), case["name"]


def _outcome(open_: Any, raw: bytes) -> tuple[str, str | None, list[str]]:
    try:
        opened = open_(raw)
        return "ok", None, check_records(opened.model, opened.body, opened.raw)
    except ProtocolError as exc:
        return str(exc.reason), exc.field, []


def test_open_typed_refuses_as_open_envelope() -> None:
    """The vectors' refusals, spelled in ASCII so that decode takes their bytes, and the records'
    own checks after them: open_typed gives each the reason, field and hashes open_envelope does
    (a typed envelope whose records fail their own checks goes the dicts' way for its reason)."""
    doc = build()
    cases = [orjson.loads(doc["envelope"]["wire"])]
    for case in doc["invalid"]:
        try:
            cases.append(orjson.loads(base64.b64decode(case["wire_b64"])))
        except orjson.JSONDecodeError:
            continue
    big = unescaped(cases[0])
    big["records"][1]["rule"] = "x" * 256
    big["records"][1]["evidence"] = {f"d{i}": {f"k{j}": "y" * 200 for j in range(16)} for i in range(2)}
    cases.append(big)  # a record over MAX_RECORD_BYTES
    typed = 0
    for body in cases:
        raw = dumps_sorted(unescaped(body))
        typed += fastcheck.decode(raw) is not None
        assert _outcome(open_typed, raw) == _outcome(lambda r: open_envelope(r, defer_records=True), raw), body
    assert typed >= 6
