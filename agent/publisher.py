"""MQTT publisher: Will, birth, batched envelopes from the spool, server acks, re-sends.

Runs in its own thread with its own spool connection and drives paho's network loop itself, so
it controls what a connection is: before each connect a fresh client gets a Will (the signed
death message, clean=False, with this connection's number), after CONNACK a retained birth says
where the agent stands (next_seq, spool_first, acked), then everything above the server's ack is
sent in order, in envelopes of up to `batch_records` / `batch_bytes`, at most `max_inflight`
unacknowledged by the broker. A fresh client per connection means paho never re-sends from its
in-memory queue: the spool is the only queue. Reconnects back off exponentially with jitter.

Server -> agent: `ack` (retained; trims the spool) and `cmd` (resend a range, rebirth).
"""

from __future__ import annotations

import hashlib
import logging
import queue
import random
import threading
import time
from typing import Any, NamedTuple

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent import SOFTWARE
from agent.config import Config, MqttSection
from agent.spool import Spool, SpoolError, SpoolFull
from protocols import envelope as env
from protocols.canonical import canonical, dumps_sorted
from protocols.envelope import SESSION_COMMANDS
from protocols.signing import Signer, sign
from protocols.topics import Kind, topic

log = logging.getLogger("jishi.publisher")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def secure(client: mqtt.Client, m: MqttSection) -> None:
    """TLS (CA file, optional client certificate) and username/password, as configured."""
    if m.tls:
        client.tls_set(ca_certs=str(m.ca_file) if m.ca_file else None,
                       certfile=str(m.cert_file) if m.cert_file else None,
                       keyfile=str(m.key_file) if m.key_file else None)
    if m.username:
        client.username_pw_set(m.username, m.read_password() or None)


def unchanged(body: bytes, digest: str) -> bool:
    """A spooled body is still the bytes the spool hashed when it stored the record (SPEC.md §2: a
    record's hash is the SHA-256 of its canonical bytes), so it is that record's canonical form."""
    return hashlib.sha256(body).hexdigest() == digest


def seal_records(*, key: Signer, agent: str, unit: str, instrument: str, boot: int, sent: int,
                 records: bytes) -> bytes:
    """The `rec` envelope of spooled records, byte for byte what `protocols.envelope.envelope` makes of
    the parsed bodies, built without parsing them: `records` is the JSON array of their canonical
    bodies (`[body,body,...]`), which goes in as it is (`orjson.Fragment`).

    Why: parsing a 500-record batch into dicts only to encode them again made ~1 MB of short-lived
    objects whose pymalloc arenas stayed after a backlog (bench/RESULTS.md, agentmem5/agentmem6).
    Only bodies `unchanged` against their stored hash may come here: `Spool._append` stored
    `canonical(record)` (checked there) and its hash, so such a body is canonical, and `[a,b]` is how
    orjson writes a list. The header is checked by `canonical` as before; `protocols.canonical`
    itself stays as strict for everyone."""
    body = env.rec_header(key=key, agent=agent, unit=unit, instrument=instrument, boot=boot, sent=sent)
    canonical(body)  # the header's values, checked as `seal` checks them
    body["records"] = orjson.Fragment(records)
    body["sig"] = sign(key, dumps_sorted(body))
    return dumps_sorted(body)


class Batch(NamedTuple):
    """One sealed `rec` envelope of spooled records."""

    first: int
    last: int
    records: int  # how many (a batch never spans a hole, but count, do not subtract)
    data: bytes


