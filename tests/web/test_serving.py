"""How pages are served: gzip (never for the live stream), cache headers of static assets, and
several worker processes sharing sessions, the login throttle and the live stream."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from server.web import vendor
from sim.devstack import free_port, role_dsn
from tests.web.conftest import PASSWORD, Web
from tests.web.livehelp import serve, store_live

REPO = Path(__file__).resolve().parents[2]


def test_pages_and_json_are_gzipped_when_asked(web: Web) -> None:
    c = web.as_("mgr-a")
    page = c.get("/units/ua/board", headers={"Accept-Encoding": "gzip"})
    assert page.status_code == 200 and page.headers["content-encoding"] == "gzip"
    assert "accept-encoding" in page.headers["vary"].lower() and "ua-xrd" in page.text
    api = c.get("/openapi.json", headers={"Accept-Encoding": "gzip"})
    assert api.headers["content-encoding"] == "gzip" and api.json()["openapi"]
    plain = c.get("/units/ua/board", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.text == page.text
    assert page.headers["cache-control"] == "no-store" and page.headers["server-timing"].startswith("app;dur=")
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_static_assets_versioned_and_cached_for_a_year(web: Web) -> None:
    c = web.as_("mgr-a")
    page = c.get("/units/ua/board").text
    url = vendor.static_url("app.css")
    assert f'href="{url}"' in page and f'src="{vendor.static_url("board.js")}"' in page
    css = c.get(url, headers={"Accept-Encoding": "gzip"})
    assert css.status_code == 200 and css.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert css.content == (vendor.STATIC_DIR / "app.css").read_bytes()
    assert css.headers["content-encoding"] == "gzip"  # css is text: worth compressing
    # an old page's digest, or none, gets the current file but must revalidate
    for stale in ("/static/app.css?v=000000000000", "/static/app.css"):
        r = c.get(stale)
        assert r.status_code == 200 and r.headers["cache-control"] == "no-cache" and r.headers["etag"]
        assert c.get(stale, headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    assert c.get("/static/nothing.css?v=1").status_code == 404


def _lines(r: httpx.Response, out: queue.Queue[str]) -> None:
    try:
        for line in r.iter_lines():
            out.put(line)
    except httpx.HTTPError:
        pass


def _next_tile(lines: queue.Queue[str], instrument: str, timeout: float = 20) -> dict[str, object]:
    """The next `tile` event about `instrument` (other events and keepalives skipped)."""
    deadline = time.monotonic() + timeout
    name = ""
    while True:
        line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:") and name == "tile":
            tile = json.loads(line[5:])
            if tile["id"] == instrument:
                return dict(tile)


def test_live_stream_is_not_gzipped(make_web: Callable[..., Web]) -> None:
    web = make_web()
    store_live(web.dsn, "ua-xrd", "ua", "ua-xrd-a1", "idle")
    with serve(web.dsn) as base, httpx.Client(base_url=base, timeout=10) as c:
        assert c.post("/api/v1/auth/login", json={"login": "mgr-a", "password": PASSWORD}).status_code == 200
        with c.stream("GET", "/api/v1/units/ua/live/stream", headers={"Accept-Encoding": "gzip"}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            assert "content-encoding" not in r.headers
            raw = next(r.iter_raw())
            assert raw.startswith(b"retry:")  # plain bytes on the wire, event by event


@contextmanager
def _workers(dsn: str, n: int) -> Iterator[str]:
    """`jishi-server web` with `n` worker processes, as deployed."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "JISHI_WEB_DSN": role_dsn(dsn, "jishi_web"),
           "JISHI_WEB_WORKERS": str(n), "JISHI_WEB_SSE_KEEPALIVE_S": "0.5"}
    env.pop("JISHI_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-m", "server.cli", "web", "--port", str(port), "--insecure-cookies",
                             "--log-level", "warning"], cwd=REPO, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        seen: set[str] = set()
        while len(seen) < n:  # every worker up and listening
            assert proc.poll() is None and time.monotonic() < deadline, "the workers did not start"
            try:
                r = httpx.get(base + "/healthz", timeout=2)
                if r.status_code == 200 and r.json()["live_listening"]:
                    seen.add(r.headers["x-worker"])
            except httpx.HTTPError:
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(30)


