"""The shipped test vectors: valid ones open and verify, each invalid one fails with its own reason."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from protocols import vectors
from protocols.canonical import canonical
from protocols.chain import record_hash
from protocols.envelope import signed_bytes
from protocols.errors import ProtocolError
from protocols.records import Birth, Death
from protocols.signing import key_id, private_from_b64, public_from_b64, public_to_b64, sign
from protocols.validate import check_signature, open_envelope, open_message

DOC: dict[str, Any] = json.loads(vectors.VECTOR_FILE.read_text(encoding="utf-8"))
PUB = public_from_b64(DOC["keys"]["agent"]["public"])


def test_vector_file_is_current() -> None:
    assert vectors.VECTOR_FILE.read_text(encoding="utf-8") == vectors.render(), "run: python -m protocols.vectors"


def test_keys_round_trip() -> None:
    for entry in DOC["keys"].values():
        key = private_from_b64(entry["private"])
        assert public_to_b64(key) == entry["public"]
        assert key_id(key) == entry["key_id"]


@pytest.mark.parametrize("entry", DOC["records"], ids=lambda e: e["record"]["type"])
def test_record_canonical_bytes_and_hash(entry: dict[str, Any]) -> None:
    assert canonical(entry["record"]).decode("utf-8") == entry["canonical"]
    assert record_hash(entry["record"]) == entry["sha256"]


def test_valid_envelope_signature_is_exact() -> None:
    wire = DOC["envelope"]["wire"].encode("utf-8")
    opened = open_envelope(wire, key_for=lambda agent, kid: PUB)
    assert signed_bytes(opened.body).decode("utf-8") == DOC["envelope"]["signed_bytes"]
    key = private_from_b64(DOC["keys"]["agent"]["private"])
    assert sign(key, signed_bytes(opened.body)) == DOC["envelope"]["sig"]
    assert opened.hashes == [e["sha256"] for e in DOC["records"]]
    assert [r.seq for r in opened.envelope.records] == list(range(1, len(DOC["records"]) + 1))


def test_birth_and_death_verify() -> None:
    birth = open_message(DOC["birth"].encode("utf-8"), Birth)
    death = open_message(DOC["death"].encode("utf-8"), Death)
    assert birth.next_seq == 8 and death.clean is False
    check_signature(json.loads(DOC["birth"]), PUB)
    check_signature(json.loads(DOC["death"]), PUB)


def test_a_birth_is_not_a_death() -> None:
    with pytest.raises(ProtocolError) as err:
        open_message(DOC["birth"].encode("utf-8"), Death)
    assert err.value.reason == "schema" and err.value.field == "msg"


@pytest.mark.parametrize("case", DOC["invalid"], ids=lambda c: c["name"])
def test_invalid_vector_fails_with_its_reason(case: dict[str, Any]) -> None:
    data = base64.b64decode(case["wire_b64"]) + b" " * case.get("pad", 0)
    with pytest.raises(ProtocolError) as err:
        open_envelope(data, key_for=lambda agent, kid: PUB)
    assert err.value.reason.value == case["reason"], str(err.value)


def test_every_invalid_reason_is_distinct_for_the_named_attacks() -> None:
    by_name = {c["name"]: c["reason"] for c in DOC["invalid"]}
    named = [
        "tampered_record",
        "reordered_records",
        "dropped_record",
        "wrong_key",
        "oversized",
        "malformed_json",
        "unknown_record_type",
    ]
    reasons = [by_name[n] for n in named]
    # tampered and wrong key are both signature failures; every other attack has its own reason
    assert len(set(reasons)) == len(reasons) - 1
