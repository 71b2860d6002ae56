"""What more than one test of the protocol needs."""

from __future__ import annotations

from typing import Any

from protocols.canonical import dumps_sorted


def unescaped(value: Any) -> Any:
    """`value` with every string that JSON writes with an escape (a quote, a backslash, a control
    character) spelled plainly, so that its bytes reach decode (which leaves escapes to the reference)"""
    if isinstance(value, str):
        return "plain" if b"\\" in dumps_sorted(value) else value
    if isinstance(value, dict):
        return {k: unescaped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unescaped(v) for v in value]
    return value
