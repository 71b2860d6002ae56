"""The evidence behind an interval (signed records read back and re-verified), the utilization trend
and the evidence bundle download: content, role boundaries and error cases."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import date
from typing import Any

from tests.web.charthelp import figures
from tests.web.conftest import REAL_NAME, Web
from tests.web.evidencehelp import END, FILE, SHA, START, store_nmr_records

URL = "/api/v1/instruments/ua-nmr/evidence"
RANGE = {"from": START.isoformat(), "to": END.isoformat()}


def _get(c: Any, **params: str) -> Any:
    return c.get(URL, params={**RANGE, **params})


def test_evidence_of_an_interval(web: Web) -> None:
    store_nmr_records(web.dsn)
    r = _get(web.as_("mgr-a"))
    assert r.status_code == 200, r.text
    ev = r.json()
    assert ev["agents"] == ["ua-nmr-a1"]
    # power: from the sample records (12 readings, one of them missing), in W
    assert ev["power"]["source"] == "sample"
    watts = [p["w"] for p in ev["power"]["points"]]
    assert len(watts) == 11 and max(watts) == 1440.0 and min(watts) == 1250.0
    # the process detector and the data file the heartbeat reported
    assert [p["name"] for p in ev["processes"]] == ["topspin"]
    assert ev["processes"][0]["procs_max"] == 3 and ev["processes"][0]["children"] is True
    assert ev["files"] == [{"detector": "fid", "name": FILE, "sha256": SHA, "size": None,
                            "first_seen": ev["files"][0]["first_seen"], "arrival": "live"}]
    # transitions: the state in force before the interval, into running, back to idle
    moves = [(x["from"], x["to"], x["before_interval"]) for x in ev["transitions"]]
    assert moves == [("unknown", "idle", True), ("idle", "running", False), ("running", "idle", False)]
    # every envelope verified; one record came from the spool
    s = ev["summary"]
    assert s["envelopes"] == s["envelopes_verified"] > 0 and s["envelopes_failed"] == 0
    assert s["spool"] == 1 and s["live"] == s["records"] - 1
    assert all(x["verified"] for x in ev["records"])
    assert any(x["arrival"] == "spool" and x["type"] == "sample" for x in ev["records"])
    assert any(seg["state"] == "running" for seg in ev["segments"])
    # the session began before the interval: found through the derived user sessions
    assert [u["who"] for u in ev["users"]] == [REAL_NAME]


def test_session_names_and_pseudonyms(web: Web) -> None:
    store_nmr_records(web.dsn)
    wide = {"from": "2025-03-04T09:00:00+08:00", "to": "2025-03-04T12:00:00+08:00"}
    mgr = web.as_("mgr-a").get(URL, params=wide).json()
    starts = [x for x in mgr["sessions"] if x["event"] == "start"]
    assert [x["who"] for x in starts] == [REAL_NAME] and starts[0]["identifier"] == "LAB\\zhang"
    r = web.as_("eva").get(URL, params=wide)
    assert r.status_code == 200
    assert REAL_NAME not in r.text and "zhang" not in r.text and FILE not in r.text
    ev = r.json()
    starts = [x for x in ev["sessions"] if x["event"] == "start"]
    assert starts[0]["who"].startswith("U-") and "identifier" not in starts[0]
    assert ev["files"][0]["name"] is None and ev["files"][0]["sha256"] == SHA
    assert ev["summary"]["names_hidden"] is True
    assert ev["users"][0]["who"] == starts[0]["who"] and "identifier" not in ev["users"][0]


def test_a_tampered_envelope_is_reported_not_hidden(web: Web) -> None:
    store_nmr_records(web.dsn)
    # flip one byte of a stored envelope (a power reading): its signature must fail
    web.sql("UPDATE envelopes SET raw = convert_to(replace(convert_from(raw, 'UTF8'), '1420000', '1420001'), 'UTF8')"
            " WHERE position('1420000'::bytea IN raw) > 0")
    ev = _get(web.as_("ops")).json()
    assert ev["summary"]["envelopes_failed"] == 1
    bad = [e for e in ev["envelopes"] if not e["verified"]]
    assert "signature" in bad[0]["problem"]


def test_evidence_role_boundaries(web: Web) -> None:
    store_nmr_records(web.dsn)
    assert _get(web.as_("ops")).status_code == 200
    assert _get(web.as_("eva")).status_code == 200
    r = _get(web.as_("mgr-b"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert web.client().get(URL, params=RANGE).status_code == 401
    assert web.as_("mgr-b").get("/api/v1/instruments/ub-sem/evidence", params=RANGE).status_code == 200


def test_evidence_errors_name_the_field(web: Web) -> None:
    c = web.as_("ops")
    r = c.get(URL, params={"from": END.isoformat(), "to": START.isoformat()})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "to"
    r = c.get(URL, params={"from": "2025-03-01T00:00:00+08:00", "to": "2025-03-20T00:00:00+08:00"})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "to"
    r = c.get(URL, params={"from": "yesterday", "to": END.isoformat()})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "from"
    r = c.get(URL, params={"to": END.isoformat()})
    assert r.status_code == 422
    assert c.get("/api/v1/instruments/nope/evidence", params=RANGE).status_code == 404


def test_an_interval_without_records(web: Web) -> None:
    ev = web.as_("mgr-a").get("/api/v1/instruments/ua-xrd/evidence", params=RANGE).json()
    assert ev["power"]["points"] == [] and ev["records"] == [] and ev["summary"]["envelopes"] == 0


def test_utilization_trend(web: Web, today: date) -> None:
    c = web.as_("mgr-a")
    r = c.get("/api/v1/instruments/ua-xrd/utilization-trend", params={"months": 12, "bucket": "month"})
    assert r.status_code == 200, r.text
    t = r.json()
    assert t["bucket"] == "month" and len(t["points"]) == 12
    assert all(p["rated"] > 0 for p in t["points"])
    weeks = c.get("/api/v1/instruments/ua-xrd/utilization-trend", params={"months": 2, "bucket": "week"}).json()
    # this month and the last, in ISO weeks: 5 (on the 1st of a month) to 10 (at the end of one)
    assert weeks["bucket"] == "week" and 5 <= len(weeks["points"]) <= 10
    assert c.get("/api/v1/instruments/ua-xrd/utilization-trend", params={"months": 0}).status_code == 422
    assert c.get("/api/v1/instruments/ub-sem/utilization-trend").status_code == 404
    assert web.as_("eva").get("/api/v1/instruments/ub-sem/utilization-trend").status_code == 200


def test_trend_counts_running_hours_in_the_right_month(web: Web) -> None:
    from server.web.services.trend import utilization_trend

    with __import__("psycopg").connect(web.dsn) as conn:
        inst = {"id": "ua-xrd", "category": "通用", "rated_hours": None, "accepted_on": date(2020, 1, 1),
                "retired_on": None}
        t = utilization_trend(conn, inst, months=3, bucket="month", today=date(2025, 4, 15))
    march = next(p for p in t["points"] if p["label"] == "2025-03")
    assert march["running_verified"] == march["running_total"] == 2.0  # the seeded segment, 2025-03-03 09–11
    assert t["points"][0]["label"] == "2025-02" and t["points"][0]["running_total"] == 0.0
    assert abs(march["rated"] - 1400 * 31 / 365) < 1e-3
    april = next(p for p in t["points"] if p["label"] == "2025-04")
    assert abs(april["rated"] - 1400 * 15 / 365) < 1e-3  # the current month earns up to today


# -- evidence bundle ----------------------------------------------------------------------------------

BUNDLE = "/api/v1/evaluation/2025/units/ua/evidence.zip"


def test_bundle_download_roles(web: Web) -> None:
    store_nmr_records(web.dsn)
    for login in ("ops", "mgr-a", "eva"):
        r = web.as_(login).get(BUNDLE)
        assert r.status_code == 200, (login, r.text)
        assert r.headers["content-type"] == "application/zip"
        assert "attachment" in r.headers["content-disposition"]
        zf = zipfile.ZipFile(io.BytesIO(r.content))
        manifest = json.loads(zf.read("manifest.json"))
        assert manifest["unit"]["id"] == "ua"
        assert any(a["agent_id"] == "ua-nmr-a1" and a["envelopes"] > 0 for a in manifest["agents"])
        # no real name anywhere in the bundle, whoever downloads it
        for name in zf.namelist():
            assert REAL_NAME.encode() not in zf.read(name), name
        assert all(i["user"].startswith("U-") for i in manifest["identities"])
    assert web.as_("mgr-b").get(BUNDLE).status_code == 404
    assert web.client().get(BUNDLE).status_code == 401
    assert web.as_("ops").get("/api/v1/evaluation/20x5/units/ua/evidence.zip").status_code == 422


def test_bundle_verifies_offline(web: Web, tmp_path: Any) -> None:
    from server.exports.verify import verify_bundle

    store_nmr_records(web.dsn)
    r = web.as_("eva").get(BUNDLE)
    path = tmp_path / "b.zip"
    path.write_bytes(r.content)
    result = verify_bundle(path)
    # ua-xrd's segments are seeded without records (tests/web/conftest.py), so only ua-nmr's hours,
    # which came through the ingest, can be recomputed
    assert not result.problems and not any(a.problems for a in result.agents), result.text()
    assert not [m for m in result.mismatches if m.startswith("ua-nmr")], result.text()
    assert result.hours["ua-nmr"]["running"]["spool"][1] == 0.5


def test_report_page_offers_the_bundle_and_instrument_page_links_intervals(web: Web) -> None:
    store_nmr_records(web.dsn)
    for login in ("mgr-a", "eva"):
        page = web.as_(login).get("/units/ua/report?year=2025").text
        assert 'id="download-evidence" href="/api/v1/evaluation/2025/units/ua/evidence.zip"' in page
    c = web.as_("mgr-a")
    page = c.get("/instruments/ua-nmr?span=day&start=2025-03-04").text
    assert 'class="span-link" href="?span=day&amp;start=2025-03-04&amp;ev_from=' in page
    assert 'id="trend"' in page and "trend-chart" in page
    page = c.get("/instruments/ua-nmr", params={"span": "day", "start": "2025-03-04", "lang": "en",
                                               "ev_from": START.isoformat(), "ev_to": END.isoformat()}).text
    power = figures(page)["Power curve"]
    curve = [tr for tr in power["data"] if tr.get("name") == "Power curve"]
    ev = c.get("/api/v1/instruments/ua-nmr/evidence", params={"from": START.isoformat(), "to": END.isoformat()}).json()
    assert curve and curve[0]["y"] == [p["w"] for p in ev["power"]["points"]] and len(curve[0]["y"]) >= 5
    assert "line-chart" in power["class"] and "Evidence behind the interval" in page
    bad = c.get("/instruments/ua-nmr", params={"ev_from": END.isoformat(), "ev_to": START.isoformat()})
    assert bad.status_code == 422 and "ev_to" in bad.text
    assert web.as_("mgr-b").get("/instruments/ua-nmr", params={"ev_from": START.isoformat(),
                                                               "ev_to": END.isoformat()}).status_code == 404


def test_digest_without_samples_uses_heartbeat_summaries() -> None:
    from datetime import timedelta

    from server.web.services.evidence import _thin, digest

    t = int(START.timestamp() * 1000)
    recs = [{"agent_id": "a", "envelope_id": i, "received_at": START + timedelta(minutes=5 * i, seconds=1),
             "verified": True, "hash": "0" * 64,
             "record": {"type": "heartbeat", "seq": i, "t": t + i * 300_000, "state": "running", "period_ms": 300_000,
                        "evidence": {"pm": {"mw_min": 900_000, "mw_max": 1_100_000, "mw_avg": 1_000_000 + i}}}}
            for i in range(1, 4)]
    out = digest(recs, START, END, live_ms=120_000)
    assert out["power"]["source"] == "heartbeat"
    assert [(p["w"], p["min_w"], p["max_w"]) for p in out["power"]["points"]] == [
        (1000.001, 900.0, 1100.0), (1000.002, 900.0, 1100.0), (1000.003, 900.0, 1100.0)]
    assert all(r["arrival"] == "live" for r in out["records"])
    # thinning keeps the extremes of each bucket
    pts = [{"t": START + timedelta(seconds=i), "w": float(i % 100)} for i in range(10_000)]
    thin = _thin(pts, 200)
    assert len(thin) <= 220 and max(p["w"] for p in thin) == 99.0 and min(p["w"] for p in thin) == 0.0


def test_full_envelopes_of_days_for_a_dispute(web: Web) -> None:
    """The compact bundle drops most envelopes' signatures; the full envelopes of named days stay
    available, byte for byte and still verifiable, to the unit's manager and evaluators only."""
    from protocols.bundle import entries
    from protocols.validate import check_signature, open_envelope
    from tests.web.evidencehelp import AGENT

    agent = store_nmr_records(web.dsn)
    url = "/api/v1/instruments/ua-nmr/envelopes.bin"
    day = START.date().isoformat()
    r = web.as_("eva").get(url, params={"from": day})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream" and "attachment" in r.headers["content-disposition"]
    got = list(entries(r.content))
    assert got
    key = agent.key.public_key()
    seqs: set[int] = set()
    for _eid, _us, raw in got:
        opened = open_envelope(raw)
        check_signature(opened.body, key)  # as the agent signed it
        assert opened.body["agent"] == AGENT
        seqs |= {rec["seq"] for rec in opened.body["records"]}
    assert seqs and min(seqs) == 1
    assert web.as_("mgr-a").get(url, params={"from": day, "to": day}).content == r.content
    assert web.as_("mgr-b").get(url, params={"from": day}).status_code == 404
    assert web.client().get(url, params={"from": day}).status_code == 401
    assert web.as_("eva").get(url, params={"from": "2025-01-01", "to": "2025-03-01"}).status_code == 422
    assert web.as_("eva").get(url, params={"from": "2025-03-05", "to": "2025-03-04"}).status_code == 422
    assert web.as_("eva").get(url, params={"from": "9999-12-31"}).status_code == 422
    empty = web.as_("eva").get(url, params={"from": "2024-03-04"})
    assert empty.status_code == 200 and empty.content == b""