class Publisher(threading.Thread):
    def __init__(self, cfg: Config, key: Signer, boot: int) -> None:
        super().__init__(name=f"publisher-{cfg.agent.id}", daemon=True)  # names the agent in a gateway's log
        self.cfg = cfg
        self.m = cfg.mqtt
        self.key = key
        self.boot = boot
        a = cfg.agent
        self.ids = {"agent": a.id, "unit": a.unit, "instrument": a.instrument}
        self.topics = {k: topic(a.unit, a.instrument, k) for k in Kind}
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.finished = threading.Event()
        self.conn = 0
        self._node = 0
        """which of the brokers (mqtt.brokers()) the next connection goes to"""
        self.connected = False
        self.acked = 0
        self.cursor = 1
        self.last_error = ""
        self.published_records = 0
        self.first_publish_mono: float | None = None
        self._client: mqtt.Client | None = None
        self._spool: Spool | None = None
        self._inflight: dict[int, tuple[int, int]] = {}
        self._resend: list[tuple[int, int]] = []
        self._changed: set[int] = set()
        """seqs of spool rows found changed on disk (never sent), each named in the log once"""
        self.changed_rows = 0
        self._rebirth = False
        self._more = True
        self._last_progress = time.monotonic()
        self._connack: tuple[bool, str] | None = None
        self._flush_deadline: float | None = None
        self.session_commands: queue.Queue[bytes] = queue.Queue(maxsize=64)
        """signed checkin/checkout commands, checked and taken by the agent's main loop"""
        self.on_session_command: Any = None
        """called (from this thread) after a session command is queued: wakes the main loop"""

    # ---- thread API ------------------------------------------------------------------------------

    def notify(self) -> None:
        """A record was appended: publish it soon."""
        self.wake.set()

    def begin_stop(self) -> None:
        """Start the clean stop without waiting (a gateway stops all its publishers at once)."""
        if self._flush_deadline is None:
            self._flush_deadline = time.monotonic() + self.m.stop_flush_s
        self.stopping.set()
        self.wake.set()

    def stop(self, timeout: float | None = None) -> None:
        """Flush what the spool holds (up to stop_flush_s), send the clean death, disconnect."""
        self.begin_stop()
        if not self.is_alive():
            return
        self.finished.wait(self.m.stop_flush_s + 5 if timeout is None else timeout)

    def status(self) -> dict[str, Any]:
        return {"connected": self.connected, "conn": self.conn, "acked": self.acked, "sent_upto": self.cursor - 1,
                "inflight": len(self._inflight), "last_error": self.last_error}

    def run(self) -> None:
        try:
            self._spool = Spool(self.cfg.spool_path, self.cfg.agent.id)
            self.acked = int(self._spool.meta("acked", 0))
            attempt = 0
            while not self.stopping.is_set():
                try:
                    self._connect()
                    attempt = 0
                    self._session()
                except (OSError, ConnectionError, ValueError) as exc:
                    self.last_error = str(exc) or type(exc).__name__
                    log.warning("mqtt %s:%d: %s", *self._address(), self.last_error)
                except Exception as exc:  # a bug or a locked spool: never stop publishing for good
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.exception("publisher error; reconnecting")
                finally:
                    self._drop_client()
                    self._node += 1  # a broker cluster: the next node (one broker: the same)
                if self.stopping.is_set():
                    break
                delay = min(self.m.backoff_max_s, self.m.backoff_min_s * 2 ** attempt)
                attempt = min(attempt + 1, 30)
                self.stopping.wait(random.uniform(delay / 2, delay))  # full-ish jitter
        except Exception:
            log.exception("publisher thread failed")
        finally:
            if self._spool is not None:
                self._spool.close()
            self.finished.set()

    # ---- connection ------------------------------------------------------------------------------

    def _address(self) -> tuple[str, int]:
        brokers = self.m.brokers()
        return brokers[self._node % len(brokers)]

    def _connect(self) -> None:
        conn = self.conn + 1
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.m.client_id or self.cfg.agent.id,
                             protocol=mqtt.MQTTv311, clean_session=True)
        client.connect_timeout = self.m.connect_timeout_s
        client.max_inflight_messages_set(self.m.max_inflight + 2)
        will = env.death(key=self.key, boot=self.boot, conn=conn, t=now_ms(), clean=False, **self.ids)
        client.will_set(self.topics[Kind.DEATH], will, qos=1, retain=True)
        secure(client, self.m)
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self._client = client
        self._connack = None
        client.connect(*self._address(), keepalive=self.m.keepalive_s)
        deadline = time.monotonic() + self.m.connect_timeout_s
        while self._connack is None:
            rc = client.loop(timeout=0.1)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                raise ConnectionError(f"connection lost before CONNACK ({mqtt.error_string(rc)})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no CONNACK within {self.m.connect_timeout_s} s")
        ok, reason = self._connack
        if not ok:
            raise ConnectionError(f"broker refused the connection: {reason}")
        self.conn = conn
        self.connected = True
        self.last_error = ""
        log.info("connected to %s:%d (boot %d, conn %d)", *self._address(), self.boot, conn)
        # QoS 0 (SPEC.md §4): with a clean session QoS 1 adds nothing, and on a RabbitMQ cluster a
        # QoS 1 subscription is a durable queue on one node that bars this client id from
        # subscribing on any other node while that node is down
        client.subscribe([(self.topics[Kind.ACK], 0), (self.topics[Kind.CMD], 0)])
        self._inflight.clear()
        self._resend.clear()
        st = self._spool_().stats()
        self.acked = max(self.acked, st.acked)
        self.cursor = max(self.acked + 1, st.first_seq)
        self._more = True
        self._last_progress = time.monotonic()
        self._birth()

    def _drop_client(self) -> None:
        self.connected = False
        if self._client is not None:
            try:
                self._client.disconnect()
                self._client.loop(timeout=0.05)
            except (OSError, ValueError):
                pass
            self._client = None

    def _session(self) -> None:
        client = self._client
        assert client is not None
        while True:
            stopping = self.stopping.is_set()
            if stopping and (self._drained() or time.monotonic() > (self._flush_deadline or 0)):
                self._clean_stop(client)
                return
            busy = self._pump(client)
            rc = client.loop(timeout=0.02 if busy else 0.2)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                raise ConnectionError(f"connection lost ({mqtt.error_string(rc)})")
            self._maybe_resend_silent()

    def _drained(self) -> bool:
        st = self._spool_().stats()
        return not self._inflight and self.cursor >= st.next_seq

    def _clean_stop(self, client: mqtt.Client) -> None:
        msg = env.death(key=self.key, boot=self.boot, conn=self.conn, t=now_ms(), clean=True, **self.ids)
        info = client.publish(self.topics[Kind.DEATH], msg, qos=1, retain=True)
        deadline = time.monotonic() + 3
        while not info.is_published() and time.monotonic() < deadline:
            if client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                break
        client.disconnect()
        client.loop(timeout=0.1)
        self.connected = False
        log.info("disconnected cleanly (death published: %s)", info.is_published())

    # ---- sending ---------------------------------------------------------------------------------

    def _spool_(self) -> Spool:
        assert self._spool is not None
        return self._spool

    def _birth(self) -> None:
        assert self._client is not None
        st = self._spool_().stats()
        msg = env.birth(key=self.key, boot=self.boot, conn=self.conn, t=now_ms(), next_seq=st.next_seq,
                        spool_first=st.first_seq, acked=self.acked, sw=SOFTWARE[:32], **self.ids)
        self._client.publish(self.topics[Kind.BIRTH], msg, qos=1, retain=True)

    def _batch(self, first: int, last: int | None = None) -> Batch | None:
        """The next envelope from `first` on (up to `last`); None when the spool holds nothing
        sendable there. The records are `Spool.read`'s; each body is checked against its hash and
        copied into one buffer as it is read, so no batch of rows or of parsed records is ever
        alive (memory: bench/RESULTS.md, agentmem6).

        A row whose body no longer hashes to its stored hash (the spool file changed on disk) is
        never sent (SPEC.md §9.2): the envelope ends before it, or starts after it. The server
        sees a hole there, asks for it, gets nothing, and records it as a gap (not watched), so
        the records around it still go out: before, such a row stopped this agent's publishing
        (tests/agent/test_spooled_envelope.py, tests/e2e/test_ingest_agent.py)."""
        m = self.m
        buf = bytearray(b"[")
        count = lo = hi = 0
        while True:
            skipped = False
            for seq, _type, body, digest in self._spool_().scan(first, m.batch_records, m.batch_bytes, last):
                if not unchanged(body, digest):
                    self._unsendable(seq)
                    if count:
                        break
                    skipped, first = True, seq + 1
                    continue
                if count:
                    buf += b","
                else:
                    lo = seq
                buf += body
                count += 1
                hi = seq
            if count or not skipped or (last is not None and first > last):
                break  # else every row scanned was unsendable: on after them
        if not count:
            return None
        buf += b"]"
        records = bytes(buf)
        del buf
        return Batch(lo, hi, count, seal_records(key=self.key, boot=self.boot, sent=now_ms(), records=records,
                                                 **self.ids))

    def _unsendable(self, seq: int) -> None:
        """Name a changed spool row once (it is met again at every resend until the server's ack
        passes the gap)."""
        if seq in self._changed:
            return
        if len(self._changed) > 10_000:
            self._changed.clear()
        self._changed.add(seq)
        self.changed_rows += 1
        log.error("spool row %d does not match its stored hash (the spool file changed on disk): not sent; "
                  "the server will record seq %d as lost", seq, seq)

    def _send(self, client: mqtt.Client, batch: Batch) -> None:
        info = client.publish(self.topics[Kind.REC], batch.data, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"publish failed ({mqtt.error_string(info.rc)})")
        self._inflight[info.mid] = (batch.first, batch.last)
        self.published_records += batch.records
        if self.first_publish_mono is None:
            self.first_publish_mono = time.monotonic()

    def _pump(self, client: mqtt.Client) -> bool:
        """Send what can be sent now; True when there is more work waiting."""
        if self._rebirth:
            self._rebirth = False
            self._birth()
        limit = self.m.max_inflight
        spool = self._spool_()
        while self._resend and len(self._inflight) < limit:
            first, last = self._resend[0]
            batch = self._batch(first, last)
            if batch is None:
                nxt = spool.next_held(first)
                if nxt is None or nxt > last or nxt == first:  # gone, or held but unsendable
                    self._resend.pop(0)
                else:
                    self._resend[0] = (nxt, last)
                continue
            self._send(client, batch)
            if batch.last >= last:
                self._resend.pop(0)
            else:
                self._resend[0] = (batch.last + 1, last)
        if not (self._more or self.wake.is_set()):
            return False
        self.wake.clear()
        self._more = False
        while len(self._inflight) < limit:
            batch = self._batch(self.cursor)
            if batch is None:
                nxt = spool.next_held(self.cursor)
                if nxt is None or nxt <= self.cursor:
                    return bool(self._resend)
                self.cursor = nxt  # a hole left by the spool limit: the overflow record names it
                continue
            self._send(client, batch)
            self.cursor = batch.last + 1
        self._more = True  # stopped by the in-flight limit: more may be waiting
        return True

    def _maybe_resend_silent(self) -> None:
        """Connected but no ack progress for resend_after_s while records are out: send them again."""
        after = self.m.resend_after_s
        if after <= 0 or self.cursor <= self.acked + 1:
            self._last_progress = time.monotonic()
            return
        if time.monotonic() - self._last_progress >= after:
            log.info("no acknowledgement for %.0f s: re-sending from seq %d", after, self.acked + 1)
            self.cursor = max(self.acked + 1, self._spool_().stats().first_seq)
            self._last_progress = time.monotonic()
            self._more = True

    # ---- callbacks (run inside client.loop(), in this thread) -------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._connack = (not reason.is_failure, str(reason))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        if self._inflight.pop(mid, None) is not None:
            self._more = True

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            body = orjson.loads(msg.payload)
            if not isinstance(body, dict) or body.get("agent") != self.cfg.agent.id or body.get("v") != 1:
                raise ValueError("not for this agent or not v1")
            if msg.topic == self.topics[Kind.ACK] and body.get("msg") == "ack":
                self._ack(body.get("acked"))
            elif msg.topic == self.topics[Kind.CMD] and body.get("msg") == "cmd":
                if body.get("cmd") in SESSION_COMMANDS:
                    self._session_command(msg.payload)
                else:
                    self._command(body)
            else:
                raise ValueError(f"unexpected message on {msg.topic}")
        except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
            log.warning("ignored a message on %s: %s", msg.topic, exc)

    def _ack(self, acked: Any) -> None:
        if not isinstance(acked, int) or isinstance(acked, bool) or acked < 0:
            raise ValueError(f"ack value {acked!r} is not a count")
        if acked <= self.acked:
            return
        try:
            trimmed = self._spool_().ack(acked)
        except SpoolFull as exc:  # not even room to trim: the next ack (or reconnect) tries again
            log.error("could not trim the spool to ack %d: %s", acked, exc)
            return
        except SpoolError as exc:
            log.warning("server ack refused: %s (is this the agent the server knows?)", exc)
            return
        if acked > self.acked:
            self._last_progress = time.monotonic()
        self.acked = max(self.acked, acked)
        if self.cursor <= self.acked:
            self.cursor = self.acked + 1
        log.debug("ack %d: trimmed %d records", acked, trimmed)

    def _session_command(self, payload: bytes | bytearray) -> None:
        """Hand a check-in/check-out to the main loop, which alone checks and records (identity/remote.py)."""
        try:
            self.session_commands.put_nowait(bytes(payload))
        except queue.Full:
            log.warning("refused a session command: too many waiting")
            return
        if self.on_session_command is not None:
            self.on_session_command()

    def _command(self, body: dict[str, Any]) -> None:
        cmd = body.get("cmd")
        if cmd == "rebirth":
            self._rebirth = True
        elif cmd == "resend":
            first, last = body.get("first"), body.get("last")
            if not (isinstance(first, int) and isinstance(last, int) and 1 <= first <= last):
                raise ValueError("resend needs 1 <= first <= last")
            self._resend.append((first, last))
            log.info("server asked to re-send %d..%d", first, last)
        else:
            raise ValueError(f"unknown command {cmd!r}")
