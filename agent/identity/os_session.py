"""The interactive OS session user, via psutil.users() (Windows console/RDP sessions, utmp on Unix).

The most recently started session of a user not in `ignore` wins. Remote sessions (ssh from
another host) are not the person at the instrument and are left out unless asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psutil


def _default_users() -> Sequence[Any]:
    return psutil.users()


class OsUsers:
    def __init__(self, ignore: Sequence[str] = (), include_remote: bool = False,
                 users: Callable[[], Sequence[Any]] = _default_users) -> None:
        self.ignore = {u.lower() for u in ignore}
        self.include_remote = include_remote
        self._users = users

    @staticmethod
    def is_remote(host: str | None) -> bool:
        return bool(host) and not str(host).startswith(":") and host not in ("localhost", "127.0.0.1", "::1")

    def current(self) -> str | None:
        best: tuple[float, str] | None = None
        for u in self._users():
            name = (u.name or "").strip()
            if not name or name.lower() in self.ignore:
                continue
            if not self.include_remote and self.is_remote(getattr(u, "host", None)):
                continue
            started = float(getattr(u, "started", 0.0) or 0.0)
            if best is None or started > best[0]:
                best = (started, name)
        return None if best is None else best[1]
