"""HA mode (`database.ha`): ingest stores only where a COMMIT waits for a synchronous standby."""

from __future__ import annotations

import psycopg
import pytest

from server.ingest.ha import NotSynchronous, require_synchronous
from sim.devstack import PostgresServer
from sim.pgha import PgCluster
from tests.cluster.conftest import HA_DB


def test_a_lone_server_is_refused(pg_server: PostgresServer) -> None:
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn, \
            pytest.raises(NotSynchronous, match="no synchronous standby"):
        require_synchronous(conn)


def test_primary_with_synchronous_standby_accepted_standby_and_asynchronous_refused(pg_ha_shared: PgCluster) -> None:
    pg_ha = pg_ha_shared
    with psycopg.connect(pg_ha.nodes["a"].dsn(HA_DB), autocommit=True) as conn:
        require_synchronous(conn)
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
    with psycopg.connect(pg_ha.nodes["b"].dsn(HA_DB), autocommit=True) as conn, \
            pytest.raises(NotSynchronous, match="standby"):
        require_synchronous(conn)
    pg_ha.set_synchronous("a", [])
    try:
        with psycopg.connect(pg_ha.nodes["a"].dsn(HA_DB), autocommit=True) as conn, \
                pytest.raises(NotSynchronous, match="no synchronous standby"):
            require_synchronous(conn)
    finally:
        pg_ha.set_synchronous("a", ["b"])  # the shared cluster as it was
    # the multi-host string reaches the primary whichever node it names first
    with psycopg.connect(pg_ha.dsn(HA_DB, ["b", "a"]), autocommit=True) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
