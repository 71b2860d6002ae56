"""Fixtures for the evaluation tests: the hand-built year (scenario.py) in a database of each test's own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sim.devstack import PostgresServer
from tests.conftest import ClonePool
from tests.evaluation import scenario

SCENARIO_TEMPLATE = "jishi_scenario_template"


@pytest.fixture(scope="session")
def _scenario_pool(pg_server: PostgresServer, _migrated_template: str) -> Iterator[ClonePool]:
    """Copies of a migrated database that already holds the scenario: ~35 tests start from it, and
    building it (every row through the derived tables' triggers) took longer than copying it."""
    pg_server.drop_database(SCENARIO_TEMPLATE)
    scenario.build(pg_server.create_database(SCENARIO_TEMPLATE, template=_migrated_template))
    pg_server.freeze_template(SCENARIO_TEMPLATE)
    pool = ClonePool(pg_server, SCENARIO_TEMPLATE)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def scenario_db(pg_server: PostgresServer, _scenario_pool: ClonePool) -> Iterator[str]:
    """DSN of a database of this test's own holding the scenario exactly as `scenario.build` writes it
    (tests/evaluation/test_rollup.py builds it row by row itself)."""
    name = _scenario_pool.take()
    try:
        yield pg_server.dsn(name)
    finally:
        _scenario_pool.give_back(name)
