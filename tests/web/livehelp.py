"""A real HTTP server for the app (uvicorn in a thread) and the ingest's live-state write, for the
live tests (server-sent events need a real connection; TestClient buffers streams)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any

import psycopg
import uvicorn

from server import clock
from server.db import queries
from server.store.times import TZ
from server.web.app import create_app
from sim.devstack import free_port
from tests.web.conftest import settings_for


@contextmanager
def serve(dsn: str, *, port: int = 0, **kw: Any) -> Iterator[str]:
    """The app under uvicorn in a thread, on `port` (a free one unless told: the login tests
    register the browser's callback URL with their provider before the server starts)."""
    port = port or free_port()
    config = uvicorn.Config(create_app(settings_for(dsn, **kw)), host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test web server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def store_live(dsn: str, instrument_id: str, unit_id: str, agent_id: str, state: str, *,
               since: datetime | None = None, identifier: str | None = None, org_name: str | None = None,
               today_running_s: float = 0.0, online: bool = True) -> None:
    """Write the live state the way ingest does (server/db/queries.upsert_live: row + NOTIFY on commit)."""
    now = clock.now()
    today: date = now.astimezone(TZ).date()
    row = {"instrument_id": instrument_id, "unit_id": unit_id, "agent_id": agent_id, "state": state,
           "state_since": since or now, "session_id": "s-live" if identifier else None, "identifier": identifier,
           "org_name": org_name, "today": today, "today_running_s": today_running_s, "last_seq": 1,
           "last_t": now, "last_received_at": now, "online": online}
    with psycopg.connect(dsn) as conn:
        queries.upsert_live(conn, [row])
