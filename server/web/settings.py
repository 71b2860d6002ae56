"""Settings of the web process, from the environment (JISHI_WEB_*) or given by the caller.

A frozen dataclass rather than server/config.py (owned by ingest and still in progress): the web
needs only a handful of knobs, and tests build it directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class WebSettings:
    dsn: str
    # Absolute lifetime of a login session; a person logs in again after it.
    session_ttl_s: int = 8 * 3600
    # Secure cookies: off only for plain-http local tests; a deployment sits behind TLS.
    cookie_secure: bool = True
    # Failed logins within the window (server/web/throttle.py): past each free allowance the next
    # attempt waits 1, 2, 4, ... s (at most login_max_delay_s) — per (login, client), per client,
    # and per login for clients that never logged in to it successfully. Never a hard lock.
    login_window_s: int = 900
    login_max_failures: int = 5
    login_max_failures_client: int = 30
    login_max_failures_account: int = 20
    login_max_delay_s: int = 900
    # Addresses (or networks, comma-separated) of reverse proxies whose X-Forwarded-For /
    # X-Forwarded-Proto are believed. Empty: none; the peer address is the client.
    trusted_proxies: str = ""
    enrolment_ttl_s: int = 7 * 24 * 3600
    # The MQTT broker an enrolled agent should talk to (shown in the agent config to copy).
    mqtt_host: str = "localhost"
    mqtt_port: int = 1883
    # A watching agent whose coverage has not moved for this long is shown as offline.
    live_stale_s: int = 900
    # Period of the board's full refresh (today's hours tick, offline detection).
    live_refresh_s: float = 30.0
    sse_keepalive_s: float = 15.0
    # Largest request body (JSON, forms) outside the spreadsheet upload: 413 above it, unread.
    max_body_bytes: int = 1024 * 1024
    pool_min: int = 1
    pool_max: int = 8
    default_lang: str = "zh"
    # The evaluators' rubric (TOML); empty: the sample shipped with server/evaluation.
    rubric_path: str = ""
    low_use_threshold: float = 0.2
    # The deployment's card key (a file, as `jishi import --card-key-file`): the web import of
    # `identities` hashes raw card numbers with it, as the agents' card readers do. Empty: raw
    # numbers are rejected and only `hmac-sha256:` values are accepted.
    card_key_file: str = ""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> WebSettings:
        """JISHI_WEB_<FIELD> for each field (JISHI_WEB_DSN, else JISHI_DSN, is required)."""
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"JISHI_WEB_{f.name.upper()}")
            if raw is None:
                continue
            default = f.default
            if isinstance(default, bool):
                values[f.name] = raw.strip().lower() in ("1", "true", "yes", "on")
            elif isinstance(default, int):
                values[f.name] = int(raw)
            elif isinstance(default, float):
                values[f.name] = float(raw)
            else:
                values[f.name] = raw
        if "dsn" not in values and env.get("JISHI_DSN"):
            values["dsn"] = env["JISHI_DSN"]
        values.update(overrides)
        if not values.get("dsn"):
            raise ValueError("no database: set JISHI_WEB_DSN (or JISHI_DSN) or pass --dsn")
        return cls(**values)
