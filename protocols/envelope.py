"""Envelopes and other signed messages: limits, the bytes that are signed, sealing.

Light on purpose (no pydantic): the agent seals with this module. Incoming messages are checked
by `protocols.validate`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from protocols import PROTOCOL_VERSION
from protocols.canonical import canonical
from protocols.signing import Signer, key_id, sign

MAX_ENVELOPE_BYTES = 256 * 1024
MAX_RECORDS = 2000
MAX_RECORD_BYTES = 16 * 1024
MAX_CONTROL_BYTES = 4 * 1024  # birth, death, ack, cmd


def signed_bytes(message: Mapping[str, Any]) -> bytes:
    """What the signature covers: the canonical bytes of the message without its `sig` member."""
    return canonical({k: v for k, v in message.items() if k != "sig"})


def seal(message: Mapping[str, Any], key: Signer) -> bytes:
    """Sign a message and return its canonical wire bytes, `sig` included."""
    body = dict(message)
    body.pop("sig", None)
    body["sig"] = sign(key, canonical(body))
    return canonical(body)


def rec_header(*, key: Signer, agent: str, unit: str, instrument: str, boot: int, sent: int) -> dict[str, Any]:
    """A `rec` message's fields but its records and signature (the agent's publisher also seals
    spooled bodies under it without parsing them: agent/publisher.py `seal_records`)."""
    return {
        "v": PROTOCOL_VERSION,
        "msg": "rec",
        "agent": agent,
        "key": key_id(key),
        "unit": unit,
        "instrument": instrument,
        "boot": boot,
        "sent": sent,
    }


def envelope(
    *,
    key: Signer,
    agent: str,
    unit: str,
    instrument: str,
    boot: int,
    sent: int,
    records: Sequence[Mapping[str, Any]],
) -> bytes:
    """Seal records (already chained, contiguous, ascending seq) into one `rec` message."""
    body = rec_header(key=key, agent=agent, unit=unit, instrument=instrument, boot=boot, sent=sent)
    body["records"] = [dict(r) for r in records]
    return seal(body, key)


def birth(
    *,
    key: Signer,
    agent: str,
    unit: str,
    instrument: str,
    boot: int,
    conn: int,
    t: int,
    next_seq: int,
    spool_first: int,
    acked: int,
    sw: str,
) -> bytes:
    return seal(
        {
            "v": PROTOCOL_VERSION,
            "msg": "birth",
            "agent": agent,
            "key": key_id(key),
            "unit": unit,
            "instrument": instrument,
            "boot": boot,
            "conn": conn,
            "t": t,
            "next_seq": next_seq,
            "spool_first": spool_first,
            "acked": acked,
            "sw": sw,
        },
        key,
    )


def death(
    *, key: Signer, agent: str, unit: str, instrument: str, boot: int, conn: int, t: int, clean: bool
) -> bytes:
    """The Will (clean=False, signed at connect time) or the message of a clean stop (clean=True)."""
    return seal(
        {
            "v": PROTOCOL_VERSION,
            "msg": "death",
            "agent": agent,
            "key": key_id(key),
            "unit": unit,
            "instrument": instrument,
            "boot": boot,
            "conn": conn,
            "t": t,
            "clean": clean,
        },
        key,
    )


def ack(*, agent: str, acked: int, t: int) -> bytes:
    return canonical({"v": PROTOCOL_VERSION, "msg": "ack", "agent": agent, "acked": acked, "t": t})


def command(*, agent: str, cmd: str, t: int, first: int | None = None, last: int | None = None) -> bytes:
    body: dict[str, Any] = {"v": PROTOCOL_VERSION, "msg": "cmd", "agent": agent, "cmd": cmd, "t": t}
    if first is not None:
        body["first"] = first
    if last is not None:
        body["last"] = last
    return canonical(body)


SESSION_COMMANDS = ("checkin", "checkout")
"""Commands that act for a person at the instrument: signed by the server's command key (SPEC §9.5)."""


def session_command(
    *,
    key: Signer,
    agent: str,
    unit: str,
    instrument: str,
    cmd: str,
    id: str,
    n: int,
    t: int,
    exp: int,
    method: str,
    user: str,
    session: str,
) -> bytes:
    """A signed `checkin` / `checkout` command: the agent records (or ends) `session` for `user`."""
    if cmd not in SESSION_COMMANDS:
        raise ValueError(f"not a session command: {cmd!r}")
    return seal(
        {
            "v": PROTOCOL_VERSION,
            "msg": "cmd",
            "agent": agent,
            "cmd": cmd,
            "key": key_id(key),
            "unit": unit,
            "instrument": instrument,
            "id": id,
            "n": n,
            "t": t,
            "exp": exp,
            "method": method,
            "user": user,
            "session": session,
        },
        key,
    )
