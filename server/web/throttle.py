"""Login throttling (issue 13 item 8): slow a password guesser down without letting a stranger lock
the owner out.

Failed logins within the window are counted three ways; past each count's free allowance the next
attempt must wait 2^(failures - free) seconds after the latest failure, up to a maximum:
- per (account, client): the guesser at one address, on one account;
- per client, all accounts: one address trying many accounts;
- per account, all clients: a guesser spread over many addresses. This delay applies only to
  clients that have never logged in to that account successfully (`login_known_clients`), so the
  owner, at an address they used before, is never delayed by a stranger's failures; at a new
  address the owner is slowed (never locked) like everyone else.
A hard lock-out is never used: the longest wait is `login_max_delay_s`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from server.config import WebSettings
from server.store.conn import Conn
from server.web.db import one

_COUNTS = """
SELECT p.n AS pair_n, p.last AS pair_last, c.n AS client_n, c.last AS client_last,
       a.n AS account_n, a.last AS account_last,
       EXISTS (SELECT 1 FROM login_known_clients k WHERE k.login = %(l)s AND k.client = %(c)s) AS known,
       now() AS now
FROM (SELECT count(*) AS n, max(at) AS last FROM login_failures
      WHERE login = %(l)s AND client = %(c)s AND at > now() - %(w)s) p,
     (SELECT count(*) AS n, max(at) AS last FROM login_failures WHERE client = %(c)s AND at > now() - %(w)s) c,
     (SELECT count(*) AS n, max(at) AS last FROM login_failures WHERE login = %(l)s AND at > now() - %(w)s) a
"""


def backoff_s(failures: int, free: int, max_delay_s: int) -> int:
    """Seconds to wait after the latest failure: 0 within the free allowance, then 1, 2, 4, ... ."""
    if failures < free:
        return 0
    delay: int = 2 ** min(failures - free, 62)
    return min(delay, max_delay_s)


@dataclass(frozen=True)
class Verdict:
    wait_s: int  # 0: the attempt may proceed
    reason: str  # 'pair', 'client' or 'account' when it must wait


def check(conn: Conn, settings: WebSettings, login: str, client: str) -> Verdict:
    """May `client` try a password for `login` now? If not, for how long must it wait."""
    row = one(conn, _COUNTS, {"l": login, "c": client, "w": timedelta(seconds=settings.login_window_s)})
    assert row is not None
    now: datetime = row["now"]
    waits: list[tuple[float, str]] = []
    limits = [("pair", settings.login_max_failures), ("client", settings.login_max_failures_client)]
    if not row["known"]:
        limits.append(("account", settings.login_max_failures_account))
    for kind, free in limits:
        delay = backoff_s(int(row[f"{kind}_n"]), free, settings.login_max_delay_s)
        if delay:
            remaining = (row[f"{kind}_last"] + timedelta(seconds=delay) - now).total_seconds()
            if remaining > 0:
                waits.append((remaining, kind))
    if not waits:
        return Verdict(0, "")
    remaining, kind = max(waits)
    return Verdict(max(1, math.ceil(remaining)), kind)


def failed(conn: Conn, login: str, client: str) -> None:
    conn.execute("INSERT INTO login_failures (login, client) VALUES (%s, %s)", (login, client))


def succeeded(conn: Conn, login: str, client: str) -> None:
    """Forget this client's failures on the account and remember it as the owner's."""
    conn.execute("DELETE FROM login_failures WHERE login = %s AND client = %s", (login, client))
    conn.execute(
        "INSERT INTO login_known_clients (login, client) VALUES (%s, %s)"
        " ON CONFLICT (login, client) DO UPDATE SET last_ok = now()", (login, client))
