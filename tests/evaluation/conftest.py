"""Fixtures for the evaluation tests: the hand-built year (scenario.py) in a database of each test's own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sim.devstack import PostgresServer
from tests.conftest import ClonePool, filled_pool
from tests.evaluation import scenario

SCENARIO_TEMPLATE = "jishi_scenario_template"


@pytest.fixture(scope="session")
def _scenario_pool(pg_server: PostgresServer, _migrated_template: str) -> Iterator[ClonePool]:
    """~35 tests start from the scenario; building it (every row through the derived tables'
    triggers) took longer than copying it."""
    with filled_pool(pg_server, _migrated_template, SCENARIO_TEMPLATE, scenario.build) as pool:
        yield pool


@pytest.fixture
def scenario_db(_scenario_pool: ClonePool) -> Iterator[str]:
    """DSN of a database of this test's own holding the scenario exactly as `scenario.build` writes it
    (tests/evaluation/test_rollup.py builds it row by row itself)."""
    with _scenario_pool.database() as dsn:
        yield dsn
