"""CAS 3.0 attributes the test server releases besides the names: the e-mail address."""

from __future__ import annotations

from typing import Any


def email(user: Any, service: str) -> dict[str, str]:
    return {"email": str(user.email)}
