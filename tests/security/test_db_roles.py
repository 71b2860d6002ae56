"""Issue 13 item 6: the application's database roles cannot rewrite the audit log or the records,
the actor is the principal the application declares (not a settable GUC), and the hash chain
names a row a superuser deleted or altered."""

from __future__ import annotations

import re
import threading
from importlib import resources
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from server.db.audit import GENESIS, audit_head, verify
from sim.devstack import APP_ROLES, role_dsn

_STATEMENTS = {
    "update": "UPDATE {t} SET {c} = {c}",
    "delete": "DELETE FROM {t}",
    "truncate": "TRUNCATE {t}",
    "alter": "ALTER TABLE {t} DISABLE TRIGGER ALL",
    "drop": "DROP TABLE {t}",
}


def _grants_mentioned() -> set[str]:
    text = (resources.files("server.db") / "grants.sql").read_text(encoding="utf-8")
    return set(re.findall(r"^\s*\('([a-z_0-9]+)',", text, flags=re.M))


def _write_some(dsn: str, n: int, who: str = "test") -> None:
    with psycopg.connect(dsn) as conn:
        for i in range(n):
            with conn.transaction():
                conn.execute("SELECT audit_as(%s)", (who,))
                conn.execute("INSERT INTO organisations (id, name, kind) VALUES (%s, %s, 'enterprise')"
                             " ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name", (f"org-{who}-{i % 7}", f"n{i}"))


def test_every_relation_is_classified_in_grants(pg_dsn: str) -> None:
    """A table (view, sequence) that grants.sql does not mention is a table nobody classified."""
    with psycopg.connect(pg_dsn) as conn:
        rels = {r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')"
            " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')"
            "                 AND c.relkind = 'S')")}
    missing = rels - _grants_mentioned()
    assert not missing, f"server/db/grants.sql does not classify: {sorted(missing)}"


