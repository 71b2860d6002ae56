"""The agent's libsodium key signs exactly as `cryptography` does, and reads and writes the same key files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
import pytest

from agent.signer import AgentKey, load_key, save_key
from protocols import envelope as env
from protocols.errors import ProtocolError
from protocols.signing import key_id, load_private, public_from_b64, public_to_b64, save_private, sign, verify
from protocols.validate import check_signature
from protocols.vectors import fixed_key


@pytest.mark.parametrize("label", ["a", "b", "agent-1"])
def test_same_signature_key_id_and_public_key_as_cryptography(label: str) -> None:
    theirs = fixed_key(label)
    ours = AgentKey(theirs.private_bytes_raw())
    for message in (b"", b"x", hashlib.sha256(label.encode()).digest() * 100):
        assert sign(ours, message) == sign(theirs, message)
    assert key_id(ours) == key_id(theirs) and public_to_b64(ours) == public_to_b64(theirs)
    assert verify(public_from_b64(public_to_b64(ours)), b"m", sign(ours, b"m"))
    assert not verify(public_from_b64(public_to_b64(ours)), b"n", sign(ours, b"m"))


def test_sealed_envelope_passes_the_servers_signature_check() -> None:
    key = AgentKey.generate()
    rec = {"type": "lifecycle", "agent": "a1", "boot": 1, "seq": 1, "prev": "0" * 64, "t": 1_700_000_000_000,
           "event": "start", "detail": {}}
    raw = env.envelope(key=key, agent="a1", unit="u", instrument="i", boot=1, sent=1_700_000_000_001, records=[rec])
    body = orjson.loads(raw)
    check_signature(body, public_from_b64(public_to_b64(key)))
    assert body["key"] == key_id(key)
    body["sent"] += 1
    with pytest.raises(ProtocolError):
        check_signature(body, public_from_b64(public_to_b64(key)))


def test_key_files_are_interchangeable(tmp_path: Path) -> None:
    ours = AgentKey.generate()
    save_key(ours, tmp_path / "ours.key")
    assert load_private(tmp_path / "ours.key").private_bytes_raw() == ours.private_bytes_raw()
    theirs = fixed_key("c")
    save_private(theirs, tmp_path / "theirs.key")
    assert load_key(tmp_path / "theirs.key").private_bytes_raw() == theirs.private_bytes_raw()
    with pytest.raises(FileExistsError):
        save_key(ours, tmp_path / "theirs.key")
    assert (tmp_path / "ours.key").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("text", ["", "AAAA", "A" * 44, "not base64!", "QUFB="])
def test_malformed_key_files_are_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.key"
    path.write_text(text + "\n")
    with pytest.raises(ValueError):
        load_key(path)
