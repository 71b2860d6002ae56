"""Fixtures for the web tests: a seeded database of two units, the app, and clients per role.

Seed (in a database of each test's own, copied from a seeded template):
- units `ua` (organisation `org-a`) and `ub` (`org-b`); an external enterprise `ext-co`;
- instruments `ua-xrd`, `ua-nmr` (unit ua) and `ub-sem` (unit ub);
- accounts: `ops` (operator), `mgr-a` (manager of ua), `mgr-b` (manager of ub), `eva` (evaluator);
- person `p-zhang` 张三 of ext-co, registered by ua (its owner), mapped in ua as os identity
  `LAB\\zhang`, with a service record, a user session and running segments on ua-xrd.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from server.config import WebSettings
from server.web.app import create_app
from server.web.auth import hash_password
from sim.devstack import PostgresServer, role_dsn
from tests.conftest import ClonePool, filled_pool

PASSWORD = "correct-horse-battery"
ACCOUNTS = {"ops": ("operator", None), "mgr-a": ("unit_manager", "ua"), "mgr-b": ("unit_manager", "ub"),
            "eva": ("evaluator", None)}
REAL_NAME = "张三"
T0 = datetime(2025, 3, 3, 1, 0, tzinfo=UTC)  # 09:00 Asia/Shanghai


@functools.cache
def _hash() -> str:
    """The seeded accounts' password hash at a low scrypt cost (2^8 instead of 2^14): login checks
    it the same way, by the parameters stored with it, in a fraction of the time; the suite logs in
    several hundred times."""
    return hash_password(PASSWORD, n=2**8)


def seed(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT audit_as('test-seed', true)")
        conn.execute("INSERT INTO organisations (id, name, kind) VALUES ('org-a', '甲大学', 'university'),"
                     " ('org-b', '乙研究所', 'institute'), ('ext-co', '丙科技有限公司', 'enterprise')")
        conn.execute("INSERT INTO units (id, org_id, name, region) VALUES ('ua', 'org-a', '甲大学', '呼和浩特'),"
                     " ('ub', 'org-b', '乙研究所', '包头')")
        conn.execute(
            "INSERT INTO instruments (id, unit_id, name, location, original_value, category, accepted_on,"
            " registered_on, classification_code, model, rated_hours) VALUES"
            " ('ua-xrd', 'ua', 'X射线衍射仪', '化学楼 201', 1250000, '通用', '2020-01-01', '2020-02-01', '03040702',"
            "  'D8 Advance', NULL),"
            " ('ua-nmr', 'ua', '核磁共振波谱仪', '化学楼 105', 3000000, '通用', '2020-01-01', '2020-02-01', '03040801',"
            "  'AVANCE III', NULL),"
            " ('ub-sem', 'ub', '扫描电子显微镜', '材料楼 3', 2000000, '专用', '2020-01-01', '2020-02-01', '03040702',"
            "  'SU8010', NULL)")
        for login, (role, unit) in ACCOUNTS.items():
            conn.execute("INSERT INTO web_accounts (login, display_name, role, unit_id, password_hash)"
                         " VALUES (%s, %s, %s, %s, %s)", (login, login.upper(), role, unit, _hash()))
        conn.execute("INSERT INTO platform_users (id, name, org_id, owner_unit_id)"
                     " VALUES ('p-zhang', %s, 'ext-co', 'ua')", (REAL_NAME,))
        conn.execute("INSERT INTO identity_map (unit_id, method, identifier, user_id)"
                     " VALUES ('ua', 'os', 'LAB\\zhang', 'p-zhang')")
        conn.execute("INSERT INTO agents (id, instrument_id) VALUES ('ua-xrd-a1', 'ua-xrd'), ('ub-sem-a1', 'ub-sem')")
        conn.execute(
            "INSERT INTO service_records (unit_id, instrument_id, record_no, start_at, end_at, service_hours, amount,"
            " user_type, applicant_user_id, applicant_name, applicant_org_id, applicant_org_name)"
            " VALUES ('ua', 'ua-xrd', 'SR-1', %s, %s, 3.0, 450, 130, 'p-zhang', %s, 'ext-co', '丙科技有限公司')",
            (T0, T0 + timedelta(hours=3), REAL_NAME))
        conn.execute(
            "INSERT INTO user_sessions (agent_id, instrument_id, session_id, method, identifier, start_at, end_at,"
            " start_seq) VALUES ('ua-xrd-a1', 'ua-xrd', 's1', 'os', 'LAB\\zhang', %s, %s, 3)",
            (T0, T0 + timedelta(hours=3)))
        conn.execute(
            "INSERT INTO usage_segments (agent_id, instrument_id, start_at, end_at, state, watched, arrival,"
            " session_id, start_seq) VALUES"
            " ('ua-xrd-a1', 'ua-xrd', %(a)s, %(b)s, 'idle', true, 'live', NULL, 1),"
            " ('ua-xrd-a1', 'ua-xrd', %(b)s, %(c)s, 'running', true, 'live', 's1', 3),"
            " ('ua-xrd-a1', 'ua-xrd', %(c)s, %(d)s, 'idle', true, 'live', NULL, 9)",
            {"a": T0 - timedelta(hours=1), "b": T0, "c": T0 + timedelta(hours=2), "d": T0 + timedelta(hours=4)})
        conn.execute(
            "INSERT INTO coverage (agent_id, instrument_id, start_at, end_at, status, reason) VALUES"
            " ('ua-xrd-a1', 'ua-xrd', %(a)s, %(b)s, 'watching', ''),"
            " ('ua-xrd-a1', 'ua-xrd', %(b)s, %(c)s, 'offline', 'agent stopped')",
            {"a": T0 - timedelta(hours=1), "b": T0 + timedelta(hours=4), "c": T0 + timedelta(hours=5)})


def settings_for(dsn: str, **kw: Any) -> WebSettings:
    """The web app's settings: it connects as its own role (jishi_web), never as the owner."""
    base: dict[str, Any] = {"dsn": role_dsn(dsn, "jishi_web"), "cookie_secure": False, "pool_max": 4,
                            "sse_keepalive_s": 0.5}
    base.update(kw)
    return WebSettings(**base)


