from __future__ import annotations

import pytest

from protocols.topics import RETAINED, Kind, parse, subscription, topic


def test_build_and_parse() -> None:
    name = topic("IMU", "ms-01", Kind.REC)
    assert name == "jishi/v1/IMU/ms-01/rec"
    parsed = parse(name)
    assert (parsed.unit, parsed.instrument, parsed.kind) == ("IMU", "ms-01", Kind.REC)


@pytest.mark.parametrize(
    "name",
    [
        "jishi/v1/IMU/ms-01",
        "jishi/v2/IMU/ms-01/rec",
        "other/v1/IMU/ms-01/rec",
        "jishi/v1/IMU/ms 01/rec",
        "jishi/v1/IMU/ms-01/bogus",
        "jishi/v1/+/ms-01/rec",
        "jishi/v1/IMU/ms-01/rec/extra",
    ],
)
def test_parse_refuses(name: str) -> None:
    with pytest.raises(ValueError):
        parse(name)


def test_ids_are_checked_when_building() -> None:
    with pytest.raises(ValueError, match="instrument id"):
        topic("IMU", "a/b", Kind.REC)
    with pytest.raises(ValueError, match="unit id"):
        topic("#", "x", Kind.REC)


def test_subscriptions_and_retain() -> None:
    assert subscription(Kind.REC) == "jishi/v1/+/+/rec"
    assert subscription(Kind.REC, "ingest") == "$share/ingest/jishi/v1/+/+/rec"
    assert RETAINED == {Kind.BIRTH, Kind.DEATH, Kind.ACK}
