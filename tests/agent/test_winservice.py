"""The Windows service's platform-independent part: `serve()` runs the configured agent or gateway
until the SCM's stop event, stops cleanly, and logs (a service has no console) what went wrong."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import orjson

from agent.winservice import serve
from tests.agent.helpers import wait_until, write_config

PROC = '[detectors.proc]\nkind = "process"\nnames = ["nope-x"]\n'


class Nowhere:
    host, port = "127.0.0.1", 9


def records(spool: Path) -> list[dict[str, Any]]:
    if not spool.exists():
        return []
    db = sqlite3.connect(f"file:{spool}?mode=ro", uri=True)
    try:
        return [orjson.loads(b) for (b,) in db.execute("SELECT body FROM records ORDER BY seq")]
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def run_until_stopped(config: Path, log: Path, spool: Path) -> int:
    stop = threading.Event()
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(serve(stop, config, log)), daemon=True)
    t.start()
    wait_until(lambda: any(r.get("type") == "state" for r in records(spool)), 20, "the agent running")
    stop.set()  # what SvcStop does
    t.join(30)
    assert not t.is_alive() and result
    return result[0]


def test_service_runs_and_stops_cleanly_on_the_scm_event(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, agent_id="svc1", broker=Nowhere(), running="proc", detectors=PROC)
    log = tmp_path / "logs" / "agent.log"
    spool = tmp_path / "data" / "spool.db"
    assert run_until_stopped(cfg, log, spool) == 0
    recs = records(spool)
    assert recs[0]["event"] == "boot" and recs[-1]["type"] == "lifecycle" and recs[-1]["event"] == "stop"
    assert "service JishiAgent running" in log.read_text()


def test_service_logs_config_and_key_problems(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "agent.log"
    bad = tmp_path / "bad.toml"
    bad.write_text("[agent]\nid = 'x'\n")
    assert serve(threading.Event(), bad, log) == 2
    assert "config error in" in log.read_text()


def test_service_runs_a_gateway(tmp_path: Path) -> None:
    from agent.winservice import serve as serve_  # same entry point, a gateway config

    cfg = tmp_path / "gw.toml"
    cfg.write_text(f"""
[agent]
unit = "u1"
data_dir = "data"
sample_period_s = 0.1
[mqtt]
host = "{Nowhere.host}"
port = {Nowhere.port}
[state]
confirm_s = 0
post_run_s = 0
""" + "".join(f"""
[[instrument]]
id = "g{i}"
instrument = "i{i}"
[instrument.state]
running = "proc"
[instrument.detectors.proc]
kind = "process"
names = ["nope-{i}"]
""" for i in (1, 2)))
    log = tmp_path / "agent.log"
    assert serve_(threading.Event(), cfg, log) == 2  # no keys yet: refused, both named in the log
    assert "g1: key file" in log.read_text() and "g2: key file" in log.read_text()
    from protocols.signing import generate, save_private

    for i in (1, 2):
        save_private(generate(), tmp_path / "data" / f"g{i}" / "agent.key")
    assert run_until_stopped(cfg, log, tmp_path / "data" / "g2" / "spool.db") == 0
    assert records(tmp_path / "data" / "g1" / "spool.db")[-1]["event"] == "stop"


def test_acl_paths_name_every_secret_and_writable_folder(tmp_path: Path) -> None:
    from agent.winservice import acl_paths

    cfg = write_config(tmp_path, agent_id="svc2", broker=Nowhere(), running="proc", detectors=PROC,
                       mqtt_extra='username = "svc2"\npassword_file = "mqtt.password"')
    got = acl_paths(cfg)
    assert got["secrets"] == sorted([str(tmp_path / "agent.key"), str(tmp_path / "mqtt.password")])
    assert str(tmp_path / "data") in got["writable"]
    assert got["keys"] == {"svc2": str(tmp_path / "agent.key")}
    gw = acl_paths(Path(__file__).resolve().parents[2] / "deploy" / "agent" / "gateway-example.toml")
    assert len([s for s in gw["secrets"] if s.endswith("agent.key")]) == 8
    assert len([s for s in gw["secrets"] if s.endswith(".password")]) == 8
    assert len(gw["keys"]) == 8 and set(gw["keys"].values()) <= set(gw["secrets"])
