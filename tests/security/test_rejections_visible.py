"""What operators see of refused agents: each attack on ingest ends in `quarantine` with its
reason code, listed by the operator's tool (`jishi-server quarantine`, server/cli.py), and the
revocations that caused some of them are shown by the web with their reason.

The attacks themselves are tested through a real broker elsewhere (tests/e2e/test_ingest_rejects.py,
tests/security/test_open_acl.py); here the real ingest pipeline (server/ingest/worker.py) runs in
process on the web's seeded database, the revocations are made through the web API as an operator
would, and what matters is what the operator can read afterwards:
- a reused enrolment token: refused (401) and the token shows as used;
- a replayed envelope: `replay`;
- a forged signature (another key, claiming the agent's key id): `bad_signature`;
- an agent's own key used for another unit's instrument: `wrong_topic`;
- a key revoked through the web, still signing: `unknown_key` ("is revoked");
- an agent revoked through the web: `revoked_agent`, and the web lists it revoked with the reason.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import psycopg
import pytest

from protocols import PROTOCOL_VERSION
from protocols import envelope as env
from protocols.errors import Reason
from protocols.signing import generate, key_id
from server import cli
from server.ingest.worker import Pipeline
from tests.server.helpers import TestAgent, register, settings_for
from tests.web.conftest import Web
from tests.web.test_enrol import _body

S = 1000


def test_a_reused_enrolment_token_is_refused_and_shows_used(web: Web) -> None:
    ops = web.as_("ops")
    issued = ops.post("/api/v1/instruments/ua-nmr/enrolment-tokens", json={}).json()
    h = {"Authorization": f"Bearer {issued['token']}"}
    assert web.client().post("/api/v1/enrol", json=_body(issued), headers=h).status_code == 201
    r = web.client().post("/api/v1/enrol", json=_body(issued), headers=h)
    assert r.status_code == 401 and r.json()["error"]["code"] == "enrolment_token"
    listed = {t["id"]: t for t in ops.get("/api/v1/enrolment-tokens").json()}
    assert listed[issued["id"]]["used_at"] is not None
    assert issued["token"] not in ops.get("/api/v1/enrolment-tokens").text  # only its hash is kept


def _quarantine_listing(dsn: str, capsys: pytest.CaptureFixture[str], **filters: Any) -> list[str]:
    args = argparse.Namespace(limit=50, reason=filters.get("reason"), agent=filters.get("agent"))
    assert cli._quarantine(settings_for(dsn), args) == 0
    return capsys.readouterr().out.splitlines()


def test_operators_see_every_refusal_with_its_reason(web: Web, capsys: pytest.CaptureFixture[str]) -> None:
    a = TestAgent("ua-q1", unit="ua", instrument="ua-nmr")
    b = TestAgent("ub-q1", unit="ub", instrument="ub-sem")
    register(web.dsn, a, org="org-a")
    register(web.dsn, b, org="org-b")
    pipeline = Pipeline(settings_for(web.dsn), "t")
    now = int(time.time() * 1000)
    hour = 3600 * S  # a replay is an identical envelope re-sent after the grace (ingest.replay_grace_s)
    first = a.seal([a.state(now - hour, "idle")], sent=now - hour)
    second = a.seal([a.heartbeat(now - 60 * S, "idle")], sent=now - 60 * S)  # the replay is below the watermark
    b_first = b.seal([b.state(now - hour, "idle")], sent=now - hour)
    with psycopg.connect(web.dsn, autocommit=True) as conn:
        out = pipeline.process(conn, [a.msg(first, now - hour + S), a.msg(second, now - 59 * S),
                                      b.msg(b_first, now - hour + S)])
        assert out.rejections == [] and out.records == 3

        def next_of_a() -> dict[str, Any]:
            """A's next record as A would make it, without advancing A."""
            clone = TestAgent(a.agent, unit=a.unit, instrument=a.instrument, key=a.key, seq=a.seq, prev=a.prev,
                              mono=a.mono, boot_t=a.boot_t)
            return clone.heartbeat(now - 30 * S, "running")

        # signed by another key, claiming A's key id
        forged = env.seal({"v": PROTOCOL_VERSION, "msg": "rec", "agent": a.agent, "key": key_id(a.key),
                           "unit": a.unit, "instrument": a.instrument, "boot": a.boot, "sent": now,
                           "records": [next_of_a()]}, generate())
        # A's key, A's id, a self-consistent envelope naming B's instrument, on B's topic
        onto_b = env.seal({"v": PROTOCOL_VERSION, "msg": "rec", "agent": a.agent, "key": key_id(a.key),
                           "unit": b.unit, "instrument": b.instrument, "boot": a.boot, "sent": now,
                           "records": [next_of_a()]}, a.key)
        out = pipeline.process(conn, [a.msg(first, now), a.msg(forged, now), b.msg(onto_b, now)])
        assert sorted(r.reason for r in out.rejections) == sorted([Reason.REPLAY, Reason.BAD_SIGNATURE,
                                                                   Reason.WRONG_TOPIC])

        ops = web.as_("ops")
        r = ops.post(f"/api/v1/agents/{a.agent}/keys/{key_id(a.key)}/revoke")
        assert r.status_code == 200, r.text
        r = ops.post(f"/api/v1/agents/{b.agent}/revoke", json={"reason": "控制电脑被盗"})
        assert r.status_code == 200, r.text
        after_a = a.seal([a.heartbeat(now - 10 * S, "running")])
        after_b = b.seal([b.heartbeat(now - 10 * S, "running")])
        out = pipeline.process(conn, [a.msg(after_a, now), b.msg(after_b, now)])
        assert sorted(r.reason for r in out.rejections) == sorted([Reason.UNKNOWN_KEY, Reason.REVOKED_AGENT])

    lines = _quarantine_listing(web.dsn, capsys)
    assert lines[0].startswith("by reason: ")
    for reason in ("bad_signature", "replay", "revoked_agent", "unknown_key", "wrong_topic"):
        assert f"{reason}=1" in lines[0], lines[0]
    listed = {line.split("\t")[2]: line for line in lines[1:]}
    assert set(listed) == {"bad_signature", "replay", "revoked_agent", "unknown_key", "wrong_topic"}, lines
    assert a.agent in listed["replay"] and a.agent in listed["bad_signature"] and a.agent in listed["wrong_topic"]
    assert "is revoked" in listed["unknown_key"] and b.agent in listed["revoked_agent"]
    assert "/ub/ub-sem/" in listed["wrong_topic"]  # where it was sent, with A's agent id: who tried what
    only = _quarantine_listing(web.dsn, capsys, reason="replay")
    assert len(only) == 2 and "\treplay\t" in only[1]

    # the web: the operator's list (GET /api/v1/quarantine), with reasons; nobody else's
    ops = web.as_("ops")
    got = ops.get("/api/v1/quarantine").json()
    assert got["by_reason"] == {r: 1 for r in ("bad_signature", "replay", "revoked_agent", "unknown_key",
                                               "wrong_topic")}
    items = {i["reason"]: i for i in got["items"]}
    assert items["replay"]["agent_id"] == a.agent and "identical to envelope" in items["replay"]["detail"]
    assert items["wrong_topic"]["topic"].startswith("jishi/v1/ub/ub-sem/")
    assert items["wrong_topic"]["agent_id"] == a.agent
    assert "is revoked" in items["unknown_key"]["detail"] and items["revoked_agent"]["agent_id"] == b.agent
    only = ops.get("/api/v1/quarantine", params={"reason": "replay"}).json()["items"]
    assert [i["reason"] for i in only] == ["replay"]
    assert "payload" not in items["replay"]
    for login in ("mgr-a", "mgr-b", "eva"):
        assert web.as_(login).get("/api/v1/quarantine").status_code in (403, 404), login
    assert web.client().get("/api/v1/quarantine").status_code == 401

    # the web shows the revocations that caused two of them, with the reason given
    agents = {x["id"]: x for x in web.as_("ops").get("/api/v1/agents").json()}
    assert agents[b.agent]["revoked_reason"] == "控制电脑被盗" and agents[b.agent]["revoked_at"]
    assert [k["revoked_at"] is not None for k in agents[a.agent]["keys"]] == [True]
    # B's verified state holds only B's genuine record; A's forgery on B's topic stored nothing
    assert web.sql("SELECT watermark FROM agent_progress WHERE agent_id = %s", (b.agent,)) == [(1,)]
    assert web.sql("SELECT watermark FROM agent_progress WHERE agent_id = %s", (a.agent,)) == [(2,)]
