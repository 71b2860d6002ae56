"""The audit hash chain under bulk and concurrent writes (migration 036): one statement writing many
audited rows is linear, and the chain still holds across savepoints and interleaved transactions."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg import errors

from server.db.audit import audit_head, verify
from sim.devstack import role_dsn

_INSERT_MANY = ("INSERT INTO organisations (id, name, kind)"
                " SELECT %s || '-' || g, 'n' || g, 'enterprise' FROM generate_series(1, %s) g")


def _head_row(conn: psycopg.Connection[Any]) -> tuple[int, bytes]:
    row = conn.execute("SELECT id, row_hash FROM audit_chain_head").fetchone()
    assert row is not None
    return int(row[0]), bytes(row[1])


def _chain_ok(dsn: str) -> list[tuple[int, str]]:
    """Assert the chain verifies, ids are gapless and the head row names the newest row; return (id, row_key)."""
    with psycopg.connect(dsn) as conn:
        assert verify(conn) == []
        rows = [(int(r[0]), str(r[1])) for r in conn.execute("SELECT id, row_key FROM audit_log ORDER BY id")]
        ids = [r[0] for r in rows]
        assert ids == list(range(ids[0], ids[0] + len(ids)))
        assert audit_head(conn) == _head_row(conn)
    return rows


def test_one_statement_of_20k_audited_rows_is_fast_and_chained(fresh_db: str) -> None:
    web = role_dsn(fresh_db, "jishi_web")
    with psycopg.connect(web) as conn:
        before = _head_row(conn)
        conn.execute("SELECT audit_as('account:importer')")
        t = time.perf_counter()
        conn.execute(_INSERT_MANY, ("bulk", 20_000))
        took = time.perf_counter() - t
        # the head row moves at commit, once: until then it is where the transaction found it
        assert _head_row(conn) == before
    rows = _chain_ok(fresh_db)
    assert sum(1 for _, key in rows if key.startswith("bulk-")) == 20_000
    # quadratic (021) took ~60 s for 50k rows on the 2-core box; linear is a few seconds
    assert took < 30, f"20k audited rows in one statement took {took:.1f} s"


def test_savepoint_rollback_discards_rows_and_the_cached_head(fresh_db: str) -> None:
    web = role_dsn(fresh_db, "jishi_web")
    with psycopg.connect(web) as conn:
        conn.execute("SELECT audit_as('account:a')")
        conn.execute(_INSERT_MANY, ("keep1", 3))
        with pytest.raises(RuntimeError), conn.transaction():
            conn.execute(_INSERT_MANY, ("gone", 5))
            raise RuntimeError("roll the savepoint back")
        conn.execute(_INSERT_MANY, ("keep2", 2))
    keys = [key for _, key in _chain_ok(fresh_db)]
    assert [k for k in keys if k.split("-")[0] in ("keep1", "gone", "keep2")] == [
        "keep1-1", "keep1-2", "keep1-3", "keep2-1", "keep2-2"]


def test_lock_taken_in_a_rolled_back_savepoint_is_released_with_its_rows(fresh_db: str) -> None:
    web = role_dsn(fresh_db, "jishi_web")
    with psycopg.connect(web) as conn, psycopg.connect(web, autocommit=True) as other:
        conn.execute("SELECT audit_as('account:a')")
        with pytest.raises(RuntimeError), conn.transaction():
            conn.execute(_INSERT_MANY, ("gone", 2))  # the head lock is first taken in here
            raise RuntimeError("roll the savepoint back")
        other.execute("SET lock_timeout = '5s'")
        other.execute("SELECT audit_as('account:b', true)")
        other.execute(_INSERT_MANY, ("other", 1))  # not blocked: the lock went with the savepoint
        conn.execute(_INSERT_MANY, ("mine", 1))  # takes the lock afresh, chains after the other's row
    keys = [key for _, key in _chain_ok(fresh_db)]
    assert "gone-1" not in keys
    assert keys.index("other-1") < keys.index("mine-1")


def _wait_for_lock_wait(dsn: str, pid: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as watch:
        while time.monotonic() < deadline:
            row = watch.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
            if row is not None and row[0] == "Lock":
                return
            time.sleep(0.02)
    raise AssertionError(f"backend {pid} never waited for the chain head lock")


def test_concurrent_transactions_wait_for_the_head_and_stay_in_chain_order(fresh_db: str) -> None:
    web = role_dsn(fresh_db, "jishi_web")
    admin = role_dsn(fresh_db, "jishi_admin")
    errors_seen: list[BaseException] = []
    with psycopg.connect(web) as first, psycopg.connect(admin) as second:
        first.execute("SELECT audit_as('account:first')")
        first.execute(_INSERT_MANY, ("first", 3))
        # a second writer cannot chain while the first transaction holds the head
        second.execute("SET lock_timeout = '100ms'")
        second.execute("SELECT audit_as('account:second')")
        with pytest.raises(errors.LockNotAvailable):
            second.execute(_INSERT_MANY, ("early", 1))
        second.rollback()
        second.execute("SET lock_timeout = '30s'")
        second.execute("SELECT audit_as('account:second')")
        pid = second.info.backend_pid

        def write_second() -> None:
            try:
                second.execute(_INSERT_MANY, ("second", 3))
                second.commit()
            except BaseException as exc:  # reported by the main thread
                errors_seen.append(exc)

        t = threading.Thread(target=write_second)
        t.start()
        _wait_for_lock_wait(fresh_db, pid)
        first.execute(_INSERT_MANY, ("first-more", 2))  # interleaved: still the first's turn
        first.commit()
        t.join(30)
        assert not t.is_alive() and errors_seen == []
    keys = [key for _, key in _chain_ok(fresh_db)]
    ours = [k for k in keys if k.split("-")[0] in ("first", "second", "early")]
    assert ours == ["first-1", "first-2", "first-3", "first-more-1", "first-more-2",
                    "second-1", "second-2", "second-3"]


def test_app_roles_cannot_move_the_head(fresh_db: str) -> None:
    for role in ("jishi_web", "jishi_ingest", "jishi_admin"):
        with psycopg.connect(role_dsn(fresh_db, role)) as conn:
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute("UPDATE audit_chain_head SET id = id + 1")
            conn.rollback()
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute("SELECT 1 FROM audit_chain_head FOR UPDATE")


def test_a_forged_hint_or_a_rolled_back_bulk_write_cannot_fork_the_chain(fresh_db: str) -> None:
    web = role_dsn(fresh_db, "jishi_web")
    with psycopg.connect(web) as conn:
        conn.execute("SELECT audit_as('account:a')")
        conn.execute(_INSERT_MANY, ("bulk", 500))
        conn.rollback()  # leaves dead index entries past the head
        conn.execute("SELECT audit_as('account:a')")
        conn.execute(_INSERT_MANY, ("one", 3))
        conn.commit()
        first = conn.execute("SELECT min(id) FROM audit_log WHERE row_key LIKE 'one-%'").fetchone()
        assert first is not None
        # the transaction-local hint names another transaction's row, then one of our own older rows
        conn.execute("SELECT audit_as('account:a')")
        conn.execute("SELECT set_config('jishi.audit_chain_last', %s, true)", (str(first[0]),))
        conn.execute(_INSERT_MANY, ("two", 2))
        conn.execute("SELECT set_config('jishi.audit_chain_last', %s, true)", (str(first[0] + 3),))
        conn.execute(_INSERT_MANY, ("three", 2))
        conn.execute("SELECT set_config('jishi.audit_chain_last', 'garbage', true)")
        conn.execute(_INSERT_MANY, ("four", 1))
        conn.commit()
    keys = [key for _, key in _chain_ok(fresh_db)]
    assert not any(k.startswith("bulk-") for k in keys)
    assert keys[-6:] == ["one-3", "two-1", "two-2", "three-1", "three-2", "four-1"]
