"""Private PostgreSQL+TimescaleDB and Mosquitto for the whole test session (sim/devstack.py).

Databases:
- ``pg_dsn``: one migrated database, ``jishi_test``, shared by the session's tests;
- ``fresh_db``: a migrated database of a test's own, copied from a migrated template (copying is
  much faster than migrating); copies are made ahead and dropped after the test by a background
  thread (``ClonePool``), so neither is on a test's path.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from server import clock
from server.store.times import TZ
from sim.devstack import MosquittoServer, PostgresServer

TEST_DB = "jishi_test"
TEMPLATE_DB = "jishi_template"
_fresh_names = itertools.count(1)

# Property tests share the machine with databases and brokers: judge them by their examples,
# never by how fast the machine happened to be.
settings.register_profile("jishi", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("jishi")

# The days every date-sensitive test runs on: a rule that asks "what is today" must hold on each.
SWEEP_DAYS = {
    "first-of-month": date(2026, 12, 1),
    "last-of-month": date(2026, 11, 30),
    "new-year": date(2027, 1, 1),  # also a year chinesecalendar 1.11 does not know
    "leap-day": date(2028, 2, 29),
    "holiday": date(2025, 10, 1),  # National Day, an official holiday
    "make-up-workday": date(2025, 9, 28),  # a Sunday worked for it (调休)
    "unknown-year": date(2031, 7, 15),
}


@pytest.fixture(params=list(SWEEP_DAYS.values()), ids=list(SWEEP_DAYS))
def today(request: pytest.FixtureRequest) -> Iterator[date]:
    """Run the test "on" each sweep day: every rule reads server.clock, frozen at 10:30 that day."""
    day: date = request.param
    with clock.frozen_at(datetime.combine(day, time(10, 30), TZ)):
        yield day


# Where the session's services keep their data: a RAM file system when one with room is there.
# The suite's PostgreSQL copies and drops ~400 databases, and on a disk mounted with online
# discard (the CI VM's) every deleted file is trimmed: dropping them and removing the data
# directory at the end took up to ~50 s. The tests' PostgreSQL runs with fsync off anyway.
_RAM_DIR = Path("/dev/shm")
_RAM_NEEDED = 6 * 2**30


def _services_parent() -> str | None:
    """/dev/shm if it is a writable directory with room for the services' data, else the default."""
    try:
        if _RAM_DIR.is_dir() and os.access(_RAM_DIR, os.W_OK) and shutil.disk_usage(_RAM_DIR).free > _RAM_NEEDED:
            return str(_RAM_DIR)
    except OSError:
        pass
    return None


