"""Launch the real OpenID Connect provider of sim/oidc (node `oidc-provider`) for tests and the demo.

The provider is the npm package pinned in sim/oidc/package-lock.json, installed by
deploy/install.sh (`npm ci` into sim/oidc/node_modules). It is configured with one JSON document:
the issuer, one client and the users with their passwords and claims.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from sim.devstack import free_port, stop_process

HERE = Path(__file__).resolve().parent / "oidc"
SCRIPT = HERE / "provider.mjs"


def available() -> str | None:
    """Why the provider cannot start here, or None when it can."""
    if shutil.which("node") is None:
        return "node is not installed (deploy/install.sh installs nodejs)"
    if not (HERE / "node_modules" / "oidc-provider").is_dir():
        return "sim/oidc/node_modules is missing (deploy/install.sh runs npm ci there)"
    return None


@dataclass
class OidcProvider:
    """A running provider; `with OidcProvider(...) as p:` starts it and waits until it listens."""

    client_id: str
    client_secret: str
    redirect_uris: list[str]
    users: dict[str, dict[str, Any]]
    port: int = 0
    host: str = "127.0.0.1"
    start_timeout_s: float = 30.0
    proc: subprocess.Popen[str] | None = field(default=None, init=False)

    @property
    def issuer(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> OidcProvider:
        why = available()
        if why:
            raise RuntimeError(why)
        self.port = self.port or free_port()
        cfg = {"issuer": self.issuer, "port": self.port, "host": self.host, "users": self.users,
               "clients": [{"client_id": self.client_id, "client_secret": self.client_secret,
                            "redirect_uris": self.redirect_uris}]}
        env = {**os.environ, "JISHI_OIDC_CONFIG": json.dumps(cfg), "NODE_ENV": "production"}
        self.proc = subprocess.Popen(["node", str(SCRIPT)], cwd=HERE, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + self.start_timeout_s
        line = self.proc.stdout.readline()  # "ready <issuer>", or EOF when node dies
        if not line.startswith("ready ") or time.monotonic() > deadline:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            self.stop()
            raise RuntimeError(f"the OIDC provider did not start: {line.strip()} {err.strip()[-500:]}")
        return self

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def __enter__(self) -> OidcProvider:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
