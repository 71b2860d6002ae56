"""TLS with a client certificate and username/password, against a private Mosquitto with a
certificate authority made by the test (the shared test broker speaks plain MQTT)."""

from __future__ import annotations

import datetime
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.clock import Clock
from agent.config import load
from agent.publisher import Publisher
from agent.recorder import Recorder
from agent.spool import Spool
from protocols.signing import load_private
from tests.agent.helpers import wait_until, write_config

MOSQUITTO = Path("/usr/sbin/mosquitto")


def _cert(subject: str, issuer_key: Any, issuer: x509.Name | None, ca: bool, dns: str | None = None) -> tuple[
        Any, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns), x509.IPAddress(
            __import__("ipaddress").ip_address("127.0.0.1"))]), critical=False)
    return key, builder.sign(issuer_key or key, hashes.SHA256())


def _write(path: Path, key: Any, cert: x509.Certificate) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))


@pytest.fixture(scope="module")
def tls_broker() -> Iterator[tuple[str, int, Path]]:
    if not MOSQUITTO.exists():
        pytest.skip("mosquitto is not installed (deploy/install.sh)")
    d = Path(tempfile.mkdtemp(prefix="jishi-tls-"))
    d.chmod(0o755)
    ca_key, ca = _cert("jishi test CA", None, None, ca=True)
    _write(d / "ca", ca_key, ca)
    skey, scert = _cert("localhost", ca_key, ca.subject, ca=False, dns="localhost")
    _write(d / "server", skey, scert)
    ckey, ccert = _cert("tls-agent", ca_key, ca.subject, ca=False)
    _write(d / "client", ckey, ccert)
    for f in d.iterdir():
        f.chmod(0o644)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    (d / "m.conf").write_text(f"""per_listener_settings false
listener {port} 127.0.0.1
cafile {d}/ca.crt
certfile {d}/server.crt
keyfile {d}/server.key
require_certificate true
use_identity_as_username true
allow_anonymous false
persistence false
log_dest file {d}/m.log
""")
    proc = subprocess.Popen([str(MOSQUITTO), "-c", str(d / "m.conf")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield "localhost", port, d
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(d, ignore_errors=True)


def test_tls_with_client_certificate(tls_broker: tuple[str, int, Path], tmp_path: Path) -> None:
    host, port, d = tls_broker

    class B:
        pass

    b = B()
    b.host, b.port = host, port  # type: ignore[attr-defined]
    extra = f'tls = true\nca_file = "{d}/ca.crt"\ncert_file = "{d}/client.crt"\nkey_file = "{d}/client.key"'
    cfg = load(write_config(tmp_path, agent_id="tls1", broker=b, detectors=DUMMY, running="power",
                            mqtt_extra=extra), environ={})
    spool = Spool(cfg.spool_path, "tls1")
    rec = Recorder(spool, "tls1", spool.start_boot(), Clock(2000))
    rec.lifecycle("boot", {})
    pub = Publisher(cfg, load_private(cfg.agent.key_file), 1)
    pub.start()
    try:
        wait_until(lambda: pub.published_records == 1, 15, "published over TLS")
        assert pub.connected and pub.conn == 1
    finally:
        pub.stop()
        spool.close()

    # without the client certificate the broker refuses, and the publisher says why and retries
    (tmp_path / "nocert").mkdir()
    cfg2 = load(write_config(tmp_path / "nocert", agent_id="tls2", broker=b, detectors=DUMMY, running="power",
                             mqtt_extra=f'tls = true\nca_file = "{d}/ca.crt"'), environ={})
    pub2 = Publisher(cfg2, load_private(cfg2.agent.key_file), 1)
    pub2.start()
    try:
        wait_until(lambda: bool(pub2.last_error), 15, "a refusal")
        assert not pub2.connected
    finally:
        pub2.stop()


DUMMY = """
[detectors.power]
kind = "power_meter"
port = "/dev/null"
levels = [{ state = "off", below_w = 5 }, { state = "running" }]
"""