@pytest.fixture(scope="session")
def services_dir() -> Iterator[Path]:
    """A short, world-searchable directory for the services' data (in RAM when possible).

    Not ``tmp_path_factory``: /tmp/pytest-of-root is 0700, and under root the services run as an
    unprivileged user who must reach their directories. A short path also keeps PostgreSQL's
    Unix socket path under the kernel's 107-byte limit.
    """
    d = Path(tempfile.mkdtemp(prefix="jishi-", dir=_services_parent()))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server(services_dir: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(services_dir / "pg", fast=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _migrate() -> Callable[[str], list[str]]:
    if importlib.util.find_spec("server.db.migrate") is None:
        pytest.skip("server.db.migrate is not written yet")
    from server.db.migrate import apply

    return apply


@pytest.fixture(scope="session")
def pg_dsn(pg_server: PostgresServer) -> str:
    """DSN of ``jishi_test``: created afresh and migrated once per session."""
    apply = _migrate()
    pg_server.drop_database(TEST_DB)
    dsn = pg_server.create_database(TEST_DB)
    apply(dsn)
    return dsn


@pytest.fixture(scope="session")
def _migrated_template(pg_server: PostgresServer) -> str:
    """A migrated database that nobody may connect to, so it can always be copied.

    CREATE DATABASE ... TEMPLATE fails while anyone is connected to the template, and
    TimescaleDB's background scheduler connects to every database that allows connections.
    """
    apply = _migrate()
    pg_server.drop_database(TEMPLATE_DB)
    apply(pg_server.create_database(TEMPLATE_DB))
    pg_server.freeze_template(TEMPLATE_DB)
    return TEMPLATE_DB


class ClonePool:
    """Copies of the migrated template made ahead of need, and dropped after use, by one thread.

    About 400 tests take a database of their own; a copy takes 0.3-0.7 s and a drop a little more.
    Made while the previous test runs, neither is on a test's path. A test always gets a database
    nobody else has used; if the thread has none ready (or the server is down: the restart tests
    stop it), the test makes its copy itself, as before.
    """

    def __init__(self, server: PostgresServer, template: str, ahead: int = 2) -> None:
        self.server, self.template, self.ahead = server, template, ahead
        self._ready: list[str] = []
        self._drop: list[str] = []
        self._busy = False  # a copy is being made
        self._stop = False
        self._cv = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="clone-pool", daemon=True)
        self._thread.start()

    def take(self) -> str:
        """The name of a fresh migrated database (its owner is the caller from now on)."""
        with self._cv:
            self._cv.wait_for(lambda: self._ready or not self._busy, timeout=120)
            if self._ready:
                name = self._ready.pop(0)
                self._cv.notify_all()
                return name
        name = f"jishi_t{next(_fresh_names)}"
        self.server.create_database(name, template=self.template)
        return name

    def give_back(self, name: str) -> None:
        """Drop `name` soon, off the test's path (WITH FORCE: a straggler's sessions end with it)."""
        with self._cv:
            self._drop.append(name)
            self._cv.notify_all()

    @contextmanager
    def database(self) -> Iterator[str]:
        """The DSN of a fresh copy of the caller's own for the block, dropped after it."""
        name = self.take()
        try:
            yield self.server.dsn(name)
        finally:
            self.give_back(name)

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(timeout=120)

    def _run(self) -> None:
        failures = 0
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._stop or self._drop or len(self._ready) < self.ahead)
                if self._stop:
                    return
                drop = self._drop.pop(0) if self._drop else None
                name = None if drop else f"jishi_t{next(_fresh_names)}"
                self._busy = name is not None
            try:
                if drop:
                    self.server.drop_database(drop)
                else:
                    self.server.create_database(str(name), template=self.template)
                failures = 0
            except Exception:  # the server is being restarted by a test: try again shortly
                failures += 1
                if drop:
                    with self._cv:
                        self._drop.append(drop)
                name = None
                with self._cv:
                    self._cv.wait_for(lambda: self._stop, timeout=min(0.2 * failures, 2.0))
            with self._cv:
                if name is not None:
                    self._ready.append(name)
                self._busy = False
                self._cv.notify_all()


@pytest.fixture(scope="session")
def _clone_pool(pg_server: PostgresServer, _migrated_template: str) -> Iterator[ClonePool]:
    pool = ClonePool(pg_server, _migrated_template)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def fresh_db(pg_server: PostgresServer, _clone_pool: ClonePool) -> Iterator[str]:
    """DSN of a migrated database of this test's own."""
    with _clone_pool.database() as dsn:
        yield dsn


@contextmanager
def filled_pool(pg_server: PostgresServer, migrated: str, template: str,
                fill: Callable[[str], object]) -> Iterator[ClonePool]:
    """Copies of a template made once from the migrated one and filled by `fill(dsn)`, for the
    tests that all start from the same data (filling each copy took longer than copying it)."""
    pg_server.drop_database(template)
    fill(pg_server.create_database(template, template=migrated))
    pg_server.freeze_template(template)
    pool = ClonePool(pg_server, template)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="session")
def mqtt_broker(services_dir: Path) -> Iterator[MosquittoServer]:
    broker = MosquittoServer(services_dir / "mqtt")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def no_retained(mqtt_broker: MosquittoServer) -> MosquittoServer:
    """The shared broker with no retained messages left by earlier tests.

    Agents' births and deaths (and ingest's acks) are retained by design; a test that counts every
    message an ingest receives must not see those of other tests' agents.
    """
    clear_retained(mqtt_broker.host, mqtt_broker.port)
    return mqtt_broker


def clear_retained(host: str, port: int, settle_s: float = 0.5) -> int:
    """Delete every retained message on the broker (publish an empty retained payload); return how many."""
    import threading
    import time

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    topics: set[str] = set()
    lock = threading.Lock()

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.retain and msg.payload:
            with lock:
                topics.add(msg.topic)

    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"clear-retained-{port}")
    client.on_message = on_message
    client.connect(host, port)
    client.loop_start()
    try:
        client.subscribe("#", qos=0)
        time.sleep(settle_s)
        with lock:
            found = sorted(topics)
        infos = [client.publish(topic, b"", qos=1, retain=True) for topic in found]
        for info in infos:
            info.wait_for_publish(timeout=5)
    finally:
        client.loop_stop()
        client.disconnect()
    return len(found)
