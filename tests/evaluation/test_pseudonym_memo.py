"""The pseudonymizer remembers what it computed (one unit's report names the same people ~18,600
times): remembered pseudonyms must be those a fresh instance computes, per key, and the memory
must stay bounded."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from server.evaluation import privacy
from server.evaluation.privacy import Pseudonymizer


def reference(key: bytes, kind: str, value: str) -> str:
    """The pseudonym as defined (keyed HMAC-SHA256, first 12 hex digits), computed here."""
    return hmac.new(key, f"{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()[:12]


def test_remembered_pseudonyms_are_the_computed_ones_per_key() -> None:
    a, b = Pseudonymizer(b"a" * 32), Pseudonymizer(b"b" * 32)
    for _ in range(3):  # the first round computes, the others are remembered
        assert a.user("P1_1") == "U-" + reference(b"a" * 32, "user", "P1_1")
        assert b.user("P1_1") == "U-" + reference(b"b" * 32, "user", "P1_1")
        assert a.identity("card", "0042") == "X-" + reference(b"a" * 32, "identity", "card:0042")
        assert a.person(None, "card", "0042") == a.identity("card", "0042")
    # a user id that spells an identity's value is still a user's pseudonym, not the identity's
    assert a.user("card:0042") != a.identity("card", "0042")
    assert a.user("P1_1") != b.user("P1_1")


def test_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(privacy, "MEMO_SIZE", 8)
    p = Pseudonymizer(b"k" * 32)
    for i in range(50):
        assert p.user(f"P{i}") == "U-" + reference(b"k" * 32, "user", f"P{i}")
        assert len(p._memo) <= 8
    assert p.user("P0") == "U-" + reference(b"k" * 32, "user", "P0")  # forgotten, computed again
