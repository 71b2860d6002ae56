"""fastcheck's shortcuts say what the slower checks said: the hash check (bytes.translate, not a
regex) and the record types the fast check knows (open_envelope skips the unknown-type check)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from protocols import fastcheck

_REFERENCE = re.compile(r"[0-9a-f]{64}")
_NEAR_HEX = st.sampled_from("0123456789abcdefABCDEFg \n\u0660\uff10\u00e9-")


def _regex_says(values: list[str]) -> bool:
    return all(_REFERENCE.fullmatch(v) is not None for v in values)


@given(st.lists(st.text(_NEAR_HEX, min_size=63, max_size=65) | st.text(min_size=64, max_size=64), max_size=4))
def test_hash_check_equals_the_regex(values: list[str]) -> None:
    assert fastcheck._hashes_ok(values) == _regex_says(values)


def test_hash_check_edges() -> None:
    good = "0123456789abcdef" * 4
    assert fastcheck._hashes_ok([good, good])
    assert fastcheck._hashes_ok([])
    for bad in (good.upper(), good[:-1] + "\n", good[:-1] + "\u0660", good[:-1], good + "0", good[:-1] + "g"):
        assert not fastcheck._hashes_ok([good, bad]), bad


def test_fast_check_knows_only_defined_record_types() -> None:
    """open_envelope skips the unknown-type check for what the fast check accepts: sound only
    while every record type the fast check takes is a defined one."""
    from protocols.records import RECORD_TYPES

    tags = {cls.__struct_config__.tag for cls in fastcheck._Rec.__subclasses__()}
    assert tags and tags <= set(RECORD_TYPES)
