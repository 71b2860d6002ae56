"""MQTT topic names: `jishi/v1/<unit>/<instrument>/<kind>`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

PREFIX = "jishi"
VERSION = "v1"
ID_PATTERN = r"[A-Za-z0-9_-]{1,64}"
_ID = re.compile(rf"^{ID_PATTERN}$")


class Kind(StrEnum):
    """Topic kinds. Direction, QoS and retain flag are fixed per kind (see SPEC.md)."""

    REC = "rec"  # agent -> server, QoS 1, not retained: envelopes of records
    BIRTH = "birth"  # agent -> server, QoS 1, retained: sent after every connect
    DEATH = "death"  # agent -> server, QoS 1, retained: the MQTT Will, or sent on clean stop
    ACK = "ack"  # server -> agent, QoS 1, retained: durable watermark
    CMD = "cmd"  # server -> agent, QoS 1, not retained: resend, rebirth


RETAINED = {Kind.BIRTH, Kind.DEATH, Kind.ACK}


@dataclass(frozen=True)
class Topic:
    unit: str
    instrument: str
    kind: Kind
    version: str = VERSION

    def __str__(self) -> str:
        return f"{PREFIX}/{self.version}/{self.unit}/{self.instrument}/{self.kind.value}"


def valid_id(value: str) -> bool:
    return bool(_ID.match(value))


def topic(unit: str, instrument: str, kind: Kind) -> str:
    if not valid_id(unit):
        raise ValueError(f"unit id {unit!r} must match {ID_PATTERN}")
    if not valid_id(instrument):
        raise ValueError(f"instrument id {instrument!r} must match {ID_PATTERN}")
    return str(Topic(unit, instrument, kind))


def parse(name: str) -> Topic:
    """Parse a topic name; raises ValueError naming what is wrong."""
    parts = name.split("/")
    if len(parts) != 5 or parts[0] != PREFIX:
        raise ValueError(f"topic {name!r} is not {PREFIX}/<version>/<unit>/<instrument>/<kind>")
    _, version, unit, instrument, kind = parts
    if version != VERSION:
        raise ValueError(f"topic version {version!r} is not {VERSION}")
    if not valid_id(unit) or not valid_id(instrument):
        raise ValueError(f"topic {name!r} has an invalid unit or instrument id")
    try:
        k = Kind(kind)
    except ValueError:
        raise ValueError(f"topic kind {kind!r} is not one of {[k.value for k in Kind]}") from None
    return Topic(unit, instrument, k, version)


def subscription(kind: Kind, share_group: str | None = None) -> str:
    """Filter for one kind across all instruments; a shared subscription when a group is given."""
    base = f"{PREFIX}/{VERSION}/+/+/{kind.value}"
    return f"$share/{share_group}/{base}" if share_group else base
