"""The broker configuration generated from the registry, on a real Mosquitto with TLS: an agent
publishes only under its own instrument's topics and reads only its own ack and cmd; a revoked
agent, a wrong password and anonymous clients are refused; the server's user sees every agent."""

from __future__ import annotations

import datetime as dt
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from protocols.signing import generate, key_id, public_to_b64
from server.deploy_config import generate as generate_config
from server.deploy_config import password_hash, registry_agents
from sim.devstack import free_port, wait_for_port

MOSQUITTO = Path("/usr/sbin/mosquitto")


def _cert(tmp: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 / localhost."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jishi test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = (tmp / "server.crt", tmp / "server.key", tmp / "ca.crt")
    paths[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for p in paths:
        p.chmod(0o644)
    return paths


def _registry(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO organisations (id, name) VALUES ('o', 'Org')")
        conn.execute("INSERT INTO units (id, org_id, name) VALUES ('ua', 'o', 'A'), ('ub', 'o', 'B')")
        conn.execute("INSERT INTO instruments (id, unit_id, name) VALUES ('xrd', 'ua', 'XRD'), ('sem', 'ub', 'SEM'),"
                     " ('nmr', 'ua', 'NMR')")
        for agent, inst in (("a-xrd", "xrd"), ("b-sem", "sem"), ("old-nmr", "nmr")):
            k = generate()
            conn.execute("INSERT INTO agents (id, instrument_id) VALUES (%s, %s)", (agent, inst))
            conn.execute("INSERT INTO agent_keys (key_id, agent_id, public_key) VALUES (%s, %s, %s)",
                         (key_id(k), agent, public_to_b64(k)))
        conn.execute("UPDATE agents SET revoked_at = now(), revoked_reason = 'PC replaced' WHERE id = 'old-nmr'")


@pytest.fixture
def broker(fresh_db: str) -> Iterator[tuple[int, Path, Path]]:
    """A Mosquitto running the generated configuration; yields (port, config dir, CA file).

    In a world-searchable directory: started as root, Mosquitto drops to the mosquitto user."""
    if not MOSQUITTO.exists():
        pytest.skip("mosquitto is not installed")
    _registry(fresh_db)
    tmp_path = Path(tempfile.mkdtemp(prefix="jishi-acl-"))
    tmp_path.chmod(0o755)
    tls = _cert(tmp_path)
    port = free_port()
    out = tmp_path / "mosquitto"
    generate_config(out, registry_agents(fresh_db), port=port, tls=tls, persistence_dir=None)
    out.chmod(0o755)
    (out / "passwords").chmod(0o644)  # the broker may run as another user in this test
    proc = subprocess.Popen([str(MOSQUITTO), "-c", str(out / "mosquitto.conf")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, 15, alive=lambda: proc.poll() is None)
        yield port, out, tls[2]
    finally:
        proc.terminate()
        out_text = proc.communicate(timeout=10)[0].decode(errors="replace")
        if proc.returncode not in (0, -15):
            print(out_text)
        shutil.rmtree(tmp_path, ignore_errors=True)


class Client:
    def __init__(self, port: int, ca: Path, user: str | None, password: str | None, cid: str) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.suback: list[list[int]] = []
        self.rc: list[int] = []
        self.disconnects = 0
        self.connected = threading.Event()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv311)
        self.c.tls_set(ca_certs=str(ca), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        if user is not None:
            self.c.username_pw_set(user, password)
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = lambda c, u, m: self.got.append((m.topic, bytes(m.payload)))
        self.c.on_subscribe = lambda c, u, mid, codes, p: self.suback.append([int(x.value) for x in codes])
        self.c.connect("localhost", port)
        self.c.loop_start()
        self.connected.wait(10)

    def _on_connect(self, c: Any, u: Any, flags: Any, rc: Any, p: Any) -> None:
        self.rc.append(int(rc.value))
        self.connected.set()

    def _on_disconnect(self, c: Any, u: Any, flags: Any, rc: Any, p: Any) -> None:
        self.disconnects += 1

    @property
    def ok(self) -> bool:
        return self.rc == [0]

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def _wait(pred: Any, timeout: float = 5) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return bool(pred())


def test_agents_are_confined_to_their_own_topics(broker: tuple[int, Path, Path]) -> None:
    port, out, ca = broker
    secret = {p.name: p.read_text().strip() for p in (out / "secrets").iterdir()}
    assert set(secret) == {"jishi-server", "jishi-web", "a-xrd", "b-sem"}  # none for the revoked agent
    server = Client(port, ca, "jishi-server", secret["jishi-server"], "ingest")
    a = Client(port, ca, "a-xrd", secret["a-xrd"], "a-xrd")
    try:
        assert server.ok and a.ok
        server.c.subscribe([("$share/g/jishi/v1/+/+/rec", 1), ("jishi/v1/+/+/birth", 1)])
        a.c.subscribe([("jishi/v1/ua/xrd/ack", 1), ("jishi/v1/ub/sem/ack", 1), ("jishi/v1/+/+/rec", 1)])
        assert _wait(lambda: len(server.suback) == 1 and len(a.suback) == 1)
        assert server.suback[0] == [1, 1]
        # Mosquitto 2 grants any subscription and checks `read` on every message it would deliver

        a.c.publish("jishi/v1/ua/xrd/rec", b"own", qos=1).wait_for_publish(5)
        a.c.publish("jishi/v1/ub/sem/rec", b"forged", qos=1).wait_for_publish(5)  # another unit's instrument
        a.c.publish("jishi/v1/ua/nmr/birth", b"forged", qos=1).wait_for_publish(5)  # same unit, other instrument
        a.c.publish("jishi/v1/ua/xrd/ack", b"self-ack", qos=1).wait_for_publish(5)  # acks come from the server
        # a last allowed message: the broker delivers a client's messages in order, so once it is
        # here, anything forged before it would have been here too
        a.c.publish("jishi/v1/ua/xrd/rec", b"last", qos=1).wait_for_publish(5)
        assert _wait(lambda: ("jishi/v1/ua/xrd/rec", b"last") in server.got)
        assert server.got == [("jishi/v1/ua/xrd/rec", b"own"), ("jishi/v1/ua/xrd/rec", b"last")]

        server.c.publish("jishi/v1/ub/sem/ack", b"ack-b", qos=1).wait_for_publish(5)
        server.c.publish("jishi/v1/ua/xrd/ack", b"ack-a", qos=1).wait_for_publish(5)
        assert _wait(lambda: ("jishi/v1/ua/xrd/ack", b"ack-a") in a.got)
        # only its own ack: not another instrument's, not its own forged one, no records of anyone
        assert a.got == [("jishi/v1/ua/xrd/ack", b"ack-a")]
    finally:
        server.close()
        a.close()


def test_the_web_publishes_commands_only(broker: tuple[int, Path, Path]) -> None:
    """The web's user (phone check-in, SPEC §9.5) may publish on any agent's `cmd`, and do nothing else:
    no acks, no records in an agent's name, no reading of records."""
    port, out, ca = broker
    secret = {p.name: p.read_text().strip() for p in (out / "secrets").iterdir()}
    server = Client(port, ca, "jishi-server", secret["jishi-server"], "ingest")
    a = Client(port, ca, "a-xrd", secret["a-xrd"], "a-xrd")
    web = Client(port, ca, "jishi-web", secret["jishi-web"], "jishi-web")
    try:
        assert server.ok and a.ok and web.ok
        server.c.subscribe([("jishi/v1/+/+/rec", 1)])
        a.c.subscribe([("jishi/v1/ua/xrd/cmd", 1), ("jishi/v1/ua/xrd/ack", 1)])
        web.c.subscribe([("jishi/v1/+/+/rec", 1), ("jishi/v1/+/+/cmd", 1)])
        assert _wait(lambda: len(server.suback) == 1 and len(a.suback) == 1 and len(web.suback) == 1)
        web.c.publish("jishi/v1/ua/xrd/ack", b"forged-ack", qos=1).wait_for_publish(5)
        web.c.publish("jishi/v1/ua/xrd/rec", b"forged-rec", qos=1).wait_for_publish(5)
        a.c.publish("jishi/v1/ua/xrd/rec", b"own", qos=1).wait_for_publish(5)
        web.c.publish("jishi/v1/ua/xrd/cmd", b"checkin", qos=1).wait_for_publish(5)
        assert _wait(lambda: ("jishi/v1/ua/xrd/cmd", b"checkin") in a.got)
        assert _wait(lambda: ("jishi/v1/ua/xrd/rec", b"own") in server.got)
        assert a.got == [("jishi/v1/ua/xrd/cmd", b"checkin")]
        assert server.got == [("jishi/v1/ua/xrd/rec", b"own")]
        assert web.got == []  # reads nothing, not even its own commands
    finally:
        for c in (server, a, web):
            c.close()


def test_refused_without_valid_credentials(broker: tuple[int, Path, Path]) -> None:
    port, out, ca = broker
    secret = (out / "secrets" / "b-sem").read_text().strip()
    for user, pw in ((None, None), ("b-sem", "wrong"), ("old-nmr", "anything"), ("a-xrd", secret)):
        c = Client(port, ca, user, pw, f"probe-{user}")
        try:
            assert c.rc and c.rc[0] != 0, (user, c.rc)
        finally:
            c.close()


def test_regenerating_keeps_passwords_and_hash_format(broker: tuple[int, Path, Path], fresh_db: str) -> None:
    port, out, _ca = broker
    before = (out / "secrets" / "a-xrd").read_text()
    generate_config(out, registry_agents(fresh_db), port=port, persistence_dir=None)
    assert (out / "secrets" / "a-xrd").read_text() == before
    emqx = (out / "emqx-acl.conf").read_text()
    assert '{allow, {\'and\', [{username, "a-xrd"}, {clientid, "a-xrd"}]}, publish, ["jishi/v1/ua/xrd/rec", ' \
           '"jishi/v1/ua/xrd/birth", "jishi/v1/ua/xrd/death"]}.' in emqx
    assert "old-nmr" not in emqx and emqx.rstrip().endswith("{deny, all}.")
    h = password_hash("pw", salt=b"\x00" * 12)
    assert h.startswith("$7$101$AAAAAAAAAAAAAAAA$") and len(h.split("$")[-1]) == 88


def test_an_agent_cannot_take_over_another_agents_client_id(broker: tuple[int, Path, Path]) -> None:
    """Issue 13 item 7: agent A's credentials with agent B's client id used to disconnect B (and the
    two then evicted each other in a loop). The client id is now the username: B stays connected."""
    port, out, ca = broker
    secret = {p.name: p.read_text().strip() for p in (out / "secrets").iterdir()}
    assert "use_username_as_clientid true" in (out / "mosquitto.conf").read_text()
    server = Client(port, ca, "jishi-server", secret["jishi-server"], "ingest")
    b = Client(port, ca, "b-sem", secret["b-sem"], "b-sem")
    attackers: list[Client] = []
    try:
        assert server.ok and b.ok
        server.c.subscribe([("jishi/v1/+/+/rec", 1)])
        assert _wait(lambda: len(server.suback) == 1)
        for _ in range(3):  # a takeover happens while the broker handles the CONNECT, before its CONNACK
            if attackers:
                attackers[-1].close()
            attackers.append(Client(port, ca, "a-xrd", secret["a-xrd"], "b-sem"))
            assert attackers[-1].ok  # A's credentials are valid: it is let in, as itself
        # B's session is the same one: a message it publishes now travels on its first connection
        b.c.publish("jishi/v1/ub/sem/rec", b"still here", qos=1).wait_for_publish(5)
        assert _wait(lambda: ("jishi/v1/ub/sem/rec", b"still here") in server.got)
        assert b.disconnects == 0 and b.rc == [0]
        # and what the attacker connection may do is A's, never B's
        attackers[-1].c.publish("jishi/v1/ub/sem/rec", b"forged", qos=1).wait_for_publish(5)
        b.c.publish("jishi/v1/ub/sem/rec", b"marker", qos=1).wait_for_publish(5)
        assert _wait(lambda: ("jishi/v1/ub/sem/rec", b"marker") in server.got)
        assert ("jishi/v1/ub/sem/rec", b"forged") not in server.got
    finally:
        for c in (server, b, *attackers):
            c.close()
