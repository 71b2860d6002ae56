"""`jishi org create`, `jishi unit create`, `jishi enrol-token` and `jishi setup`: a scripted first
install, as the console's own role (jishi_admin), from an empty database."""

from __future__ import annotations

import hashlib
from pathlib import Path

import psycopg
import pytest

from server.admin import main
from sim.devstack import role_dsn


def test_scripted_first_install(fresh_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agent.config import load

    dsn = ["--dsn", role_dsn(fresh_db, "jishi_admin")]
    assert main([*dsn, "org", "create", "imu", "--name", "内蒙古大学", "--kind", "university"]) == 0
    assert main([*dsn, "unit", "create", "imu", "--org", "imu", "--name", "内蒙古大学", "--region", "呼和浩特"]) == 0
    capsys.readouterr()
    assert main([*dsn, "unit", "create", "imu", "--org", "imu", "--name", "again"]) == 2
    assert "exists already" in capsys.readouterr().err
    assert main([*dsn, "unit", "create", "x1", "--org", "nobody", "--name", "x"]) == 2
    assert "jishi org create" in capsys.readouterr().err
    assert main([*dsn, "org", "create", "bad id!", "--name", "x"]) == 2  # the schema's id pattern
    assert main([*dsn, "org", "create", "o2", "--name", "x", "--kind", "castle"]) == 2
    with psycopg.connect(fresh_db) as conn:
        conn.execute("SELECT audit_as('test', true)")
        conn.execute("INSERT INTO instruments (id, unit_id, name) VALUES ('imu-xrd', 'imu', 'X射线衍射仪')")
    assert main([*dsn, "setup"]) == 1  # an instrument without an agent, a unit without a manager, ...
    out = capsys.readouterr().out
    assert "instruments_without_agent: 1" in out and "imu-xrd" in out and "units_without_manager: 1" in out

    cfg = tmp_path / "agent.toml"
    assert main([*dsn, "enrol-token", "imu-xrd", "--url", "https://jishi.example.org/", "--mqtt-host", "mq.example.org",
                 "--mqtt-port", "8883", "--config-out", str(cfg)]) == 0
    out = capsys.readouterr().out
    command = out.strip().splitlines()[-1]
    assert command.startswith("jishi-agent keygen --config agent.toml && jishi-agent enroll")
    assert "--url https://jishi.example.org/api/v1/enrol" in command
    token = command.rsplit("--token ", 1)[1]
    loaded = load(cfg, environ={})
    assert (loaded.agent.id, loaded.agent.unit, loaded.agent.instrument) == ("imu-xrd-a1", "imu", "imu-xrd")
    assert (loaded.mqtt.host, loaded.mqtt.port) == ("mq.example.org", 8883)
    with psycopg.connect(fresh_db) as conn:
        stored = conn.execute("SELECT token_hash, agent_id, created_by FROM enrolment_tokens").fetchall()
        audited = conn.execute("SELECT count(*) FROM audit_log WHERE actor LIKE 'cli:%%'"
                               " AND table_name IN ('units', 'organisations')").fetchone()
    assert stored == [(hashlib.sha256(token.encode()).hexdigest(), "imu-xrd-a1", None)]
    assert audited is not None and audited[0] == 2
    # a second token for the same instrument gets the next agent id
    assert main([*dsn, "enrol-token", "imu-xrd", "--url", "http://x", "--mqtt-host", "h"]) == 0
    assert 'id = "imu-xrd-a2"' in capsys.readouterr().out
