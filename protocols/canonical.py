"""Canonical bytes: the one encoding that is hashed and signed.

A subset of RFC 8785 (JCS) that every language can produce without a JCS library: UTF-8 JSON,
no insignificant white space, object keys sorted (keys are ASCII, so code-point and UTF-16 order
agree), strings escaped as JCS says, and integers only: no floats, every number in
[-2**53 + 1, 2**53 - 1]. Measured values travel as scaled integers (milliwatts, permille).
"""

from __future__ import annotations

from typing import Any

import orjson

from protocols.errors import ProtocolError, Reason

MAX_SAFE_INT = 2**53 - 1
MAX_DEPTH = 6


def canonical(obj: Any) -> bytes:
    """Encode `obj` canonically; raises ProtocolError if it holds something JCS-subset cannot carry."""
    _check(obj, "$", 0)
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def dumps_sorted(obj: Any) -> bytes:
    """Canonical bytes of an object already known to hold only allowed values (no checks: hot path)."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def parse_canonical(data: bytes, max_bytes: int) -> dict[str, Any]:
    """Parse a message that must already be in canonical form.

    Requiring canonical input rejects duplicate keys, white space and other escapes before any
    other check, so every parser sees the same object that was signed. Floats and integers out of
    range survive this step; the strict models (every number there is a bounded int) refuse them.
    """
    if len(data) > max_bytes:
        raise ProtocolError(Reason.OVERSIZED, f"{len(data)} bytes, limit {max_bytes}")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(Reason.MALFORMED, f"not UTF-8 JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(Reason.MALFORMED, f"top level is {type(obj).__name__}, expected an object")
    try:
        again = dumps_sorted(obj)
    except (orjson.JSONEncodeError, TypeError) as exc:
        raise ProtocolError(Reason.NOT_CANONICAL, str(exc)) from None
    if again != data:
        raise ProtocolError(
            Reason.NOT_CANONICAL,
            "bytes differ from the canonical encoding (white space, key order, duplicate keys or escapes)",
        )
    return obj


def _check(obj: Any, path: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ProtocolError(Reason.SCHEMA, f"nested deeper than {MAX_DEPTH}", path)
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return
    if isinstance(obj, int):
        if not -MAX_SAFE_INT <= obj <= MAX_SAFE_INT:
            raise ProtocolError(Reason.SCHEMA, "integer outside +/-(2**53-1)", path)
        return
    if isinstance(obj, float):
        raise ProtocolError(Reason.SCHEMA, "floats are not allowed; use a scaled integer", path)
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str) or not key.isascii():
                raise ProtocolError(Reason.SCHEMA, "object keys must be ASCII strings", path)
            _check(value, f"{path}.{key}", depth + 1)
        return
    if isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            _check(value, f"{path}[{i}]", depth + 1)
        return
    raise ProtocolError(Reason.SCHEMA, f"type {type(obj).__name__} cannot be encoded", path)
