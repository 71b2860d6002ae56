"""The operator's page of refused agent messages (`/quarantine`): rows made by the real ingest
pipeline, labelled in Chinese (English switched), counted by reason, filtered like the API, never
showing payload bytes; operators only."""

from __future__ import annotations

import time

import psycopg

from protocols import PROTOCOL_VERSION
from protocols import envelope as env
from protocols.errors import Reason
from protocols.signing import generate, key_id
from server.ingest.worker import Pipeline
from server.web.i18n import TEXT
from server.web.services.quarantine import REASONS, reason_label
from tests.server.helpers import TestAgent, register, settings_for
from tests.web.conftest import Web

S = 1000
MARK = "payload-marker-7f3a9c"  # inside every refused payload; must never reach the page


def _refuse(web: Web) -> TestAgent:
    """Three refused messages through the real pipeline: two from an unregistered agent
    (`unknown_agent`), one signed by a stranger's key in a registered agent's name (`bad_signature`)."""
    known = TestAgent("ua-q1", unit="ua", instrument="ua-nmr")
    register(web.dsn, known, org="org-a")
    stranger = TestAgent("ua-ghost", unit="ua", instrument="ua-nmr")
    now = int(time.time() * 1000)
    ghost = [stranger.seal([stranger.record(now - k * S, "lifecycle", event="boot", detail={"note": MARK})])
             for k in (2, 1)]
    forged = env.seal({"v": PROTOCOL_VERSION, "msg": "rec", "agent": known.agent, "key": key_id(known.key),
                       "unit": known.unit, "instrument": known.instrument, "boot": known.boot, "sent": now,
                       "records": [known.record(now, "lifecycle", event="boot", detail={"note": MARK})]},
                      generate())
    with psycopg.connect(web.dsn, autocommit=True) as conn:
        out = Pipeline(settings_for(web.dsn), "t").process(
            conn, [stranger.msg(p, now) for p in ghost] + [known.msg(forged, now)])
    assert sorted(r.reason for r in out.rejections) == [Reason.BAD_SIGNATURE, Reason.UNKNOWN_AGENT,
                                                        Reason.UNKNOWN_AGENT]
    return known


def _rows(page: str) -> int:
    return page.split('id="quarantine"', 1)[1].split("</table>", 1)[0].count("<tr data-id=")


def test_the_page_lists_refusals_with_reason_labels_and_counts(web: Web) -> None:
    _refuse(web)
    ops = web.as_("ops")
    r = ops.get("/quarantine")
    assert r.status_code == 200, r.text[:500]
    page = r.text
    assert 'href="/quarantine"' in page  # the operator's nav link
    counts = page.split('id="quarantine-counts"', 1)[1].split("</table>", 1)[0]
    assert '<tr data-reason="unknown_agent"><td><a href="?reason=unknown_agent">未登记的采集端</a>' in counts
    assert '<code>unknown_agent</code></td><td class="num">2</td>' in counts
    assert '<code>bad_signature</code></td><td class="num">1</td>' in counts and "签名无效" in counts
    assert _rows(page) == 3
    assert "ua-ghost" in page and "ua-q1" in page and "jishi/v1/ua/ua-nmr/" in page
    # payload bytes never: not the marker inside them, not the signatures
    assert MARK not in page
    assert MARK not in ops.get("/api/v1/quarantine").text
    # the same data as the API (one query for both)
    api = ops.get("/api/v1/quarantine").json()
    assert api["by_reason"] == {"bad_signature": 1, "unknown_agent": 2}
    table = page.split('id="quarantine"', 1)[1].split("</table>", 1)[0]
    assert [str(i["payload_len"]) for i in api["items"]] == [
        x.split("</td>")[0] for x in table.split('<td class="num">')[1:]]
    assert [f'data-id="{i["id"]}"' in table for i in api["items"]] == [True] * 3
    en = ops.get("/quarantine?lang=en").text
    assert "Unknown agent" in en and "Invalid signature" in en and "Refused agent messages" in en
    assert 'lang="en">Invalid signature</small>' in page and '<small class="note" lang="en">' not in en


def test_filters_validate_like_the_api(web: Web) -> None:
    known = _refuse(web)
    ops = web.as_("ops")
    page = ops.get("/quarantine", params={"reason": "bad_signature"}).text
    assert _rows(page) == 1 and "签名无效" in page.split('id="quarantine"', 1)[1]
    assert '<option value="bad_signature" selected>' in page
    # counts stay over every reason while the rows are filtered
    assert '<code>unknown_agent</code></td><td class="num">2</td>' in page
    page = ops.get("/quarantine", params={"agent_id": "ua-ghost"}).text
    assert _rows(page) == 2 and known.agent not in page.split('id="quarantine"', 1)[1]
    assert _rows(ops.get("/quarantine", params={"limit": "1"}).text) == 1
    assert _rows(ops.get("/quarantine", params={"reason": "", "agent_id": "", "limit": "100"}).text) == 3
    assert "没有被拒收的消息" in ops.get("/quarantine", params={"reason": "replay"}).text
    for bad in ({"limit": "0"}, {"limit": "1001"}, {"limit": "x"}, {"reason": "r" * 65},
                {"agent_id": "a" * 201}):
        assert ops.get("/quarantine", params=bad).status_code == 422, bad
        assert ops.get("/api/v1/quarantine", params=bad).status_code == 422, bad


def test_only_operators_see_it(web: Web) -> None:
    _refuse(web)
    for login in ("mgr-a", "eva"):
        c = web.as_(login)
        r = c.get("/quarantine")
        assert r.status_code == 403, login
        assert "ua-ghost" not in r.text and "<html" in r.text
        assert 'href="/quarantine"' not in c.get("/registry").text
    r = web.client().get("/quarantine?reason=replay", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/quarantine%3Freason%3Dreplay"


def test_every_reason_code_has_a_label() -> None:
    for code in REASONS:
        key = f"quarantine.reason.{code}"
        assert key in TEXT and TEXT[key][0] and TEXT[key][1], code
    assert reason_label("zh", "store_error") == "store_error"  # unknown codes show as themselves
