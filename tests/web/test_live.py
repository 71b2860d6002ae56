"""The live board's event stream: a stored change reaches an open stream within a second."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import httpx
import psycopg

from tests.web.conftest import PASSWORD, Web
from tests.web.livehelp import serve, store_live


def _events(lines: Iterator[str]) -> Iterator[tuple[str, object]]:
    name, data = "", ""
    for line in lines:
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
        elif line == "" and name:
            yield name, json.loads(data)
            name, data = "", ""


def test_stream_pushes_a_stored_change_within_a_second(make_web: Callable[..., Web]) -> None:
    web = make_web()
    store_live(web.dsn, "ua-xrd", "ua", "ua-xrd-a1", "idle")
    with serve(web.dsn) as base, httpx.Client(base_url=base, timeout=10) as c:
        assert c.post("/api/v1/auth/login", json={"login": "mgr-a", "password": PASSWORD}).status_code == 200
        with c.stream("GET", "/api/v1/units/ua/live/stream") as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            events = _events(r.iter_lines())
            name, snap = next(events)
            assert name == "snapshot"
            tiles = {t["id"]: t for t in snap}  # type: ignore[attr-defined]
            assert tiles["ua-xrd"]["status"] == "idle" and tiles["ua-nmr"]["status"] == "no_agent"
            assert "ub-sem" not in tiles
            # a change in another unit is not sent here; ours is, within a second
            store_live(web.dsn, "ub-sem", "ub", "ub-sem-a1", "running")
            t0 = time.monotonic()
            store_live(web.dsn, "ua-xrd", "ua", "ua-xrd-a1", "running", identifier="LAB\\zhang",
                       org_name="丙科技有限公司", today_running_s=5400)
            name, tile = next(events)
            elapsed = time.monotonic() - t0
    assert name == "tile"
    assert isinstance(tile, dict)
    assert tile == {**tile, "id": "ua-xrd", "status": "running", "user_org": "丙科技有限公司", "today_hours": 1.5}
    assert "LAB" not in json.dumps(tile)  # the board shows the organisation, not the person
    assert elapsed < 1.0, elapsed


def test_tiles_show_offline_agents(web: Web) -> None:
    store_live(web.dsn, "ua-xrd", "ua", "ua-xrd-a1", "running", online=False)
    tiles = {t["id"]: t for t in web.as_("mgr-a").get("/api/v1/units/ua/live").json()["tiles"]}
    assert tiles["ua-xrd"]["status"] == "offline" and tiles["ua-xrd"]["since"] is not None
    web.sql("UPDATE live_state SET online = true, last_received_at = now() - interval '1 hour'")
    tiles = {t["id"]: t for t in web.as_("mgr-a").get("/api/v1/units/ua/live").json()["tiles"]}
    assert tiles["ua-xrd"]["status"] == "offline"


def test_public_catalog_shows_free_now_without_identity(web: Web) -> None:
    store_live(web.dsn, "ua-xrd", "ua", "ua-xrd-a1", "running", identifier="LAB\\zhang", org_name="丙科技有限公司")
    store_live(web.dsn, "ua-nmr", "ua", "ua-nmr-a1", "idle")
    c = web.client()
    found = {i["id"]: i for i in c.get("/api/v1/public/instruments").json()["items"]}
    assert found["ua-xrd"]["free"] == "no" and found["ua-nmr"]["free"] == "yes"
    assert found["ub-sem"]["free"] == "unknown"
    page = c.get("/catalog").text + c.get("/catalog/ua-xrd").text + c.get("/api/v1/public/instruments/ua-xrd").text
    for secret in ("丙科技", "zhang", "张三"):
        assert secret not in page
    assert "使用中" in c.get("/catalog/ua-xrd").text
    assert [i["id"] for i in c.get("/api/v1/public/instruments", params={"q": "衍射"}).json()["items"]] == ["ua-xrd"]
    assert c.get("/api/v1/public/instruments", params={"classification": "030407"}).json()["total"] == 2
    web.sql("UPDATE instruments SET sharing_mode = '不共享' WHERE id = 'ub-sem'")
    assert c.get("/api/v1/public/instruments/ub-sem").status_code == 404


def test_the_hubs_read_of_changed_tiles_is_the_boards_tiles(web: Web) -> None:
    """The hub reads changed instruments by id (board._TILES_BY[False, True]): the same tiles as the
    board's, for instruments with and without a live row, also once the query is prepared (psycopg
    prepares after 5 runs, and the server may then plan it generically)."""
    import asyncio

    from server import clock
    from server.web.services import board

    store_live(web.dsn, "ua-xrd", "ua", "ua-xrd-a1", "running", identifier="LAB\\zhang", org_name="丙科技有限公司",
               today_running_s=5400)
    store_live(web.dsn, "ub-sem", "ub", "ub-sem-a1", "idle", online=False)
    everything = sorted(r[0] for r in web.sql("SELECT id FROM instruments"))
    hub = board.LiveHub(web.dsn)

    async def reads() -> list[list[dict[str, object]]]:
        try:
            return [await hub._read(ids) for ids in [everything, ["ua-xrd"], ["ub-sem", "ua-nmr"]] * 3]
        finally:
            if hub._reader is not None:
                await hub._reader.close()

    with clock.frozen_at(clock.now()), psycopg.connect(web.dsn) as conn:
        got = asyncio.run(reads())
        for ids, tiles in zip([everything, ["ua-xrd"], ["ub-sem", "ua-nmr"]] * 3, got, strict=True):
            assert tiles == board.tiles(conn, unit_id=None, ids=ids)
    assert {t["id"]: t["status"] for t in got[0]}["ua-xrd"] == "running" and len(got[0]) == len(everything) == 3
    assert [t["status"] for t in got[2]] == ["no_agent", "offline"]
