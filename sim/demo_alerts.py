"""Demo hooks for alerts and bookings (issue 20), for sim/demo.py to call; nothing here runs alone.

    receiver = demo_alerts.receiver_argv(port, log_file)      # start it as a child, like the web
    demo_alerts.configure(dsn, f"http://127.0.0.1:{port}")     # every unit: both robots, 1-minute offline rule
    alerts_argv = demo_alerts.job_argv(dsn)                    # `jishi-server alerts`, every 10 s
    demo_alerts.ensure_external_price(dsn, instrument_id)       # the price-list fee the draft needs
    code = demo_alerts.book_outside(dsn, instrument_id, org_id, minutes=10)   # approved, starts now

Then `jishi-agent checkin --booking CODE` on that instrument's agent (and a run), and stopping any
agent, end as a drafted service record on /bookings and as messages at the receiver (its log).
"""

from __future__ import annotations

import sys
from datetime import timedelta
from decimal import Decimal

import psycopg

from server import clock

DEMO_SECRET = "SECdemo0000jishi"


def receiver_argv(port: int, log_file: str) -> list[str]:
    return [sys.executable, "-m", "server.alerts.receiver", "--port", str(port), "--dingtalk-secret", DEMO_SECRET,
            "--log", log_file]


def job_argv(dsn: str, settle_after_minutes: float = 1.0) -> list[str]:
    return [sys.executable, "-m", "server.cli", "alerts", "--dsn", dsn, "--interval", "10",
            "--settle-after-minutes", str(settle_after_minutes)]


def configure(dsn: str, receiver: str) -> None:
    """Each unit gets a 企业微信 and a signed 钉钉 channel at the local receiver, and alerts for an
    agent offline longer than one minute (idempotent: a unit with channels is left alone)."""
    from server.alerts import channels, queries

    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT set_config('jishi.actor', 'demo', true)")
        for (unit,) in conn.execute("SELECT id FROM units u WHERE NOT EXISTS"
                                    " (SELECT 1 FROM alert_channels c WHERE c.unit_id = u.id) ORDER BY id").fetchall():
            for kind, url, secret in (("wecom", f"{receiver}/cgi-bin/webhook/send?key=demo-{unit}", ""),
                                      ("dingtalk", f"{receiver}/robot/send?access_token=demo-{unit}", DEMO_SECRET)):
                queries.create_channel(conn, unit, kind, "演示群 demo", channels.hint(kind, url, []), [], True, False,
                                       8, 60, url, secret)
            queries.upsert_settings(conn, unit, {"offline_minutes": 1}, clock.now())


def ensure_external_price(dsn: str, instrument_id: str, price: Decimal = Decimal("300.00")) -> Decimal:
    """The lowest external per-hour rate in force today for the instrument; one is added to its
    price list (`price` per hour, from today) if it has none, so a settled booking has a fee."""
    from server.bookings import queries
    from server.store.times import TZ

    today = clock.now().astimezone(TZ).date()
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT audit_as('demo')")
        row = queries.external_hourly(conn, instrument_id, today)
        if row is not None:
            return Decimal(row["external_price"])
        conn.execute("INSERT INTO price_list (instrument_id, item, basis, internal_price, external_price, valid_from,"
                     " published_on) VALUES (%s, '演示机时', 'per_hour', %s, %s, %s, %s)",
                     (instrument_id, price / 2, price, today, today))
    return price


def book_outside(dsn: str, instrument_id: str, org_id: str, minutes: float = 10, name: str = "演示校外用户",
                 start_in_s: float = 5.0) -> str:
    """An approved booking by an outside user from `start_in_s` from now for `minutes` (the
    instrument's rules are opened for it: no notice, no approval); its code, for `jishi-agent
    checkin --booking`."""
    from server.bookings import queries, service
    from server.web.db import one

    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT set_config('jishi.actor', 'demo', true)")
        inst = one(conn, "SELECT id, unit_id FROM instruments WHERE id = %s", (instrument_id,))
        if inst is None:
            raise ValueError(f"no instrument {instrument_id}")
        queries.upsert_rules(conn, instrument_id, {"min_notice_hours": 0, "external_needs_approval": False},
                             clock.now())
        start = clock.now() + timedelta(seconds=start_in_s)
        b = service.request(conn, inst, start, start + timedelta(minutes=minutes),
                            {"applicant_name": name, "applicant_org_id": org_id, "content": "演示预约 demo"})
        return str(b["code"])
