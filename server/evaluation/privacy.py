"""Stable pseudonyms for users in evaluator-facing outputs (art. 17 protects users' identities).

A pseudonym is a keyed HMAC of the platform user id (or, for an identity nobody mapped, of the
identity the agent saw), so the same person gets the same pseudonym in every report and export
without the evaluators learning who it is. The key lives in the database (created on first use) or
comes from JISHI_PSEUDONYM_KEY; whoever holds it can re-identify, nobody else can.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

import psycopg

KEY_NAME = "pseudonym_key"
ENV_KEY = "JISHI_PSEUDONYM_KEY"
MEMO_SIZE = 65_536
"""pseudonyms one instance remembers before it starts over (an instance lives for one request)"""


class Pseudonymizer:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a pseudonym key needs at least 16 bytes")
        self._key = key
        # One unit's report names the same few dozen people ~18,600 times (each service record's
        # applicant, twice): the HMAC is a pure function of its input, so each is computed once
        # (40 ms of a 0.46 s report). Bounded, in case an instance is kept.
        self._memo: dict[str, str] = {}

    def user(self, user_id: str) -> str:
        return "U-" + self._digest("user", user_id)

    def identity(self, method: str, identifier: str) -> str:
        """An identity the agent saw that maps to no platform user."""
        return "X-" + self._digest("identity", f"{method}:{identifier}")

    def person(self, user_id: str | None, method: str | None, identifier: str | None) -> str:
        if user_id:
            return self.user(user_id)
        if method and identifier:
            return self.identity(method, identifier)
        return ""

    def _digest(self, kind: str, value: str) -> str:
        message = f"{kind}\x00{value}"
        digest = self._memo.get(message)
        if digest is None:
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            digest = hmac.new(self._key, message.encode(), hashlib.sha256).hexdigest()[:12]
            self._memo[message] = digest
        return digest


def load(conn: psycopg.Connection[tuple[object, ...]]) -> Pseudonymizer:
    """The region's pseudonymizer: the env key if set, else the stored one (made once). Read first:
    the web may run this on a read-only replica, where only the very first use (no key yet) writes."""
    env = os.environ.get(ENV_KEY)
    if env:
        return Pseudonymizer(env.encode())
    row = conn.execute("SELECT value FROM evaluation_secrets WHERE name = %s", (KEY_NAME,)).fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO evaluation_secrets (name, value) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
            (KEY_NAME, secrets.token_bytes(32)),
        )
        row = conn.execute("SELECT value FROM evaluation_secrets WHERE name = %s", (KEY_NAME,)).fetchone()
    assert row is not None
    value = row[0]
    assert isinstance(value, bytes | memoryview)
    return Pseudonymizer(bytes(value))
