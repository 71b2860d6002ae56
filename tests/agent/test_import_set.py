"""The agent's memory budget, guarded by what it imports rather than by a timed RSS figure.

Most of the agent's resident memory is the code it loads (bench/RESULTS.md, "Agent footprint"):
each library below costs between 0.3 and 3 MB. The real `jishi-agent run` process runs against the
real broker until it has published a heartbeat (every configured detector polled), stops, and
reports the modules it had imported; a library that only some configs need must stay out of the
others.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sim.modbus_meter import ModbusMeter
from tests.agent.helpers import ROOT, Collector, meter_toml, write_config

# Runs the CLI exactly as `python -m agent.cli` does and writes at exit the modules that ran: not the
# names agent/lean.py made unavailable (None) nor a module it deferred and nobody used.
LAUNCHER = """
import atexit, json, runpy, sys
out = sys.argv.pop(1)
ran = lambda: sorted(n for n, m in sys.modules.items() if m is not None and "__deferred__" not in vars(m))
atexit.register(lambda: open(out, "w").write(json.dumps(ran())))
runpy.run_module("agent.cli", run_name="__main__", alter_sys=True)
"""

# Never needed by `run` whatever the config: the server's validation, cryptography (the agent signs
# with libsodium: agent/signer.py), the CLI's other commands and argparse (agent/cli.py `run_args`),
# log rotation without a log file, "did you mean" suggestions for config mistakes.
NEVER = ("pydantic", "cryptography", "server", "sim", "tests", "agent.calibrate", "agent.winservice",
         "logging.handlers", "difflib", "statistics", "minimalmodbus", "argparse", "gettext")
# Only for the detectors / identity sources that use them.
POWER_METER = ("pymodbus", "asyncio", "serial", "agent.detectors.power_meter.bus")
DATA_FILES = ("watchdog", "watchdog.observers", "agent.detectors.data_files")
PROCESS = ("psutil", "agent.detectors.process")
CHECKIN = ("agent.identity.checkin",)
# The check-in page's HTTP side: on its first connection only (agent/identity/checkin.py).
CHECKIN_HTTP = ("http.server", "http.client", "socketserver", "email", "agent.identity.checkin_http")
CARD = ("agent.identity.card_reader",)
# agent/lean.py: paho's `urllib.request` (proxy lookup with PySocks only) never runs; `ssl` always
# does (paho names it in every socket read's `except`).
SSL = ("ssl", "_ssl")
URLLIB_REQUEST = ("urllib.request", "urllib.response")
SERIAL_STATUS = ("agent.detectors.serial_status",)
# agent/signer.py: PyNaCl's Ed25519 binding only, not the other bindings nacl.signing pulls in.
NACL_UNUSED = ("nacl.signing", "nacl.public", "nacl.bindings.crypto_box", "nacl.bindings.crypto_pwhash")
# agent/lean.py RUN_DEFERRED and EARLY_DEFERRED: imported by a library, read only on paths `run` does not take
# (a logged traceback, a reconnect's jitter, a subprocess, a non-ASCII host name, archives); watchdog's
# `ctypes.util` (with shutil, tempfile, bz2, lzma); `secrets` (agent/identity `new_session_id`).
READ_ON_DEMAND = ("traceback", "linecache", "tokenize", "textwrap", "subprocess", "locale", "glob", "random",
                  "stringprep", "ctypes.util", "shutil", "tempfile", "bz2", "lzma", "secrets", "hmac")
ASYNCIO_LOOP = ("asyncio.base_events", "asyncio.events", "asyncio.tasks", "asyncio.sslproto", "concurrent")


def unit_optimize() -> dict[str, str]:
    """PYTHONOPTIMIZE as deploy/agent/jishi-agent.service sets it (the production agent runs with -OO)."""
    unit = (ROOT / "deploy" / "agent" / "jishi-agent.service").read_text()
    return dict(re.findall(r"\b(PYTHONOPTIMIZE)=(\S+)", unit))


def run_modules(cfg: Path, broker: Any, agent_id: str, env: dict[str, str] | None = None) -> set[str]:
    """The modules `jishi-agent run --config cfg` had imported after its first heartbeat."""
    out = cfg.parent / "modules.json"
    log = cfg.parent / "agent.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(out), "run", "--config", str(cfg)],
                                stdout=fh, stderr=fh, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    col = Collector(broker, cfg.parent, agent_id)
    try:
        col.wait_for(lambda c: any(r["type"] == "heartbeat" for r in c.records.values()), 30, "a heartbeat")
    finally:
        col.close()
        proc.terminate()
        code = proc.wait(30)
    assert code == 0, log.read_text(errors="replace")[-3000:]
    return set(json.loads(out.read_text()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def absent(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """`names` (packages with their submodules) that were imported."""
    return sorted(m for m in modules for n in names if m == n or m.startswith(n + "."))


def present(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return [n for n in names if n not in modules]


@pytest.mark.slow
def test_a_process_only_agent_loads_no_device_file_or_web_libraries(tmp_path: Path, mqtt_broker: Any) -> None:
    detectors = '[detectors.software]\nkind = "process"\nnames = ["no-such-program-jishi"]\n'
    cfg = write_config(tmp_path, agent_id="imp-lean", broker=mqtt_broker, detectors=detectors,
                       running="software", heartbeat=0.5)
    optimize = unit_optimize()
    assert optimize == {"PYTHONOPTIMIZE": "2"}
    mods = run_modules(cfg, mqtt_broker, "imp-lean", env=optimize)  # and it runs as in production (-OO)
    assert present(mods, (*PROCESS, "paho.mqtt.client", "sqlite3", "nacl.bindings.crypto_sign", "hashlib")) == []
    assert absent(mods, NACL_UNUSED) == []
    assert absent(mods, NEVER + POWER_METER + DATA_FILES + CHECKIN + CHECKIN_HTTP + CARD + SERIAL_STATUS) == []
    assert absent(mods, (*URLLIB_REQUEST, "email", "http.client")) == []
    assert absent(mods, READ_ON_DEMAND) == []
    assert present(mods, SSL) == []


@pytest.mark.slow
def test_the_benchmark_agent_loads_what_its_detectors_need_and_nothing_else(tmp_path: Path,
                                                                           mqtt_broker: Any) -> None:
    """Process + power meter + data files, OS sessions and the check-in page (bench/agent_footprint.py)."""
    data = tmp_path / "acq"
    data.mkdir()
    with ModbusMeter(watts=40.0) as meter:
        detectors = meter_toml(meter) + (
            '[detectors.software]\nkind = "process"\nnames = ["no-such-program-jishi"]\n'
            f'[detectors.files]\nkind = "data_files"\npath = "{data}"\npatterns = ["*.dat"]\n')
        cfg = write_config(tmp_path, agent_id="imp-full", broker=mqtt_broker, detectors=detectors,
                           running="power or software or files", heartbeat=0.5, checkin_port=free_port())
        text = cfg.read_text().replace("os_session = false", "os_session = true")
        cfg.write_text(text)
        mods = run_modules(cfg, mqtt_broker, "imp-full")
    assert present(mods, PROCESS + POWER_METER + DATA_FILES + CHECKIN) == []
    assert absent(mods, NEVER + CARD + SERIAL_STATUS + URLLIB_REQUEST) == []
    assert absent(mods, READ_ON_DEMAND) == []
    assert present(mods, ("ctypes", "watchdog.observers.inotify", "psutil", "dataclasses", "logging")) == []
    assert present(mods, SSL) == []
    assert absent(mods, CHECKIN_HTTP) == []  # the page configured, nobody visited it
    assert absent(mods, NACL_UNUSED) == []
    assert absent(mods, ("pymodbus.client.tcp", "pymodbus.client.tls", "pymodbus.client.udp")) == []
    # pymodbus's sync serial client: asyncio's base classes only, no event loop (agent/lean.py)
    assert absent(mods, ASYNCIO_LOOP) == []
