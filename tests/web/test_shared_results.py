"""Computed reports shared by the web's workers (migration 038, services/results.py): computed once
for all workers, never stale after an audited change whichever worker answers, never shown outside
the asker's scope; and the phases of a request in `Server-Timing`."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from decimal import Decimal

import pytest

from server.web.services.evaluation import ShownRows
from server.web.services.results import Results, decode, encode
from tests.web.conftest import Web

REPORT = "/units/ua/report?year=2025"


def _revenue(html: str) -> str:
    got = re.search(r'id="kpi-revenue"><span>[^<]*</span><b>([^<]*)</b>', html)
    assert got is not None, html[:2000]
    return got.group(1)


def _results(web: Web) -> Results:
    r: Results = web.app.state.results
    return r


def test_a_report_is_computed_once_for_all_workers_and_a_change_shows_from_any(
        make_web: Callable[..., Web]) -> None:
    a, b = make_web(), make_web()  # two workers: two apps, each with its own pool and memory
    ca, cb = a.as_("eva"), b.as_("eva")
    first = ca.get(REPORT)
    assert first.status_code == 200 and _revenue(first.text) == "450.00"
    assert _results(a).computed == 1
    other = cb.get(REPORT)  # the other worker takes the stored result
    assert other.status_code == 200 and _revenue(other.text) == "450.00"
    assert _results(b).computed == 0 and _results(b).from_shared == 1
    # an audited change of a figure's input, made by another process: the next page of either worker shows it
    a.sql("SELECT audit_as('test', true); UPDATE service_records SET amount = 900 WHERE record_no = 'SR-1'")
    assert _revenue(cb.get(REPORT).text) == "900.00"
    assert _revenue(ca.get(REPORT).text) == "900.00"
    assert _results(a).computed + _results(b).computed == 2  # once more in all, not once per worker
    # and back, now the other worker first
    a.sql("SELECT audit_as('test', true); UPDATE service_records SET amount = 450 WHERE record_no = 'SR-1'")
    assert _revenue(ca.get(REPORT).text) == "450.00"
    assert _revenue(cb.get(REPORT).text) == "450.00"


def test_workers_asking_at_once_compute_it_once(make_web: Callable[..., Web]) -> None:
    webs = [make_web(), make_web()]
    clients = [w.as_("eva") for w in webs for _ in range(2)]
    got: list[int] = []
    start = threading.Barrier(len(clients))

    def ask(c: object) -> None:
        start.wait()
        got.append(c.get("/units/ub/report?year=2025").status_code)  # type: ignore[attr-defined]

    threads = [threading.Thread(target=ask, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert got == [200] * len(clients)
    assert sum(_results(w).computed for w in webs) == 1


def test_a_kept_report_is_never_shown_outside_the_askers_scope(make_web: Callable[..., Web]) -> None:
    a, b = make_web(), make_web()
    assert a.as_("mgr-a").get(REPORT).status_code == 200  # kept, in a's memory and in the table
    for web in (a, b):  # the second unit's manager, on the worker that has it and on the other
        page = web.as_("mgr-b").get(REPORT)
        assert page.status_code in (403, 404)
        assert "X射线衍射仪" not in page.text and "kpi-revenue" not in page.text
    # nothing was computed for them, nor taken from the table
    assert _results(b).from_shared == 0 and _results(b).computed == 0


def test_only_what_json_gives_back_exactly_is_shared() -> None:
    view = {"tables": {"t": {"rows": ShownRows([{"n": 1, "v": "0.25"}], 250)}}, "x": [1.5, None, "二"]}
    for value in (view, (view, [{"a": 1}], ["U1"]), {"u1": 0.5, "u2": None}):
        blob = encode(value)
        assert blob is not None and decode(blob) == value
    back = decode(encode(view) or b"")
    assert isinstance(back["tables"]["t"]["rows"], ShownRows) and len(back["tables"]["t"]["rows"]) == 250
    assert encode({1: "a"}) is None  # JSON would give the key back as text
    assert encode({"d": Decimal("1.5")}) is None
    assert decode(encode([(1, 2)]) or b"") == [(1, 2)]


@pytest.mark.parametrize("url", ["/units/ua/board", REPORT])
def test_server_timing_names_the_phases(web: Web, url: str) -> None:
    r = web.as_("eva").get(url, headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200
    phases = dict(p.strip().split(";dur=") for p in r.headers["server-timing"].split(","))
    assert {"app", "db", "render"} <= set(phases)
    assert all(float(v) >= 0 for v in phases.values())
    assert float(phases["db"]) <= float(phases["app"])
