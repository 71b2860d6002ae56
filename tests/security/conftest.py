"""The web fixtures (a seeded two-unit database, the app, clients per role) for the security tests."""

from tests.web.conftest import make_web, web

__all__ = ["make_web", "web"]
