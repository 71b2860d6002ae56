"""A replicated PostgreSQL+TimescaleDB of the test's own (sim/pgha.py): primary 'a' with a
synchronous hot standby 'b', the database ``jishi`` migrated on it."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sim.pgha import PgCluster

HA_DB = "jishi"


@pytest.fixture
def pg_ha(services_dir: Path) -> Iterator[PgCluster]:
    from server.db.migrate import apply

    root = Path(tempfile.mkdtemp(prefix="ha-", dir=services_dir))
    root.chmod(0o755)
    cluster = PgCluster(root)
    try:
        apply(cluster.start_primary("a").create_database(HA_DB))
        cluster.add_standby("b", "a", synchronous=True)
        yield cluster
    finally:
        cluster.stop()
