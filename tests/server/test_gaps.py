"""When a hole gets a resend request and when it is given up (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from server.config import IngestSettings
from server.ingest.book import Book, GapRow, Progress, Run
from server.ingest.gaps import Action, decide, declare_below, holes_below

NOW = datetime(2026, 5, 1, tzinfo=UTC)
CFG = IngestSettings(resend_after_s=30, resend_max_attempts=3, gap_give_up_after_s=600)


def prog(**kw: object) -> Progress:
    base: dict[str, object] = dict(
        agent_no=1, agent_id="a", watermark=10, watermark_hash="h" * 64, watermark_t=None,
        pending=[Run(15, 20, "p" * 64, "q" * 64, 0, 0)], max_seq=20, hole_since=NOW, resend_attempts=0,
        last_resend_at=None, derived_seq=10, derive_carry=None, boot=1, conn=1, spool_first=None, next_seq=None,
        birth_at=None, death_at=None, death_clean=None, last_received_at=None)
    base.update(kw)
    return Progress(**base)  # type: ignore[arg-type]


def test_decide() -> None:
    s = timedelta(seconds=1)
    assert prog().first_hole() == (11, 14)
    assert decide(prog(), NOW + 29 * s, CFG) is Action.WAIT
    assert decide(prog(), NOW + 30 * s, CFG) is Action.RESEND
    assert decide(prog(resend_attempts=1, last_resend_at=NOW + 30 * s), NOW + 45 * s, CFG) is Action.WAIT
    assert decide(prog(resend_attempts=1, last_resend_at=NOW + 30 * s), NOW + 60 * s, CFG) is Action.RESEND
    assert decide(prog(resend_attempts=3, last_resend_at=NOW + 90 * s), NOW + 100 * s, CFG) is Action.WAIT
    assert decide(prog(resend_attempts=3, last_resend_at=NOW + 90 * s), NOW + 120 * s, CFG) is Action.GIVE_UP
    assert decide(prog(), NOW + 600 * s, CFG) is Action.GIVE_UP
    assert decide(prog(pending=[]), NOW + 900 * s, CFG) is Action.WAIT


def test_holes_below_spool_and_settle() -> None:
    p = prog(pending=[Run(15, 20, None, "q" * 64, 0, 0), Run(25, 26, None, "r" * 64, 0, 0)])
    assert holes_below(p, 30) == [(11, 14), (21, 24), (27, 29)]
    assert holes_below(p, 13) == [(11, 12)]
    book = Book(p, [GapRow(3, 4, "lost", None)])
    assert declare_below(book, 23) == [(11, 14), (21, 22)]
    book.settle(NOW)
    assert (p.watermark, p.watermark_hash) == (22, None)  # through 11-14 lost, 15-20 stored, 21-22 lost
    assert [(r.lo, r.hi) for r in p.pending] == [(25, 26)]
