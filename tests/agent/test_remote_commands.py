"""The agent's checks of the server's signed check-in/check-out commands (SPEC §9.5): each refusal
has its reason, and a command is taken once."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from agent.identity.remote import Refused, RemoteCommands
from protocols import envelope as env
from protocols.canonical import canonical
from protocols.signing import generate, public_to_b64

NOW = 1_780_000_000_000
SERVER = generate()


def make(**over: Any) -> bytes:
    args: dict[str, Any] = {"key": SERVER, "agent": "ag-1", "unit": "u1", "instrument": "i1", "cmd": "checkin",
                            "id": "0123456789abcdef", "n": 5, "t": NOW, "exp": NOW + 60_000, "method": "checkin",
                            "user": "person:p1", "session": "qr-0123456789abcdef"}
    args.update(over)
    return env.session_command(**args)


def checker(key: str | None = None, last_n: int = 4) -> tuple[RemoteCommands, list[int]]:
    stored: list[int] = []
    rc = RemoteCommands("ag-1", "u1", "i1", public_to_b64(SERVER) if key is None else key, last_n,
                        stored.append, lambda: NOW)
    return rc, stored


def refused(rc: RemoteCommands, raw: bytes) -> str:
    with pytest.raises(Refused) as exc:
        rc.check(raw)
    return exc.value.reason


def test_good_command_is_taken_once_and_its_sequence_kept() -> None:
    rc, stored = checker()
    cmd = rc.check(make())
    assert (cmd.cmd, cmd.user, cmd.session, cmd.n) == ("checkin", "person:p1", "qr-0123456789abcdef", 5)
    assert stored == [5]
    assert refused(rc, make()) == "replayed"  # the same bytes again
    assert refused(rc, make(id="1123456789abcdef", n=5)) == "replayed"  # a new id, an old sequence
    assert rc.check(make(id="2123456789abcdef", n=9, cmd="checkout")).cmd == "checkout"
    assert stored == [5, 9]


def test_sequence_survives_a_restart() -> None:
    rc, _ = checker(last_n=5)  # what the spool kept from before the restart
    assert refused(rc, make(n=5)) == "replayed"


def test_expired() -> None:
    rc, stored = checker()
    assert refused(rc, make(exp=NOW - 1)) == "expired"
    assert stored == []


def test_for_another_instrument_unit_or_agent() -> None:
    rc, _ = checker()
    assert refused(rc, make(instrument="i2")) == "wrong_instrument"
    assert refused(rc, make(unit="u2")) == "wrong_instrument"
    assert refused(rc, make(agent="ag-2")) == "wrong_instrument"


def test_badly_signed() -> None:
    rc, _ = checker()
    other = generate()
    assert refused(rc, make(key=other)) == "unknown_key"  # another key altogether
    raw = make()
    tampered = raw.replace(b"person:p1", b"person:p2")
    assert refused(rc, tampered) == "bad_signature"
    body = orjson.loads(raw)
    body["sig"] = body["sig"][:-1] + ("B" if body["sig"][-1] == "A" else "A")
    assert refused(rc, canonical(body)) == "bad_signature"


def test_no_server_key_configured() -> None:
    rc, _ = checker(key="")
    assert refused(rc, make()) == "no_server_key"


def test_malformed() -> None:
    rc, _ = checker()
    assert refused(rc, b"not json") == "malformed"
    assert refused(rc, make().replace(b'{"agent"', b'{ "agent"')) == "malformed"  # not canonical
    body = orjson.loads(make())
    body["extra"] = 1
    assert refused(rc, canonical(body)) == "malformed"
    assert refused(rc, b"{" + b" " * 5000 + b"}") == "malformed"
