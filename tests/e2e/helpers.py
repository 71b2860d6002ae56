"""A real agent process publishing to a real ingest: the set-up the end-to-end tests share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from server.ingest.service import Ingest
from tests.agent.helpers import AgentProc
from tests.server.helpers import settings_for


@contextmanager
def agent_with_ingest(dsn: str, broker: Any, cfg: Path, tag: str, **ingest: Any) -> Iterator[AgentProc]:
    """Ingest (its own client id and share group, `ingest` settings on top of the tests' short
    timeouts) connected to the broker, then the agent of `cfg` started; both gone afterwards."""
    s = settings_for(dsn, broker, client_id=f"ing-{tag}", **ingest)
    s.mqtt.share_group = f"g-{tag}"
    ing = Ingest(s).start()
    agent = AgentProc(cfg)
    try:
        assert ing.wait_connected()
        agent.start()
        yield agent
    finally:
        if agent.alive():
            agent.kill()
        ing.stop()