@dataclass
class Web:
    dsn: str
    app: FastAPI
    clients: list[TestClient]

    def client(self) -> TestClient:
        """A client with its own cookies; the first one runs the app's lifespan for all of them."""
        c = TestClient(self.app, raise_server_exceptions=False)
        if not self.clients:
            c.__enter__()
            self.clients.append(c)
        return c

    def as_(self, login: str, password: str = PASSWORD) -> TestClient:
        c = self.client()
        r = c.post("/api/v1/auth/login", json={"login": login, "password": password})
        assert r.status_code == 200, r.text
        c.headers["X-CSRF-Token"] = r.json()["csrf_token"]
        return c

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.execute(query.encode(), params)
            return cur.fetchall() if cur.description else []


SEEDED_TEMPLATE = "jishi_web_template"


@pytest.fixture(scope="session")
def _seeded_pool(pg_server: PostgresServer, _migrated_template: str) -> Iterator[ClonePool]:
    with filled_pool(pg_server, _migrated_template, SEEDED_TEMPLATE, seed) as pool:
        yield pool


@pytest.fixture
def seeded_db(_seeded_pool: ClonePool) -> Iterator[str]:
    """DSN of a database of this test's own, migrated and seeded (`seed`)."""
    with _seeded_pool.database() as dsn:
        yield dsn


@pytest.fixture
def make_web(seeded_db: str) -> Iterator[Callable[..., Web]]:
    made: list[Web] = []

    def make(**kw: Any) -> Web:
        w = Web(seeded_db, create_app(settings_for(seeded_db, **kw)), [])
        made.append(w)
        return w

    yield make
    for w in made:
        for c in w.clients:
            c.__exit__(None, None, None)


@pytest.fixture
def web(make_web: Callable[..., Web]) -> Web:
    return make_web()


# The real university-login providers (node oidc-provider, Django CAS), started once per session.
from tests.web.ssohelp import cas_idp, oidc_idp  # noqa: E402, F401
