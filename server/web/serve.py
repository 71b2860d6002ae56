"""`jishi-server web`: run the web app under uvicorn (the lead wires this into server/cli.py)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

import uvicorn

from server.web.app import create_app
from server.web.settings import WebSettings


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
        settings = WebSettings.from_env(None, **overrides)
    except ValueError as exc:
        print(f"jishi-server web: {exc}")
        return 2
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level,
                proxy_headers=False)  # the app applies them, from settings.trusted_proxies only
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
