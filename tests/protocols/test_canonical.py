"""Canonical bytes: the rules a second implementation must reproduce."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.canonical import MAX_SAFE_INT, canonical, parse_canonical
from protocols.errors import ProtocolError, Reason


def test_sorted_compact_utf8() -> None:
    assert canonical({"b": 1, "a": [True, None, "é"]}) == '{"a":[true,null,"é"],"b":1}'.encode()


def test_escapes_follow_jcs() -> None:
    assert canonical({"s": '\x01\n\t"\\/\u2028'}) == b'{"s":"\\u0001\\n\\t\\"\\\\/\xe2\x80\xa8"}'


@pytest.mark.parametrize("bad", [1.5, MAX_SAFE_INT + 1, {"k": {1, 2}}, {"é": 1}])
def test_refuses_what_it_cannot_carry(bad: object) -> None:
    with pytest.raises(ProtocolError) as err:
        canonical({"x": bad})
    assert err.value.reason == Reason.SCHEMA


def test_depth_limit() -> None:
    deep: object = 1
    for _ in range(10):
        deep = {"d": deep}
    with pytest.raises(ProtocolError):
        canonical({"x": deep})


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"a": 1}', Reason.NOT_CANONICAL),
        (b'{"b":1,"a":2}', Reason.NOT_CANONICAL),
        (b'{"a":1,"a":1}', Reason.NOT_CANONICAL),
        (b'{"a":"\\u00e9"}', Reason.NOT_CANONICAL),
        (b"[]", Reason.MALFORMED),
        (b"\xff", Reason.MALFORMED),
        (b"", Reason.MALFORMED),
        (b'{"a":' + b"[" * 2000 + b"]" * 2000 + b"}", Reason.MALFORMED),
    ],
)
def test_parse_refuses_non_canonical(data: bytes, reason: Reason) -> None:
    with pytest.raises(ProtocolError) as err:
        parse_canonical(data, 1 << 20)
    assert err.value.reason == reason


def test_parse_size_limit_before_parsing() -> None:
    with pytest.raises(ProtocolError) as err:
        parse_canonical(b'{"a":"' + b"x" * 100 + b'"}', 50)
    assert err.value.reason == Reason.OVERSIZED


scalars = st.one_of(st.none(), st.booleans(), st.integers(-MAX_SAFE_INT, MAX_SAFE_INT), st.text(max_size=20))
objects = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(alphabet="abcxyz_09", min_size=1, max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.text(alphabet="abcdefgh", min_size=1, max_size=4), objects, max_size=5))
def test_round_trip_is_identity(obj: dict[str, object]) -> None:
    try:
        data = canonical(obj)
    except ProtocolError:
        return  # deeper than the limit
    assert parse_canonical(data, 1 << 20) == obj
    assert canonical(parse_canonical(data, 1 << 20)) == data
