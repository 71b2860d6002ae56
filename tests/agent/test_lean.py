"""agent/lean.py: what `jishi-agent run` keeps out of memory must not change what it computes.

Each check that changes the import system runs in its own interpreter (the real `python`), so this
process's modules are left as they are. The running agent with these in force is covered by
tests/agent/test_import_set.py (what it loads) and the other agent tests (what it does).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from types import SimpleNamespace

from sim.modbus_meter import ModbusMeter
from tests.agent.helpers import ROOT

BROKER = SimpleNamespace(host="127.0.0.1", port=1883)  # written into the config only; nothing connects


def python(code: str) -> dict[str, object]:
    """Run `code` in a fresh interpreter with this tree on the path; it prints one JSON object."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_a_deferred_module_runs_on_first_use_and_serves_every_reference() -> None:
    got = python("""
import json, sys
from agent import lean
deferred = lean.deferred("urllib.request")
import paho.mqtt.client  # imports urllib.request at module level
import urllib
before = "urllib.response" in sys.modules
stub = urllib.request
proxies = urllib.request.getproxies()  # paho's use, with PySocks installed
real = sys.modules["urllib.request"]
print(json.dumps({"deferred": deferred, "ran_before_use": before, "ran_after_use": "urllib.response" in sys.modules,
                  "replaced": real is not stub and urllib.request is real, "proxies": isinstance(proxies, dict),
                  "stub_serves": stub.Request is real.Request, "again": lean.deferred("urllib.request")}))
""")
    assert got == {"deferred": True, "ran_before_use": False, "ran_after_use": True, "replaced": True,
                   "proxies": True, "stub_serves": True, "again": False}


def test_what_run_defers_works_on_first_use() -> None:
    """`jishi-agent run` defers what `logging`, `dataclasses`, psutil, watchdog and the publisher import
    but read only on rare paths (agent/lean.py): each path still works when taken, and loads it then."""
    got = python("""
import json, sys
from agent import lean
lean.before_imports(["run"])
lean.for_run()
import io, logging, dataclasses, psutil, subprocess, random
from agent.detectors.data_files import DataFilesDetector
from agent.identity import new_session_id
loaded = lambda *names: [n for n in names if "__deferred__" not in vars(sys.modules[n])]
before = loaded("traceback", "linecache", "tokenize", "textwrap", "subprocess", "locale", "random")
out = io.StringIO()
logging.basicConfig(stream=out)
try:
    json.loads("{")
except ValueError as exc:
    tb = exc.__traceback__
    while tb.tb_next:
        tb = tb.tb_next
    where = (tb.tb_frame.f_code.co_filename, tb.tb_lineno)
    logging.getLogger("t").exception("failed")
import linecache
source = linecache.getline(*where).strip()  # the innermost frame's line, which the traceback shows
child = subprocess.run([sys.executable, "-c", "print('ok')"], capture_output=True, text=True).stdout
sid = new_session_id()
print(json.dumps({"before": before, "shown": bool(source) and f"\\n    {source}\\n" in out.getvalue(),
                  "traceback": "Traceback (most recent call last):" in out.getvalue(),
                  "child": child, "jitter": 1 <= random.uniform(1, 2) <= 2, "sid": [len(sid), int(sid, 16) >= 0],
                  "after": loaded("traceback", "linecache", "tokenize", "subprocess", "locale", "random")}))
""")
    assert got == {"before": [], "traceback": True, "shown": True,
                   "child": "ok\n", "jitter": True, "sid": [16, True],
                   "after": ["traceback", "linecache", "tokenize", "subprocess", "locale", "random"]}


def test_paho_reads_a_socket_without_data_as_the_agent_runs_it() -> None:
    """paho names `ssl.SSLWantReadError` in the `except` of every socket read: with `ssl` made
    unavailable (this round's first agent/lean.py), a read that would block raised AttributeError and
    the publisher dropped its connection (CI, 2026-12-03). As `jishi-agent run` sets the process up,
    a read of a socket with nothing to read is paho's own "would block", and its loop goes on."""
    got = python("""
import json, socket
from agent import lean
lean.for_run()
from agent import publisher  # imports paho as the agent does
import paho.mqtt.client as mqtt
a, b = socket.socketpair()
a.setblocking(False)
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="lean-read")
c._sock = a  # the connected socket paho reads (private: the code path the agent's loop takes)
try:
    c._sock_recv(1)
    got = "data"
except BlockingIOError:
    got = "would block"
except AttributeError as exc:
    got = f"AttributeError: {exc}"
print(json.dumps({"read": got, "ssl": mqtt.ssl is not None}))
""")
    assert got == {"read": "would block", "ssl": True}


def test_a_package_on_demand_runs_its_init_on_first_attribute_read() -> None:
    got = python("""
import json, sys
from agent import lean
registered = lean.package_on_demand("pymodbus.client")
from pymodbus.client.serial import ModbusSerialClient
alone = "pymodbus.client.tcp" not in sys.modules
import pymodbus.client
tcp = pymodbus.client.ModbusTcpClient  # the package's __init__ runs now
print(json.dumps({"registered": registered, "alone": alone, "tcp": tcp.__module__,
                  "same_serial": pymodbus.client.ModbusSerialClient is ModbusSerialClient,
                  "ssl": "_ssl" in sys.modules, "again": lean.package_on_demand("pymodbus.client"),
                  "missing": hasattr(pymodbus.client, "NoSuchThing")}))
""")
    assert got == {"registered": True, "alone": True, "tcp": "pymodbus.client.tcp", "same_serial": True,
                   "ssl": True, "again": False, "missing": False}


def test_a_serial_meter_link_reads_with_asyncio_base_classes_only() -> None:
    """pymodbus's sync serial client subclasses asyncio's base classes and raises its TimeoutError on
    silence: a reply and a silent address work without asyncio's event loop modules; any other read of
    asyncio loads all of it."""
    with ModbusMeter(watts=40.0) as meter:
        got = python(f"""
import json, sys
from agent.detectors.power_meter import bus
link = bus.acquire(bus.Endpoint("serial", {meter.port!r}, timeout_s=0.2))
regs = link.read(1, 4, 0x000C, 2, retries=0)
try:
    link.read(7, 4, 0x000C, 2, retries=0)  # nobody at address 7: silence
    silent = "answered"
except bus.NoResponse:
    silent = "NoResponse"
bus.release(link)
loaded = sorted(m for m in sys.modules if m.startswith("asyncio"))
import asyncio
print(json.dumps({{"regs": regs, "silent": silent, "loaded": loaded,
                  "same": asyncio.BaseProtocol is asyncio.protocols.BaseProtocol,
                  "loop": asyncio.run(asyncio.sleep(0, "ran")), "full": "asyncio.base_events" in sys.modules}}))
""")
    assert got["regs"] == list(struct.unpack(">HH", struct.pack(">f", 40.0)))
    assert got["silent"] == "NoResponse"
    assert got["loaded"] == ["asyncio", "asyncio.exceptions", "asyncio.protocols", "asyncio.transports"]
    assert got["same"] is True and got["loop"] == "ran" and got["full"] is True
