"""A replicated PostgreSQL+TimescaleDB of the test's own (sim/pgha.py): primary 'a' with a
synchronous hot standby 'b', the database ``jishi`` migrated on it."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sim.pgha import PgCluster

HA_DB = "jishi"


def _started(services_dir: Path) -> PgCluster:
    from server.db.migrate import apply

    root = Path(tempfile.mkdtemp(prefix="ha-", dir=services_dir))
    root.chmod(0o755)
    cluster = PgCluster(root)
    try:
        apply(cluster.start_primary("a").create_database(HA_DB))
        cluster.add_standby("b", "a", synchronous=True)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture
def pg_ha(services_dir: Path) -> Iterator[PgCluster]:
    """A cluster of the test's own: for tests that break it (kill, promote)."""
    cluster = _started(services_dir)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def pg_ha_shared(services_dir: Path) -> Iterator[PgCluster]:
    """One cluster for the tests that leave it as they found it (primary 'a', 'b' its synchronous
    standby): starting one costs ~10 s."""
    cluster = _started(services_dir)
    try:
        yield cluster
    finally:
        cluster.stop()
