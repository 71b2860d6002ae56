"""The web on a replicated database (`web.read_dsn`): the reads of GET requests come from the
streaming replica, writes and logins go to the primary, and the operator page shows the replica's
replay lag, with a warning above `web.replica_lag_warn_s`.

The replica is shown to serve the reads by freezing its replay (pg_wal_replay_pause): a change
committed on the primary then stays invisible to the pages until replay resumes. A write through
the web commits with remote_apply, so the page it leads to (read from the replica) already shows it.
"""

from __future__ import annotations

from server.web.app import create_app
from sim.devstack import role_dsn
from sim.pgha import PgCluster
from tests.cluster.conftest import HA_DB
from tests.faults.common import wait_until
from tests.web.conftest import Web, seed, settings_for

OLD, NEW = "X射线衍射仪", "X射线衍射仪（新）"


def _name(c: object) -> str:
    r = c.get("/api/v1/instruments/ua-xrd")  # type: ignore[attr-defined]
    assert r.status_code == 200, r.text
    return str(r.json()["name"])


def test_pages_read_the_replica_writes_go_to_the_primary_lag_on_the_operator_page(pg_ha_shared: PgCluster) -> None:
    pg_ha = pg_ha_shared
    primary = pg_ha.nodes["a"].dsn(HA_DB)
    seed(primary)
    settings = settings_for(primary, read_dsn=role_dsn(pg_ha.nodes["b"].dsn(HA_DB), "jishi_web"),
                            replica_lag_warn_s=0.5)
    web = Web(primary, create_app(settings), [])
    try:
        ops = web.as_("ops")  # the session is written on the primary and found there at once
        assert _name(ops) == OLD
        # the evaluators' pseudonym key (made on first use) was made on the primary before any replica read
        assert web.sql("SELECT count(*) FROM evaluation_secrets") == [(1,)]
        # an evaluation, read-only work, is computed on the replica
        r = web.as_("eva").get("/api/v1/evaluation/2025-03-01..2025-04-01/units/ua")
        assert r.status_code == 200, r.text
        page = ops.get("/quarantine")
        assert page.status_code == 200
        assert 'id="replica-lag"' in page.text and 'data-standby="b"' in page.text
        assert 'id="lag-warning"' not in page.text

        # replay frozen on the replica: a change on the primary is not seen by the pages
        pg_ha.query("b", "SELECT pg_wal_replay_pause()")
        web.sql("UPDATE instruments SET name = %s WHERE id = 'ua-xrd'", (NEW,))
        assert web.sql("SELECT name FROM instruments WHERE id = 'ua-xrd'") == [(NEW,)]
        assert _name(ops) == OLD, "the page was not read from the replica"
        # ... and the operator page says how far behind it is, with the warning past the threshold
        wait_until(lambda: 'id="lag-warning"' in ops.get("/quarantine").text, 30, "the lag warning")
        assert "只读副本落后主库" in ops.get("/quarantine").text  # Chinese first
        assert "behind the primary" in ops.get("/quarantine?lang=en").text

        pg_ha.query("b", "SELECT pg_wal_replay_resume()")
        wait_until(lambda: _name(ops) == NEW, 30, "the replica replaying the change")
        wait_until(lambda: 'id="lag-warning"' not in ops.get("/quarantine").text, 30, "the warning gone")

        # a write through the web goes to the primary, and the replica shows it at once (remote_apply)
        r = ops.post("/api/v1/tokens", json={"name": "replica-check"})
        assert r.status_code == 201, r.text
        assert web.sql("SELECT count(*) FROM api_tokens WHERE name = 'replica-check'") == [(1,)]
        assert [t["name"] for t in ops.get("/api/v1/tokens").json()] == ["replica-check"]
        assert pg_ha.query("b", "SELECT count(*) FROM api_tokens WHERE name = 'replica-check'", dbname=HA_DB) == [(1,)]
    finally:
        pg_ha.query("b", "SELECT pg_wal_replay_resume()")
        for c in web.clients:
            c.__exit__(None, None, None)
    # without a read DSN everything is on the primary, and the operator page says so
    alone = Web(primary, create_app(settings_for(primary)), [])
    try:
        page = alone.as_("ops").get("/quarantine?lang=en").text
        assert "No read replica configured" in page and 'data-standby="b"' in page
    finally:
        for c in alone.clients:
            c.__exit__(None, None, None)

