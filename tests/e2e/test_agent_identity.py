"""End to end: check-in and check-out by CLI and by the local page, a card reader on a pty, a
forgotten check-out ending by idle timeout, `jishi-agent status` while running and stopped."""

from __future__ import annotations

import json
import os
import socket
import tty
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from agent.identity.card_reader import card_hash
from sim.modbus_meter import ModbusMeter
from tests.agent.helpers import AgentProc, Collector, cli, wait_until, write_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])



def post(url: str, data: bytes, headers: dict[str, str]) -> tuple[int, str]:
    req = urllib.request.Request(url, data=data, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_checkin_checkout_card_and_idle_timeout(mqtt_broker: Any, tmp_path: Path) -> None:
    port = free_port()
    master, slave = os.openpty()
    tty.setraw(slave)
    with ModbusMeter(watts=40.0) as meter:
        detectors = f"""
[detectors.power]
kind = "power_meter"
port = "{meter.port}"
timeout_s = 0.05
levels = [{{ state = "off", below_w = 5 }}, {{ state = "idle", below_w = 200 }}, {{ state = "running" }}]
"""
        cfg = write_config(tmp_path, agent_id="ident1", broker=mqtt_broker, detectors=detectors, running="power",
                           period=0.1, heartbeat=1.0, checkin_port=port,
                           extra="")
        text = cfg.read_text().replace("checkin = true\n", f'checkin = true\nidle_timeout_s = 1.5\ncard_port = '
                                       f'"{os.ttyname(slave)}"\ncard_key = "unit-secret"\n')
        cfg.write_text(text)
        collector = Collector(mqtt_broker, tmp_path, "ident1")
        agent = AgentProc(cfg).start()
        try:
            wait_until(lambda: cli("status", "--config", str(cfg), "--json").returncode == 0 and
                       json.loads(cli("status", "--config", str(cfg), "--json").stdout).get("running") is True,
                       20, "agent answering")
            meter.watts = 900.0  # running: the idle timeout does not apply
            out = cli("checkin", "zhang.san", "--config", str(cfg))
            assert out.returncode == 0 and "Checked in" in out.stdout, out
            assert "Already" in cli("checkin", "zhang.san", "--config", str(cfg)).stdout
            st = json.loads(cli("status", "--config", str(cfg), "--json").stdout)
            assert st["explicit_user"] == "zhang.san" and st["state"] == "running"
            human = cli("status", "--config", str(cfg)).stdout
            assert "checked in: zhang.san" in human and "running" in human
            out = cli("checkout", "--config", str(cfg))
            assert out.returncode == 0 and "Checked out" in out.stdout
            out = cli("checkout", "--config", str(cfg))
            assert out.returncode == 1 and "Nobody" in out.stdout

            # the local page: a form post from the page itself works, a cross-site post does not
            page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read().decode()
            assert "<form" in page and "i-ident1" in page
            code, body = post(f"http://127.0.0.1:{port}/checkin", b"user=BK-7&kind=booking",
                              {"Content-Type": "application/x-www-form-urlencoded",
                               "Origin": f"http://127.0.0.1:{port}"})
            assert code == 200 and "Checked in" in body
            code, _ = post(f"http://127.0.0.1:{port}/checkout", b"", {"Origin": "http://evil.example"})
            assert code == 403
            code, _ = post(f"http://127.0.0.1:{port}/checkin", b'{"user": ""}', {"Content-Type": "application/json"})
            assert code == 400

            # a card replaces the booking; the same card again checks out
            os.write(master, b"04A1B2C3D4\r\n")
            collector.wait_for(lambda c: any(r.get("method") == "card" for r in c.records.values()), 10, "card")
            os.write(master, b"04A1B2C3D4\r\n")
            collector.wait_for(lambda c: any(r.get("reason") == "card" for r in c.records.values()), 10,
                               "card checkout")

            # forgotten check-out: instrument idle for idle_timeout_s ends the session
            meter.watts = 40.0
            assert cli("checkin", "li.si", "--config", str(cfg)).returncode == 0
            collector.wait_for(lambda c: any(r.get("reason") == "idle_timeout" for r in c.records.values()), 15,
                               "idle timeout")
            assert agent.stop() == 0
        finally:
            if agent.alive():
                agent.kill()
            os.close(master)
            os.close(slave)
        collector.wait_for(lambda c: any(r.get("event") == "stop" for r in c.records.values()), 10, "stop")
        collector.close()
    recs = collector.check_complete_chain()
    sessions = [(r["type"], r.get("method"), r.get("user"), r.get("reason")) for r in recs
                if r["type"].startswith("session")]
    hashed = card_hash(b"unit-secret", "04A1B2C3D4")
    assert sessions == [
        ("session_start", "checkin", "zhang.san", None), ("session_end", None, None, "checkout"),
        ("session_start", "booking", "BK-7", None), ("session_end", None, None, "replaced"),
        ("session_start", "card", hashed, None), ("session_end", None, None, "card"),
        ("session_start", "checkin", "li.si", None), ("session_end", None, None, "idle_timeout"),
    ]
    assert not any("04A1B2C3D4" in json.dumps(r) for r in recs)  # the raw card never left the PC
    # stopped: status falls back to the spool
    st = json.loads(cli("status", "--config", str(cfg), "--json").stdout)
    assert st["running"] is False and st["next_seq"] == len(recs) + 1
