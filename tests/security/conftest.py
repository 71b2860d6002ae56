"""The web fixtures (a seeded two-unit database, the app, clients per role) for the security tests."""

from tests.web.conftest import _seeded_pool, make_web, seeded_db, web

__all__ = ["_seeded_pool", "make_web", "seeded_db", "web"]
