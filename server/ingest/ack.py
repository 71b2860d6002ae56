"""Server -> agent messages: the durable watermark (ack) and resend commands.

Acks are published only after the transaction that stored the records has committed, retained,
so an agent that reconnects learns its watermark at once. `acked` is the highest seq such that
everything up to it is stored (or declared lost for good): the agent may free its spool up to it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from protocols import envelope, topics

Publish = Callable[..., None]


@dataclass(frozen=True, slots=True)
class AckOut:
    agent_id: str
    unit_id: str
    instrument_id: str
    acked: int


@dataclass(frozen=True, slots=True)
class ResendOut:
    agent_id: str
    unit_id: str
    instrument_id: str
    first: int
    last: int


def now_ms() -> int:
    return int(time.time() * 1000)


def publish_acks(publish: Publish, acks: list[AckOut]) -> None:
    t = now_ms()
    for a in acks:
        publish(topics.topic(a.unit_id, a.instrument_id, topics.Kind.ACK),
                envelope.ack(agent=a.agent_id, acked=a.acked, t=t), retain=True)


def publish_resends(publish: Publish, cmds: list[ResendOut]) -> None:
    t = now_ms()
    for c in cmds:
        publish(topics.topic(c.unit_id, c.instrument_id, topics.Kind.CMD),
                envelope.command(agent=c.agent_id, cmd="resend", t=t, first=c.first, last=c.last), retain=False)
