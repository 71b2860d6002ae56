"""A real CAS 2.0/3.0 server (Django + django-mama-cas) for the login tests and the demo.

`with CasServer(users) as cas:` migrates a private SQLite database in a temporary directory,
creates the users and serves `{cas.url}/login`, `/serviceValidate`, `/p3/serviceValidate`.
Services (the `service=` URLs) are allowed by the regular expression `service_pattern`.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from sim.devstack import free_port, stop_process, wait_for_port

REPO = Path(__file__).resolve().parents[2]


@dataclass
class CasServer:
    users: dict[str, dict[str, Any]]
    service_pattern: str = r"^http://127\.0\.0\.1:\d+/"
    port: int = 0
    start_timeout_s: float = 60.0
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _dir: tempfile.TemporaryDirectory[str] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        """The CAS server's base URL, as a CAS client is configured with it."""
        return f"http://127.0.0.1:{self.port}/cas"

    def start(self) -> CasServer:
        self.port = self.port or free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="jishi-cas-")
        env = {**os.environ, "JISHI_CAS_SECRET": secrets.token_hex(32),
               "JISHI_CAS_DB": str(Path(self._dir.name) / "cas.sqlite3"),
               "JISHI_CAS_SERVICE_PATTERN": self.service_pattern, "JISHI_CAS_USERS": json.dumps(self.users),
               "DJANGO_SETTINGS_MODULE": "sim.cas_server.settings",
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen([sys.executable, "-m", "sim.cas_server.serve", str(self.port)], cwd=REPO,
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        proc = self.proc
        try:
            wait_for_port("127.0.0.1", self.port, self.start_timeout_s, alive=lambda: proc.poll() is None)
        except (RuntimeError, TimeoutError) as e:
            dead = proc.poll() is not None and proc.stderr is not None
            err = proc.stderr.read().decode(errors="replace") if dead and proc.stderr else ""
            self.stop()
            raise RuntimeError(f"the CAS server did not start: {e} {err[-800:]}") from None
        return self

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> CasServer:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
