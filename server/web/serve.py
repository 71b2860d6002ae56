"""`jishi-server web`: run the web app under uvicorn (server/cli.py hands `web` over to it).

The entry point of the web process: it loads the settings once (server/config.py: the `web`
section, `JISHI_WEB_*`, and the derivation parameters) and passes them to `create_app`.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import uvicorn

from server.config import ConfigError, load
from server.web.app import create_app


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="jishi-server web", description="Serve the Jishi web app and API.")
    ap.add_argument("--dsn", help="PostgreSQL DSN (default: JISHI_WEB_DSN or JISHI_DSN)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--insecure-cookies", action="store_true",
                    help="session cookies without the Secure flag: plain-http local testing only")
    ap.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides: dict[str, Any] = {}
    if args.dsn:
        overrides["dsn"] = args.dsn
    if args.insecure_cookies:
        overrides["cookie_secure"] = False
    try:
        settings = load(web=overrides) if overrides else load()
    except ConfigError as exc:
        print(f"jishi-server web: {exc}")
        return 2
    if not settings.web.dsn:
        print("jishi-server web: no database: set JISHI_WEB_DSN (or JISHI_DSN) or pass --dsn")
        return 2
    uvicorn.run(create_app(settings.web, settings.derive.params()), host=args.host, port=args.port,
                log_level=args.log_level, proxy_headers=False)  # the app applies them, from trusted_proxies only
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
