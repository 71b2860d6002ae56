"""The jishi-agent commands: keygen, enroll (print and post), check, calibrate."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from agent.cli import main, parser, run_args
from protocols.signing import key_id, load_private
from sim.modbus_meter import ModbusMeter
from sim.serial_instrument import SerialInstrument
from tests.agent.helpers import cli, write_config


def meter_toml(port: str) -> str:
    return f"""
[detectors.power]
kind = "power_meter"
port = "{port}"
timeout_s = 0.1
levels = [{{ state = "off", below_w = 5 }}, {{ state = "idle", below_w = 200 }}, {{ state = "running" }}]
"""


def test_keygen_refuses_to_overwrite(tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "k" / "agent.key"
    assert main(["keygen", "--out", str(out)]) == 0
    doc = json.loads(capsys.readouterr().out)
    key = load_private(out)
    assert doc["key_id"] == key_id(key) and oct(out.stat().st_mode)[-3:] == "600"
    assert main(["keygen", "--out", str(out)]) == 1
    assert key_id(load_private(out)) == doc["key_id"]  # the existing key is untouched


def test_enroll_prints_and_posts(tmp_path: Path, mqtt_broker: Any) -> None:
    cfg = write_config(tmp_path, agent_id="enr1", broker=mqtt_broker, detectors=meter_toml("/dev/null"),
                       running="power")
    out = cli("enroll", "--config", str(cfg))
    assert out.returncode == 0
    doc = json.loads(out.stdout)
    key = load_private(tmp_path / "agent.key")
    assert doc["agent"] == "enr1" and doc["unit"] == "u-enr1" and doc["instrument"] == "i-enr1"
    assert doc["key_id"] == key_id(key)

    got: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(201)
            self.end_headers()
            self.wfile.write(b'{"ok": true}')

        def log_message(self, *a: Any) -> None:
            pass

    srv = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.handle_request, daemon=True).start()
    out = cli("enroll", "--config", str(cfg), "--url", f"http://127.0.0.1:{srv.server_port}/api/enrol")
    srv.server_close()
    assert out.returncode == 0 and "HTTP 201" in out.stdout
    assert got and got[0]["public_key"] == doc["public_key"]
    out = cli("enroll", "--config", str(cfg), "--url", "http://127.0.0.1:9/nothing")
    assert out.returncode == 1 and "cannot reach" in out.stderr


def test_check_probes_detectors_and_broker(tmp_path: Path, mqtt_broker: Any) -> None:
    with SerialInstrument(state="running") as inst, ModbusMeter(watts=40) as meter:
        det = meter_toml(meter.port) + f'\n[detectors.serial]\nkind = "serial_status"\nport = "{inst.port}"\n'
        cfg = write_config(tmp_path, agent_id="chk1", broker=mqtt_broker, detectors=det, running="power or serial")
        out = cli("check", "--config", str(cfg))
        assert out.returncode == 0, out.stdout + out.stderr
        assert "ok   detector power (power_meter): idle" in out.stdout
        assert "ok   detector serial (serial_status): running" in out.stdout
        assert "state now (undebounced): running" in out.stdout
        assert "ok   broker" in out.stdout
        meter.mode = "crc_error"
        out = cli("check", "--config", str(cfg), "--no-broker")
        assert out.returncode == 1 and "FAIL detector power" in out.stdout and "no valid response" in out.stdout


def test_check_reports_an_unreachable_broker(tmp_path: Path) -> None:
    class Nowhere:
        host, port = "127.0.0.1", 9

    cfg = write_config(tmp_path, agent_id="chk2", broker=Nowhere(), detectors=meter_toml("/dev/null"),
                       running="power")
    out = cli("check", "--config", str(cfg))
    assert out.returncode == 1 and "FAIL broker: 127.0.0.1:9" in out.stdout


def test_calibrate_labelled_running_below_standby(tmp_path: Path, mqtt_broker: Any) -> None:
    with ModbusMeter(watts=300) as meter:
        cfg = write_config(tmp_path, agent_id="cal1", broker=mqtt_broker, detectors=meter_toml(meter.port),
                           running="power")
        assert cli("calibrate", "--config", str(cfg), "--seconds", "0.5", "--period", "0.02",
                   "--label", "standby").returncode == 0
        meter.watts = 85
        out = cli("calibrate", "--config", str(cfg), "--seconds", "0.5", "--period", "0.02", "--label", "running")
        assert out.returncode == 0, out.stderr
        assert 'state = "running", below_w' in out.stdout and 'state = "idle" }' in out.stdout
        assert "BELOW standby" in out.stdout
        out = cli("calibrate", "--config", str(cfg), "--propose-only")
        assert out.returncode == 0 and "levels = [" in out.stdout


def test_the_services_run_command_lines_read_without_argparse_as_argparse_reads_them() -> None:
    """`run_args` (agent/cli.py, issue 17) must give what the parser gives, and leave everything else to it."""
    for argv in (["run"], ["run", "--config", "/etc/jishi/agent.toml"], ["run", "-c", "a.toml", "-i", "I-7"],
                 ["run", "--instrument", "agent-2", "--config", "gw.toml"], ["run", "-c", "a", "-c", "b"],
                 ["run", "--config", ""]):
        fast = run_args(argv)
        assert fast is not None, argv
        assert vars(fast) == vars(parser().parse_args(argv)), argv
    for argv in ([], ["run", "--config"], ["run", "--conf", "a.toml"], ["run", "-ca.toml"], ["run", "--config=a"],
                 ["run", "-c", "-i"], ["run", "--help"], ["status", "--config", "a.toml"], ["run", "extra", "x"],
                 ["--version"]):
        assert run_args(argv) is None, argv
