"""agent/lean.py: what `jishi-agent run` keeps out of memory must not change what it computes.

Each check that changes the import system runs in its own interpreter (the real `python`), so this
process's modules are left as they are. The running agent with these in force is covered by
tests/agent/test_import_set.py (what it loads) and the other agent tests (what it does).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from agent import lean
from agent.config import load
from sim.modbus_meter import ModbusMeter
from tests.agent.helpers import ROOT, write_config

BROKER = SimpleNamespace(host="127.0.0.1", port=1883)  # written into the config only; nothing connects


def python(code: str) -> dict[str, object]:
    """Run `code` in a fresh interpreter with this tree on the path; it prints one JSON object."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_built_in_hashes_give_the_same_digests_and_config_digest_without_openssl(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, agent_id="lean-h", broker=BROKER, running="software",
                       detectors='[detectors.software]\nkind = "process"\nnames = ["x"]\n')
    data = bytes(range(256)) * 300
    got = python(f"""
import json, sys
from agent import lean
applied = lean.builtin_hashes()
import hashlib
from agent.config import load
from protocols.chain import record_hash
print(json.dumps({{"applied": applied, "openssl": sys.modules.get("_hashlib") is not None,
                  "sha256": hashlib.sha256(bytes(range(256)) * 300).hexdigest(),
                  "file": hashlib.file_digest(open({str(cfg)!r}, "rb"), "sha256").hexdigest(),
                  "config": load({str(cfg)!r}).digest}}))
""")
    assert got["applied"] is True and got["openssl"] is False
    assert got["sha256"] == hashlib.sha256(data).hexdigest()
    assert got["file"] == hashlib.sha256(cfg.read_bytes()).hexdigest()
    assert got["config"] == load(cfg).digest


def test_openssl_hashes_come_back_when_ssl_loads_openssl_anyway(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, agent_id="lean-o", broker=BROKER, running="software",
                       detectors='[detectors.software]\nkind = "process"\nnames = ["x"]\n')
    got = python(f"""
import json, sys
from agent import lean
lean.builtin_hashes()
from agent.config import load
digest = load({str(cfg)!r}).digest  # the config loader imports hashlib: built-in SHA-256
import hashlib
builtin = hashlib.sha256.__module__
undone = lean.openssl_hashes()
import _hashlib
print(json.dumps({{"builtin": builtin, "undone": undone, "openssl": hashlib.sha256 is _hashlib.openssl_sha256,
                  "same": load({str(cfg)!r}).digest == digest, "again": lean.openssl_hashes()}}))
""")
    assert got == {"builtin": "_sha256", "undone": True, "openssl": True, "same": True, "again": False}


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


def test_ssl_stays_available_with_tls_or_a_network_power_meter(tmp_path: Path) -> None:
    process = '[detectors.software]\nkind = "process"\nnames = ["x"]\n'
    levels = 'levels = [{ state = "off", below_w = 5 }, { state = "running" }]\n'
    plain = load(write_config(tmp_path / "a", agent_id="lean-a", broker=BROKER, running="software",
                              detectors=process))
    (tmp_path / "b").mkdir()
    tls = load(write_config(tmp_path / "b", agent_id="lean-b", broker=BROKER, running="software",
                            detectors=process, mqtt_extra="tls = true"))
    configs = {}
    for name, where in (("serial", 'port = "/dev/null"'), ("rfc2217", 'port = "rfc2217://10.0.0.9:4001"'),
                        ("host", 'host = "10.0.0.9"'), ("socket", 'port = "socket://10.0.0.9:502"')):
        (tmp_path / name).mkdir()
        configs[name] = load(write_config(tmp_path / name, agent_id=f"lean-{name}", broker=BROKER, running="power",
                                          detectors=f'[detectors.power]\nkind = "power_meter"\n{where}\n{levels}'))
    assert lean.needs_ssl([plain]) is False
    assert lean.needs_ssl([tls]) is True
    assert lean.needs_ssl([configs["serial"]]) is False  # pymodbus's serial client alone: no ssl
    assert lean.needs_ssl([configs["rfc2217"]]) is False
    assert lean.needs_ssl([configs["host"]]) is True  # pymodbus's TCP client reads ssl at import
    assert lean.needs_ssl([configs["socket"]]) is True
    assert lean.needs_ssl([plain, configs["serial"], configs["host"]]) is True


def test_a_serial_meter_link_loads_pymodbus_without_ssl_and_ssl_stays_unavailable() -> None:
    got = python("""
import json, sys
from agent import lean
lean.builtin_hashes()
lean.no_ssl()
from agent.detectors.power_meter import bus
import asyncio.sslproto
from pymodbus.transport import transport
try:
    import ssl
    after = "importable"
except ImportError:
    after = "unavailable"
print(json.dumps({"openssl": [m for m in ("_ssl", "_hashlib") if sys.modules.get(m) is not None],
                  "clients": sorted(m for m in sys.modules if m.startswith("pymodbus.client.")),
                  "asyncio_ssl": asyncio.sslproto.ssl is None, "after": after,
                  "stand_in": "__deferred__" in vars(transport.ssl),
                  "serial_client": bus.ModbusSerialClient.__module__}))
""")
    assert got == {"openssl": [],
                   "clients": ["pymodbus.client.base", "pymodbus.client.mixin", "pymodbus.client.serial"],
                   "asyncio_ssl": True, "after": "unavailable", "stand_in": True,
                   "serial_client": "pymodbus.client.serial"}


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