def test_two_workers_share_sessions_throttle_and_live_changes(make_web: Callable[..., Web]) -> None:
    web = make_web()
    store_live(web.dsn, "ua-xrd", "ua", "ua-xrd-a1", "idle")
    with _workers(web.dsn, 2) as base, httpx.Client(base_url=base, timeout=10) as c:
        assert c.post("/api/v1/auth/login", json={"login": "mgr-a", "password": PASSWORD}).status_code == 200
        # the session (in the database) is known to both workers: new connections until each answered
        answered: set[str] = set()
        for _ in range(60):
            with httpx.Client(base_url=base, cookies=c.cookies, timeout=10) as fresh:
                r = fresh.get("/api/v1/auth/me")
                assert r.status_code == 200 and r.json()["login"] == "mgr-a"
                answered.add(r.headers["x-worker"])
            if len(answered) == 2:
                break
        assert len(answered) == 2
        # one stream on each worker (new connections until both are covered)
        streams: dict[str, queue.Queue[str]] = {}
        opened: list[tuple[httpx.Client, httpx.Response]] = []
        try:
            for _ in range(60):
                cl = httpx.Client(base_url=base, cookies=c.cookies, timeout=30)
                r = cl.send(cl.build_request("GET", "/api/v1/units/ua/live/stream"), stream=True)
                opened.append((cl, r))
                assert r.status_code == 200
                if r.headers["x-worker"] in streams:
                    continue
                lines: queue.Queue[str] = queue.Queue()
                threading.Thread(target=_lines, args=(r, lines), daemon=True).start()
                streams[r.headers["x-worker"]] = lines
                if len(streams) == 2:
                    break
            assert len(streams) == 2
            for lines in streams.values():  # each has its snapshot before the change is made
                while not lines.get(timeout=20).startswith("event: snapshot"):
                    pass
            store_live(web.dsn, "ua-xrd", "ua", "ua-xrd-a1", "running", org_name="丙科技有限公司")
            for lines in streams.values():
                tile = _next_tile(lines, "ua-xrd")
                assert tile["status"] == "running" and tile["user_org"] is None
        finally:
            for cl, r in opened:
                r.close()
                cl.close()
        # failed logins count across workers: the allowance is spent whichever worker answers
        seen: set[str] = set()
        codes = []
        for _ in range(8):
            with httpx.Client(base_url=base, timeout=30) as fresh:
                r = fresh.post("/api/v1/auth/login", json={"login": "mgr-b", "password": "wrong-password!"})
                codes.append(r.status_code)
                seen.add(r.headers["x-worker"])
        assert codes[:5] == [401] * 5 and 429 in codes[5:], codes


def test_reports_are_reused_until_an_audited_change(web: Web) -> None:
    kept = web.app.state.results
    c = web.as_("eva")
    first = c.get("/units/ua/report?year=2025")
    assert first.status_code == 200 and "X射线衍射仪" in first.text
    computed = kept.computed
    again = c.get("/units/ua/report?year=2025")
    assert again.status_code == 200 and kept.computed == computed  # the same result, not computed again
    assert web.as_("mgr-a").get("/units/ua/report?year=2025").status_code == 200 and kept.computed == computed
    # a registry change (audited, by any process) is shown at once
    web.sql("SELECT audit_as('test', true); UPDATE instruments SET name = '新名字衍射仪' WHERE id = 'ua-xrd'")
    changed = c.get("/units/ua/report?year=2025")
    assert "新名字衍射仪" in changed.text and kept.computed == computed + 1


def test_a_page_converts_only_the_rows_it_draws() -> None:
    from datetime import UTC, datetime
    from decimal import Decimal

    from server.evaluation.period import Period
    from server.evaluation.report import Column, Report, Table
    from server.web.services.evaluation import page_view

    rows = [{"n": i, "amount": Decimal(i) / 4} for i in range(250)]
    cols = [Column("n", "n", "int"), Column("amount", "amount", "money")]
    rep = Report("t", Period.year(2025), datetime(2026, 1, 5, tzinfo=UTC), [("k", "K", Decimal("1.5"), "money")],
                 [Table("long", "Long", cols, rows), Table("short", "Short", cols, rows[:3]),
                  Table("whole", "Whole", cols, rows)], {"unit": {"indicators": {"x": 1}}})
    full, view = rep.as_dict(), page_view(rep, 200, whole=("whole",))
    assert {k: v for k, v in view.items() if k != "tables"} == {k: v for k, v in full.items() if k != "tables"}
    long = view["tables"]["long"]["rows"]
    assert len(long) == 250 and long[:200] == full["tables"]["long"]["rows"][:200]
    assert long[1] == {"n": 1, "amount": "0.25"}
    assert view["tables"]["short"] == full["tables"]["short"] and view["tables"]["whole"] == full["tables"]["whole"]
    with pytest.raises(IndexError):
        long[:201]
