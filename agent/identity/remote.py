"""Check-in and check-out sent by the server (a phone scanned the instrument's label): SPEC §9.5.

The server signs each command with its own Ed25519 command key; the agent learns the public key
from its configuration (`[identity] server_key`, written at enrolment). A command is taken only
when it is canonical, signed by that key, addressed to this agent, unit and instrument, not
expired, and newer than every command taken before (`n`, the per-agent command sequence, kept in
the spool so a restart does not reopen the window; the id is remembered too). Every refusal is
logged with its reason; a taken command becomes the same session records as a local check-in,
under the session id the server chose (`qr-<command id>`), which is how the server sees the result.

Verification uses PyNaCl (already the agent's signer), not `cryptography` (memory: agent/signer.py).
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from nacl.exceptions import BadSignatureError

from agent.signer import VerifyKey
from protocols.canonical import canonical
from protocols.envelope import MAX_CONTROL_BYTES, SESSION_COMMANDS, signed_bytes
from protocols.signing import b64d, b64e

log = logging.getLogger("jishi.remote")

META_N = "cmd_n"
FIELDS = {"v", "msg", "agent", "cmd", "key", "unit", "instrument", "id", "n", "t", "exp", "method", "user",
          "session", "sig"}
"""Every member of a session command, no more, no less."""


class Refused(Exception):
    """A command the agent will not take; `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


REASONS = ("malformed", "no_server_key", "unknown_key", "bad_signature", "wrong_instrument", "expired", "replayed")


@dataclass(frozen=True)
class SessionCommand:
    cmd: str  # checkin | checkout
    id: str
    n: int
    method: str  # checkin | booking
    user: str
    session: str


class RemoteCommands:
    """Checks session commands for one agent; `last_n` persists through `store_n`."""

    def __init__(self, agent: str, unit: str, instrument: str, server_key: str, last_n: int,
                 store_n: Callable[[int], None], now_ms: Callable[[], int]) -> None:
        self.ids = (agent, unit, instrument)
        self.key: VerifyKey | None = None
        self.key_id = ""
        if server_key:
            raw = b64d(server_key)
            self.key = VerifyKey(raw)
            self.key_id = hashlib.sha256(raw).hexdigest()[:16]
        self.last_n = last_n
        self._store_n = store_n
        self._now_ms = now_ms
        self._seen: deque[str] = deque(maxlen=256)

    def check(self, raw: bytes | dict[str, Any]) -> SessionCommand:
        """The command if it may be taken (and then it is remembered: a second copy is `replayed`)."""
        body = self._parse(raw)
        if self.key is None:
            raise Refused("no_server_key", "no server_key is configured: commands from the server are refused")
        if body["key"] != self.key_id:
            raise Refused("unknown_key", f"signed by key {body['key']}, the server's is {self.key_id}")
        sig = body["sig"]
        try:
            sig_raw = b64d(sig)
        except ValueError:
            raise Refused("bad_signature", "the signature is not base64url") from None
        if len(sig_raw) != 64 or b64e(sig_raw) != sig:
            raise Refused("bad_signature", "the signature is not 64 bytes in its one spelling")
        try:
            self.key.verify(signed_bytes(body), sig_raw)
        except BadSignatureError:
            raise Refused("bad_signature", "the signature does not verify") from None
        if (body["agent"], body["unit"], body["instrument"]) != self.ids:
            raise Refused("wrong_instrument", f"for {body['agent']} {body['unit']}/{body['instrument']}, "
                          f"this agent is {'/'.join(self.ids)}")
        now = self._now_ms()
        if now > body["exp"]:
            raise Refused("expired", f"expired {now - body['exp']} ms ago")
        if body["n"] <= self.last_n or body["id"] in self._seen:
            raise Refused("replayed", f"command {body['id']} n={body['n']}, last taken n={self.last_n}")
        self.last_n = body["n"]
        self._seen.append(body["id"])
        self._store_n(self.last_n)
        return SessionCommand(body["cmd"], body["id"], body["n"], body["method"], body["user"], body["session"])

    @staticmethod
    def _parse(raw: bytes | dict[str, Any]) -> dict[str, Any]:
        if isinstance(raw, bytes):
            if len(raw) > MAX_CONTROL_BYTES:
                raise Refused("malformed", f"{len(raw)} bytes, at most {MAX_CONTROL_BYTES}")
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise Refused("malformed", "not JSON") from None
            if not isinstance(parsed, dict):
                raise Refused("malformed", "not an object")
            body: dict[str, Any] = parsed
            try:
                if canonical(body) != raw:
                    raise Refused("malformed", "not canonical JSON")
            except (TypeError, ValueError):
                raise Refused("malformed", "not canonical JSON") from None
        else:
            body = raw
        if set(body) != FIELDS:
            raise Refused("malformed", f"members {sorted(set(body) ^ FIELDS)} missing or unknown")
        if body["v"] != 1 or body["msg"] != "cmd" or body["cmd"] not in SESSION_COMMANDS:
            raise Refused("malformed", "not a v1 checkin/checkout command")
        for name in ("n", "t", "exp"):
            if not isinstance(body[name], int) or isinstance(body[name], bool) or body[name] < 1:
                raise Refused("malformed", f"{name} must be a positive integer")
        for name in ("agent", "unit", "instrument", "id", "key", "user", "session", "sig", "method"):
            if not isinstance(body[name], str) or not body[name]:
                raise Refused("malformed", f"{name} must be a non-empty string")
        if body["method"] not in ("checkin", "booking") or len(body["user"]) > 128 or len(body["session"]) > 64:
            raise Refused("malformed", "method, user or session out of range")
        if any(ord(c) < 32 or ord(c) == 127 for c in body["user"]):
            raise Refused("malformed", "control characters in user")
        return body
