"""`jishi-server web`: run the web app under uvicorn (server/cli.py hands `web` over to it).

The entry point of the web process: it loads the settings once (server/config.py: the `web`
section, `JISHI_WEB_*`, and the derivation parameters) and passes them to `create_app`.

With `web.workers` > 1 uvicorn's supervisor starts that many worker processes on one listening
socket (pages render in Python: one process uses one core at most). Each worker is a fresh
interpreter that builds its app in `worker_app`, loading the same settings again from the same
environment and config file, plus the command line's overrides, which the supervisor hands down in
`JISHI_WEB_SERVE_OVERRIDES`. Each worker has its own pool and its own `jishi_live` listener, so a
live stream works from any of them; sessions and the login throttle live in the database.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

import uvicorn

from server.config import ConfigError, Settings, load

if TYPE_CHECKING:
    from fastapi import FastAPI

_OVERRIDES_ENV = "JISHI_WEB_SERVE_OVERRIDES"
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def bound_malloc_arenas(n: int = 2) -> None:
    """glibc gives each thread that allocates concurrently its own arena (up to 8 per core) and keeps
    freed arena memory; with page handlers in a thread pool that grows a worker's RSS far beyond what
    Python holds. Two arenas cost little: the GIL serialises most allocation anyway."""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc (musl has no arenas)
    libc.mallopt(-8, n)  # M_ARENA_MAX


def workers_of(settings: Settings) -> int:
    """`web.workers`, 0 meaning one per core."""
    return settings.web.workers or os.cpu_count() or 1


def worker_app() -> FastAPI:
    """The app of one worker process (uvicorn's factory): settings as the supervisor loaded them."""
    from server.web.app import create_app

    bound_malloc_arenas()
    overrides: dict[str, Any] = json.loads(os.environ.get(_OVERRIDES_ENV) or "{}")
    level = os.environ.get(_OVERRIDES_ENV + "_LOG", "INFO")
    logging.basicConfig(level=level, format=_LOG_FORMAT)
    settings = load(web=overrides) if overrides else load()
    return create_app(settings.web, settings.derive.params())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="jishi-server web", description="Serve the Jishi web app and API.")
    ap.add_argument("--dsn", help="PostgreSQL DSN (default: JISHI_WEB_DSN or JISHI_DSN)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--workers", type=int, help="worker processes (default: web.workers; 0 there: one per core)")
    ap.add_argument("--insecure-cookies", action="store_true",
                    help="session cookies without the Secure flag: plain-http local testing only")
    ap.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format=_LOG_FORMAT)
    overrides: dict[str, Any] = {}
    if args.dsn:
        overrides["dsn"] = args.dsn
    if args.insecure_cookies:
        overrides["cookie_secure"] = False
    if args.workers is not None:
        overrides["workers"] = args.workers
    try:
        settings = load(web=overrides) if overrides else load()
    except ConfigError as exc:
        print(f"jishi-server web: {exc}")
        return 2
    if not settings.web.dsn:
        print("jishi-server web: no database: set JISHI_WEB_DSN (or JISHI_DSN) or pass --dsn")
        return 2
    workers = workers_of(settings)
    if workers == 1:
        from server.web.app import create_app  # here, not at the top: a supervisor of workers needs no app

        bound_malloc_arenas()
        uvicorn.run(create_app(settings.web, settings.derive.params()), host=args.host, port=args.port,
                    log_level=args.log_level, proxy_headers=False)  # the app applies them, from trusted_proxies only
        return 0
    os.environ[_OVERRIDES_ENV] = json.dumps(overrides)
    os.environ[_OVERRIDES_ENV + "_LOG"] = args.log_level.upper()
    # The supervisor kills a worker that misses a health ping (5 s by default), and with it every open
    # stream; a worker busy evaluating a region on a loaded machine may answer late: allow 30 s.
    uvicorn.run("server.web.serve:worker_app", factory=True, workers=workers, host=args.host, port=args.port,
                log_level=args.log_level, proxy_headers=False, timeout_worker_healthcheck=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
