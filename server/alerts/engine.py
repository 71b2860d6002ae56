"""One round of the alerts job: evaluate the rules, open / refresh / clear alerts, deliver.

- De-duplication: one open alert per (unit, rule, subject) (a unique index), refreshed while the
  condition holds, cleared when it stops; a later recurrence is a new alert.
- Delivery: each enabled immediate channel of the unit gets every open alert once; alerts waiting
  for a channel go out together (a few per message), at most `max_per_hour` messages an hour per
  channel; a failed attempt is retried after RETRY_AFTER, at most MAX_FAILURES times. Digest
  channels get one summary of the unit's open alerts a day, at their hour (Asia/Shanghai).
- When an alert a channel announced clears, the channel is told it is resolved (within a day).
- Every attempt is stored with its status and error (alert_deliveries).

One round at a time (an advisory lock), so two jobs never send the same message twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from server import clock
from server.alerts import channels, queries
from server.alerts.channels import Message, SmtpConfig
from server.alerts.rules import evaluate
from server.store.conn import Conn
from server.store.times import TZ
from server.web.i18n import t, t_or

log = logging.getLogger(__name__)

LOCK_KEY = 0x6A6973686961  # "jishia": one alerts round at a time
BATCH = 8  # alerts per message: keeps a robot's message under its 4096-byte limit
RETRY_AFTER = timedelta(minutes=5)
MAX_FAILURES = 5
CLEAR_WINDOW = timedelta(hours=24)  # a resolution older than this is no news any more



@dataclass
class RoundResult:
    opened: int = 0
    cleared: int = 0
    open_total: int = 0
    sent: int = 0
    failed: int = 0
    skipped_locked: bool = False
    settled: int = 0


def alert_text(lang: str, rule: str, params: dict[str, Any]) -> str:
    """The message of one alert in `lang` (placeholders from its params)."""
    key = f"alert.msg.{rule}"
    if rule == "registration_deadline" and int(params.get("left", 0)) < 0:
        key = "alert.msg.registration_overdue"
    text = t(lang, key, **params)
    note = params.get("calendar_note")
    return f"{text}（{note}）" if note and lang == "zh" else text


def rule_label(lang: str, rule: str) -> str:
    return t_or(lang, f"alert.rule.{rule}", rule)


def _line(lang: str, a: dict[str, Any]) -> str:
    return f"**{rule_label(lang, a['rule'])}** {alert_text(lang, a['rule'], a['params'])}"


def alerts_message(unit_name: str, alerts: Sequence[dict[str, Any]], *, digest: bool = False, cleared: bool = False,
                   base_url: str = "") -> Message:
    key = "alert.digest_title" if digest else "alert.clear_title" if cleared else "alert.title"
    zh = [_line("zh", a) for a in alerts]
    en = [_line("en", a) for a in alerts]
    if base_url:
        zh.append(f"详情：{base_url.rstrip('/')}/alerts")
        en.append(f"Details: {base_url.rstrip('/')}/alerts")
    return Message(t("zh", key, unit=unit_name, n=len(alerts)), t("en", key, unit=unit_name, n=len(alerts)), zh, en)


def test_message(unit_name: str) -> Message:
    return Message(t("zh", "alert.test_title", unit=unit_name), t("en", "alert.test_title", unit=unit_name),
                   [t("zh", "alert.test_body")], [t("en", "alert.test_body")])


def reconcile(conn: Conn, now: datetime) -> tuple[int, int, int]:
    """Open / refresh / clear alerts from the rules; (opened, cleared, open now)."""
    before = {(r["unit_id"], r["rule"], r["subject"]): r["id"] for r in queries.open_alerts(conn)}
    seen: set[int] = set()
    opened = 0
    for c in evaluate(conn):
        aid = queries.open_alert(conn, c.unit_id, c.rule, c.subject, c.instrument_id, c.params, now)
        opened += c.key not in before
        seen.add(aid)
    gone = [aid for aid in before.values() if aid not in seen]
    queries.clear_alerts(conn, gone, now)
    return opened, len(gone), len(seen)


def deliver(conn: Conn, now: datetime, smtp: SmtpConfig | None, base_url: str = "") -> tuple[int, int]:
    """Send what is due on every enabled channel; (sent, failed) messages."""
    sent = failed = 0
    for ch in queries.channels_to_deliver(conn):
        try:
            s, f = _deliver_channel(conn, ch, now, smtp, base_url)
        except psycopg.Error:
            raise
        except Exception:  # one broken channel must not stop the others
            log.exception("alert channel %s failed", ch["id"])
            continue
        sent += s
        failed += f
    return sent, failed


def _send(conn: Conn, ch: dict[str, Any], kind: str, ids: Sequence[int], msg: Message, now: datetime,
          smtp: SmtpConfig | None, digest_day: Any = None) -> bool:
    error = channels.send(ch["kind"], ch["webhook_url"], ch["sign_secret"], list(ch["recipients"]), smtp, msg)
    queries.record_delivery(conn, ch["id"], kind, ids, digest_day, now, error)
    conn.commit()
    if error:
        log.warning("alert channel %s (%s): %s", ch["id"], ch["kind"], error)
    return error is None


def _deliver_channel(conn: Conn, ch: dict[str, Any], now: datetime, smtp: SmtpConfig | None,
                     base_url: str) -> tuple[int, int]:
    allowed = ch["max_per_hour"] - queries.attempts_since(conn, ch["id"], now - timedelta(hours=1))
    if allowed <= 0:
        return 0, 0
    sent = failed = 0
    if ch["digest"]:
        local = now.astimezone(TZ)
        day = local.date()
        if local.hour < ch["digest_hour"]:
            return 0, 0
        state = queries.digest_state(conn, ch["id"], day)
        if state["sent"] or state["failures"] >= MAX_FAILURES or (
                state["failed_at"] is not None and now - state["failed_at"] < RETRY_AFTER):
            return 0, 0
        items = queries.open_alerts_of_unit(conn, ch["unit_id"])
        if not items:
            return 0, 0
        msg = alerts_message(ch["unit_name"], items[: BATCH * 4], digest=True, base_url=base_url)
        ok = _send(conn, ch, "digest", [a["id"] for a in items], msg, now, smtp, day)
        return (1, 0) if ok else (0, 1)
    pending = queries.pending_for_channel(conn, ch["id"], ch["unit_id"], MAX_FAILURES, now - RETRY_AFTER)
    clears = queries.pending_clears(conn, ch["id"], ch["unit_id"], MAX_FAILURES, now - RETRY_AFTER,
                                    now - CLEAR_WINDOW)
    batches = [("alert", pending[i: i + BATCH]) for i in range(0, len(pending), BATCH)]
    batches += [("clear", clears[i: i + BATCH]) for i in range(0, len(clears), BATCH)]
    for kind, chunk in batches:
        if allowed <= 0:
            break
        msg = alerts_message(ch["unit_name"], chunk, cleared=kind == "clear", base_url=base_url)
        if _send(conn, ch, kind, [a["id"] for a in chunk], msg, now, smtp):
            sent += 1
        else:
            failed += 1
        allowed -= 1
    return sent, failed


def run_round(dsn: str, smtp: SmtpConfig | None = None, base_url: str = "",
              settle_after: timedelta | None = None) -> RoundResult:
    """Settle finished bookings, evaluate, reconcile and deliver once."""
    out = RoundResult()
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT set_config('jishi.actor', 'job:alerts', false)")  # audited booking updates
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
        conn.commit()
        if not got or not got[0]:
            out.skipped_locked = True
            return out
        try:
            now = clock.now()
            if queries.table_exists(conn, "bookings"):
                from server.bookings.service import SETTLE_AFTER, settle_due

                # booked vs measured first: drafts before alerts
                out.settled = settle_due(conn, SETTLE_AFTER if settle_after is None else settle_after)
                conn.commit()
            out.opened, out.cleared, out.open_total = reconcile(conn, now)
            conn.commit()
            out.sent, out.failed = deliver(conn, now, smtp, base_url)
            conn.commit()
        finally:
            conn.rollback()
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
            conn.commit()
    return out
