"""`jishi-server alerts`: evaluate the alert rules and deliver, once or every --interval seconds.

    jishi-server alerts [--dsn DSN] [--once] [--interval 60] [--smtp-host H --smtp-port 25
                        --smtp-from ADDR --smtp-starttls --smtp-user U] [--base-url URL]
                        [--settle-after-minutes 30]

The DSN defaults to JISHI_ALERTS_DSN, then JISHI_DSN; the SMTP password comes from
JISHI_SMTP_PASSWORD (never on the command line, where `ps` shows it).
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from datetime import timedelta

import psycopg

from server.alerts.channels import SmtpConfig
from server.alerts.engine import run_round
from server.signals import stop_on_signals

log = logging.getLogger("jishi.alerts")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="jishi-server alerts", description="Evaluate alert rules and deliver alerts.")
    ap.add_argument("--dsn", help="PostgreSQL DSN (default: JISHI_ALERTS_DSN or JISHI_DSN)")
    ap.add_argument("--once", action="store_true", help="one round, then exit")
    ap.add_argument("--interval", type=float, default=60.0, help="seconds between rounds (default 60)")
    ap.add_argument("--smtp-host", default=os.environ.get("JISHI_SMTP_HOST", ""))
    ap.add_argument("--smtp-port", type=int, default=int(os.environ.get("JISHI_SMTP_PORT", "25")))
    ap.add_argument("--smtp-from", default=os.environ.get("JISHI_SMTP_FROM", "jishi@localhost"))
    ap.add_argument("--smtp-starttls", action="store_true",
                    default=os.environ.get("JISHI_SMTP_STARTTLS", "").lower() in ("1", "true", "yes"))
    ap.add_argument("--smtp-user", default=os.environ.get("JISHI_SMTP_USER", ""))
    ap.add_argument("--base-url", default=os.environ.get("JISHI_BASE_URL", ""),
                    help="the web app's address, for links in messages")
    ap.add_argument("--settle-after-minutes", type=float, default=None,
                    help="settle a booking this long after its slot (default 30; the demo uses less)")
    ap.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    dsn = args.dsn or os.environ.get("JISHI_ALERTS_DSN") or os.environ.get("JISHI_DSN")
    if not dsn:
        print("jishi-server alerts: no database (--dsn, JISHI_ALERTS_DSN or JISHI_DSN)")
        return 2
    smtp = None
    if args.smtp_host:
        smtp = SmtpConfig(host=args.smtp_host, port=args.smtp_port, sender=args.smtp_from,
                          starttls=args.smtp_starttls, user=args.smtp_user,
                          password=os.environ.get("JISHI_SMTP_PASSWORD", ""))
    stop = threading.Event()
    stop_on_signals(stop)
    while True:
        try:
            after = None if args.settle_after_minutes is None else timedelta(minutes=args.settle_after_minutes)
            r = run_round(dsn, smtp, args.base_url, after)
            log.info("alerts round: %d opened, %d cleared, %d open, %d sent, %d failed, %d bookings settled%s",
                     r.opened, r.cleared, r.open_total, r.sent, r.failed, r.settled,
                     " (another round is running)" if r.skipped_locked else "")
        except psycopg.OperationalError as exc:
            log.error("alerts round: cannot use the database: %s", exc)
            if args.once:
                return 1
        if args.once or stop.wait(args.interval):
            return 0
