"""Holes in an agent's seqs: ask for a resend, and give up when they cannot come any more.

Several workers and re-sends make records arrive out of order, so a hole is normal for a moment.
A hole older than `resend_after_s` gets a `resend first..last` command (repeated every
`resend_after_s`, at most `resend_max_attempts` times); once the attempts are spent and another
period has passed, or the hole is older than `gap_give_up_after_s`, it is declared lost for good
(gaps, kind 'lost'), the watermark passes it and derivation continues with coverage 'gap' there.
A birth whose `spool_first` is above a hole also ends it at once: the agent no longer has it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum

from server.config import IngestSettings
from server.ingest.book import Book, Progress


class Action(Enum):
    WAIT = "wait"
    RESEND = "resend"
    GIVE_UP = "give_up"


def decide(prog: Progress, now: datetime, s: IngestSettings) -> Action:
    if prog.first_hole() is None or prog.hole_since is None:
        return Action.WAIT
    age = now - prog.hole_since
    every = timedelta(seconds=s.resend_after_s)
    if age >= timedelta(seconds=s.gap_give_up_after_s):
        return Action.GIVE_UP
    since_last = None if prog.last_resend_at is None else now - prog.last_resend_at
    if prog.resend_attempts >= s.resend_max_attempts:
        return Action.GIVE_UP if since_last is None or since_last >= every else Action.WAIT
    if age >= every and (since_last is None or since_last >= every):
        return Action.RESEND
    return Action.WAIT


def holes_below(prog: Progress, limit: int) -> list[tuple[int, int]]:
    """Missing ranges above the watermark and below `limit` (exclusive)."""
    out = []
    nxt = prog.watermark + 1
    for r in prog.pending:
        if r.lo > nxt:
            out.append((nxt, min(r.lo - 1, limit - 1)))
        nxt = r.hi + 1
        if nxt >= limit:
            break
    if nxt < limit:
        out.append((nxt, limit - 1))
    return [(a, b) for a, b in out if a <= b]


def declare_below(book: Book, spool_first: int) -> list[tuple[int, int]]:
    """The agent's spool starts at spool_first: every hole below it is lost for good."""
    declared = []
    for a, b in holes_below(book.prog, spool_first):
        g = book.declare_lost(a, b, f"below the agent's spool (spool_first {spool_first})")
        if g is not None:
            declared.append((g.first, g.last))
    return declared
