"""Agent enrolment: a one-time token registers one agent's Ed25519 key for one instrument, into
the tables the ingest verifies against; keys and agents can be revoked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from protocols import signing
from tests.web.conftest import Web


def _issue(web: Web, instrument: str = "ua-nmr", **body: Any) -> dict[str, Any]:
    r = web.as_("ops").post(f"/api/v1/instruments/{instrument}/enrolment-tokens", json=body)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def _body(issued: dict[str, Any], key: Any = None) -> dict[str, Any]:
    """What `jishi-agent enroll` posts (agent/cli.py `enrolment`)."""
    key = key or signing.generate()
    return {"agent": issued["agent_id"], "unit": issued["unit_id"], "instrument": issued["instrument_id"],
            "key_id": signing.key_id(key), "public_key": signing.public_to_b64(key), "sw": "jishi-agent 0.1",
            "detectors": [{"name": "software", "kind": "process"}]}


def test_enrolment_registers_the_key_once(web: Web) -> None:
    issued = _issue(web)
    assert issued["agent_id"] == "ua-nmr-a1" and issued["token"].startswith("jse_")
    assert 'instrument = "ua-nmr"' in issued["config"] and issued["token"] in issued["commands"][1]
    agent = web.client()
    body = _body(issued)
    r = agent.post("/api/v1/enrol", json=body, headers={"Authorization": f"Bearer {issued['token']}"})
    assert r.status_code == 201, r.text
    assert r.json()["key_id"] == body["key_id"] and r.json()["topic_prefix"] == "jishi/v1/ua/ua-nmr/"
    assert web.sql("SELECT a.instrument_id, k.public_key FROM agents a JOIN agent_keys k ON k.agent_id = a.id"
                   " WHERE a.id = 'ua-nmr-a1'") == [("ua-nmr", body["public_key"])]
    # one time only
    r = agent.post("/api/v1/enrol", json=_body(issued), headers={"Authorization": f"Bearer {issued['token']}"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "enrolment_token"
    actors = web.sql("SELECT actor FROM audit_log WHERE table_name = 'agent_keys'")
    assert actors == [(f"enrolment:{issued['id']}",)]


def test_a_mismatch_names_the_field_and_keeps_the_token(web: Web) -> None:
    issued = _issue(web)
    h = {"Authorization": f"Bearer {issued['token']}"}
    c = web.client()
    r = c.post("/api/v1/enrol", json={**_body(issued), "instrument": "ua-xrd"}, headers=h)
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "instrument"
    r = c.post("/api/v1/enrol", json={**_body(issued), "public_key": "not-a-key"}, headers=h)
    assert r.status_code == 422 and r.json()["error"]["code"] == "bad_public_key"
    r = c.post("/api/v1/enrol", json={**_body(issued), "key_id": "0000000000000000"}, headers=h)
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "key_id"
    assert c.post("/api/v1/enrol", json=_body(issued), headers=h).status_code == 201


def test_bad_expired_and_withdrawn_tokens(web: Web) -> None:
    c = web.client()
    issued = _issue(web)
    assert c.post("/api/v1/enrol", json=_body(issued)).status_code == 401
    assert c.post("/api/v1/enrol", json=_body(issued), headers={"Authorization": "Bearer jse_guess"}).status_code == 401
    web.sql("UPDATE enrolment_tokens SET expires_at = now() - interval '1 second'")
    r = c.post("/api/v1/enrol", json=_body(issued), headers={"Authorization": f"Bearer {issued['token']}"})
    assert r.status_code == 401 and "运营方" in r.json()["error"]["message"]
    issued = _issue(web)
    assert issued["agent_id"] == "ua-nmr-a2"
    assert web.as_("ops").delete(f"/api/v1/enrolment-tokens/{issued['id']}").status_code == 204
    r = c.post("/api/v1/enrol", json=_body(issued), headers={"Authorization": f"Bearer {issued['token']}"})
    assert r.status_code == 401


def test_revoke_key_and_agent(web: Web) -> None:
    issued = _issue(web)
    key = signing.generate()
    web.client().post("/api/v1/enrol", json=_body(issued, key), headers={"Authorization": f"Bearer {issued['token']}"})
    ops = web.as_("ops")
    kid = signing.key_id(key)
    r = ops.post(f"/api/v1/agents/ua-nmr-a1/keys/{kid}/revoke")
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    # a revoked key cannot come back with a new token
    again = _issue(web, agent_id="ua-nmr-a1")
    r = web.client().post("/api/v1/enrol", json=_body(again, key),
                          headers={"Authorization": f"Bearer {again['token']}"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "key_revoked"
    r = ops.post("/api/v1/agents/ua-nmr-a1/revoke", json={"reason": "PC replaced"})
    assert r.status_code == 200 and r.json()["revoked_reason"] == "PC replaced"
    r = ops.post("/api/v1/instruments/ua-nmr/enrolment-tokens", json={"agent_id": "ua-nmr-a1"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "agent_revoked"
    r = ops.post("/api/v1/instruments/ua-nmr/enrolment-tokens", json={"agent_id": "ua-xrd-a1"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "agent_other_instrument"
    agents = {a["id"]: a for a in ops.get("/api/v1/agents", params={"instrument_id": "ua-nmr"}).json()}
    assert agents["ua-nmr-a1"]["keys"][0]["revoked_at"] is not None


def test_the_config_to_copy_is_a_valid_agent_config(web: Web, tmp_path: Path) -> None:
    from agent.config import load

    issued = _issue(web)
    path = tmp_path / "agent.toml"
    path.write_text(issued["config"], encoding="utf-8")
    cfg = load(path, environ={})
    assert (cfg.agent.id, cfg.agent.unit, cfg.agent.instrument) == ("ua-nmr-a1", "ua", "ua-nmr")