def test_no_app_role_owns_anything(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        owned = conn.execute(
            "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c"
            " WHERE pg_get_userbyid(c.relowner) = ANY(%s)", (list(APP_ROLES),)).fetchall()
    assert owned == []


@pytest.mark.parametrize("role", APP_ROLES)
@pytest.mark.parametrize("table,column", [("audit_log", "actor"), ("records", "seq"),
                                          ("audit_chain_head", "id"), ("audit_principals", "actor")])
@pytest.mark.parametrize("verb", sorted(_STATEMENTS))
def test_app_roles_cannot_rewrite_audit_or_records(pg_dsn: str, role: str, table: str, column: str,
                                                   verb: str) -> None:
    sql = _STATEMENTS[verb].format(t=table, c=column)
    with psycopg.connect(role_dsn(pg_dsn, role), autocommit=True) as conn, \
            pytest.raises(errors.InsufficientPrivilege):
        conn.execute(sql.encode())


def test_ingest_cannot_touch_the_registry_and_web_cannot_touch_records(pg_dsn: str) -> None:
    with psycopg.connect(role_dsn(pg_dsn, "jishi_ingest"), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM agent_keys").fetchone() is not None  # reads keys to verify
        for sql in ("INSERT INTO organisations (id, name, kind) VALUES ('x', 'x', 'enterprise')",
                    "UPDATE instruments SET rated_hours = 1", "DELETE FROM agent_keys",
                    "UPDATE web_accounts SET role = 'operator'", "SELECT audit_as('account:ops')"):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(sql.encode())
    with psycopg.connect(role_dsn(pg_dsn, "jishi_web"), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM records").fetchone() is not None  # evidence reads them
        for sql in ("INSERT INTO records SELECT * FROM records LIMIT 0", "UPDATE usage_segments SET watched = true",
                    "DELETE FROM envelopes", "UPDATE agent_progress SET watermark = 0",
                    "CREATE TABLE public.mine (x int)"):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(sql.encode())


def test_actor_is_the_declared_principal_not_the_guc(fresh_db: str) -> None:
    web = role_dsn(fresh_db, "jishi_web")
    with psycopg.connect(web) as conn:
        with conn.transaction():  # the old way: a setting any connection could make up
            conn.execute("SELECT set_config('jishi.actor', 'account:ops', true)")
            conn.execute("INSERT INTO organisations (id, name, kind) VALUES ('o1', 'A', 'enterprise')")
        with conn.transaction():
            conn.execute("SELECT audit_as('account:mgr-a')")
            conn.execute("UPDATE organisations SET name = 'B' WHERE id = 'o1'")
        with conn.transaction():  # a declaration lasts one transaction
            conn.execute("UPDATE organisations SET name = 'C' WHERE id = 'o1'")
    with psycopg.connect(fresh_db) as conn:
        got = conn.execute("SELECT action, actor, db_role FROM audit_log WHERE table_name = 'organisations'"
                           " ORDER BY id").fetchall()
    assert got == [("INSERT", "db:jishi_web", "jishi_web"), ("UPDATE", "account:mgr-a", "jishi_web"),
                   ("UPDATE", "db:jishi_web", "jishi_web")]


def test_chain_is_intact_under_concurrent_writers(fresh_db: str) -> None:
    web = role_dsn(fresh_db, "jishi_web")
    threads = [threading.Thread(target=_write_some, args=(web, 15, f"w{i}")) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with psycopg.connect(fresh_db) as conn:
        assert verify(conn) == []
        head = audit_head(conn)
        assert head is not None
        ids = [r[0] for r in conn.execute("SELECT id FROM audit_log ORDER BY id")]
        assert ids == list(range(ids[0], ids[0] + len(ids)))  # gapless: a gap is a deletion
        assert head[0] == ids[-1] and len(head[1]) == 32 and head[1] != GENESIS


def _superuser(dsn: str, sql: str) -> None:
    """What an attacker with the superuser's credentials does: switch the guard off, act, switch it on."""
    with psycopg.connect(dsn) as conn:
        conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change")
        conn.execute(sql.encode())
        conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_change")


def test_superuser_deleting_a_row_breaks_the_chain_there(fresh_db: str) -> None:
    _write_some(role_dsn(fresh_db, "jishi_web"), 6)
    with psycopg.connect(fresh_db) as conn:
        assert verify(conn) == []
        ids = [r[0] for r in conn.execute("SELECT id FROM audit_log ORDER BY id")]
    victim = ids[3]
    _superuser(fresh_db, f"DELETE FROM audit_log WHERE id = {victim}")
    with psycopg.connect(fresh_db) as conn:
        breaks = verify(conn)
    assert [(b.kind, b.after_id, b.id) for b in breaks] == [("deleted", ids[2], ids[4])]
    assert f"between id {ids[2]} and id {ids[4]}" in str(breaks[0])


def test_superuser_altering_a_row_or_cutting_the_tail_is_found(fresh_db: str) -> None:
    _write_some(role_dsn(fresh_db, "jishi_web"), 6)
    with psycopg.connect(fresh_db) as conn:
        published = audit_head(conn)
        ids = [r[0] for r in conn.execute("SELECT id FROM audit_log ORDER BY id")]
    assert published is not None
    _superuser(fresh_db, f"UPDATE audit_log SET actor = 'someone else' WHERE id = {ids[1]}")
    with psycopg.connect(fresh_db) as conn:
        assert [(b.kind, b.id) for b in verify(conn)] == [("altered", ids[1])]
    # the tail cut off: the chain that is left holds, but not the head nor the published head
    _superuser(fresh_db, f"UPDATE audit_log SET actor = 'test' WHERE id = {ids[1]};"
                         f" DELETE FROM audit_log WHERE id >= {ids[4]}")
    with psycopg.connect(fresh_db) as conn:
        kinds = [b.kind for b in verify(conn, published=published)]
    assert "head" in kinds and "published" in kinds


def test_migrate_runs_as_the_owner_and_reapplies_the_grants(fresh_db: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """`jishi-server migrate` uses database.owner_dsn (the processes' dsn is an application role),
    and puts back a right someone took or gave by hand."""
    from server import cli

    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("GRANT UPDATE ON records TO jishi_web")
    cfg = tmp_path / "server.toml"
    cfg.write_text(f'[database]\ndsn = "{role_dsn(fresh_db, "jishi_ingest")}"\nowner_dsn = "{fresh_db}"\n')
    assert cli.main(["--config", str(cfg), "migrate"]) == 0
    assert "none pending" in capsys.readouterr().out
    with psycopg.connect(role_dsn(fresh_db, "jishi_web"), autocommit=True) as conn, \
            pytest.raises(errors.InsufficientPrivilege):
        conn.execute("UPDATE records SET seq = seq")


def test_the_verifier_command_names_the_break(fresh_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    from server.db import audit

    _write_some(role_dsn(fresh_db, "jishi_web"), 3)
    admin = role_dsn(fresh_db, "jishi_admin")  # an auditor needs only read access
    assert audit.main(["--dsn", admin]) == 0
    out = capsys.readouterr().out
    assert out.startswith("intact; head ")
    head = out.split("head ")[1].strip()
    with psycopg.connect(fresh_db) as conn:
        first = conn.execute("SELECT min(id) FROM audit_log").fetchone()
    assert first is not None
    _superuser(fresh_db, f"DELETE FROM audit_log WHERE id = {first[0] + 1}")
    assert audit.main(["--dsn", admin, "--published", head]) == 1
    assert f"BROKEN: audit row(s) between id {first[0]} and id {first[0] + 2} were deleted" in capsys.readouterr().out
