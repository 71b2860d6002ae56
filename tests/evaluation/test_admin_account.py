"""`jishi account`: the first operator is created from the console, then logs in like anyone."""

from __future__ import annotations

import io

import psycopg
import pytest

from server.admin import main
from server.web.auth import verify_password
from sim.devstack import role_dsn


def test_account_is_created_hashed_and_not_twice(fresh_db: str, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery\n"))
    assert main(["--dsn", role_dsn(fresh_db, "jishi_admin"),
                 "account", "root-op", "--role", "operator", "--password-stdin"]) == 0
    with psycopg.connect(fresh_db) as conn:
        row = conn.execute("SELECT role, unit_id, password_hash FROM web_accounts WHERE login = 'root-op'").fetchone()
        audited = conn.execute("SELECT count(*) FROM audit_log WHERE actor LIKE 'cli:%'").fetchone()
    assert row is not None and row[0] == "operator" and row[1] is None
    assert "correct horse" not in row[2] and verify_password("correct horse battery", row[2])
    assert audited is not None and audited[0] >= 1

    monkeypatch.setattr("sys.stdin", io.StringIO("another password\n"))
    assert main(["--dsn", role_dsn(fresh_db, "jishi_admin"),
                 "account", "root-op", "--role", "operator", "--password-stdin"]) == 2
    assert "exists already" in capsys.readouterr().err


def test_short_password_is_refused(fresh_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["--dsn", role_dsn(fresh_db, "jishi_admin"),
                 "account", "op2", "--role", "evaluator", "--password-stdin"]) == 2
