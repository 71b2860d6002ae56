"""Plausibility flags of one instrument over a period, for the API and the instrument page.

A thin wrapper over `server.evaluation.plausibility.check_instrument` (the named queries and the
checks live there): flags as plain dicts, and with a label in the reader's language for pages.
Power evidence is not passed, so `power_below_standby` is not run here (it needs the calibrated
standby draw and the heartbeats' power from the signed envelopes).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from server.evaluation.plausibility import check_instrument
from server.store.conn import Conn
from server.web.i18n import TEXT, t, t_or

# the longest range the API checks at once (a quarter; the instrument page shows at most 31 days)
MAX_SPAN = timedelta(days=92)


def flags(conn: Conn, instrument_id: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Every flag over [start, end): `check`, `detail` (English, the check's own words), `start`,
    `end` (None when the check names no time) and `value` (days, share or count, by check)."""
    return [asdict(f) for f in check_instrument(conn, instrument_id, start, end)]


def label(lang: str, check: str) -> str:
    """The check's name in `lang`; an unknown check shows as itself."""
    return t_or(lang, f"plaus.check.{check}", check)


def text(lang: str, flag: dict[str, Any]) -> str:
    """The flag's detail in `lang` from its numbers (`args`); the check's own English words where
    no translation exists (a new check shows, untranslated, rather than not at all)."""
    key = f"plaus.detail.{flag['check']}"
    return t(lang, key, **flag.get("args", {})) if key in TEXT else str(flag["detail"])


def shown(conn: Conn, lang: str, instrument_id: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """The flags for a page, each with its `label` and `text` in the reader's language (and the
    English `detail` beside it). The caller has already checked that the reader may see the
    instrument."""
    return [{**f, "label": label(lang, f["check"]), "text": text(lang, f)}
            for f in flags(conn, instrument_id, start, end)]
