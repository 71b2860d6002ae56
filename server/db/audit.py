"""The audit log's hash chain (migration 021): its head, and a verifier that finds a break.

Each row's row_hash = sha256(previous row_hash || canonical row); the first row follows 32 zero
bytes. The canonical text is built here by our own query and hashed in Python, so a function
replaced in the database cannot make a rewritten log verify. A superuser can still rewrite the
whole tail consistently; the head published in each closed-period snapshot (`audit_head`) is what
catches that: `verify(conn, published=...)` checks the published row is still there, unchanged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import psycopg

GENESIS = bytes(32)

# The same fields, in the same order and encoding, as audit_canonical() of migration 021.
_CANONICAL = (
    "SELECT id, row_hash, jsonb_build_array(id, (extract(epoch FROM at) * 1000000)::bigint, actor, db_role,"
    " action, table_name, row_key, before, after, txid)::text FROM audit_log"
    " WHERE id > %s ORDER BY id LIMIT %s"
)


def audit_head(conn: psycopg.Connection[Any]) -> tuple[int, bytes] | None:
    """(id, row_hash) of the newest audit row, or None while the log is empty."""
    row = conn.execute("SELECT id, row_hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
    return None if row is None else (int(row[0]), bytes(row[1]))


def row_hash(prev: bytes, canonical: str) -> bytes:
    return hashlib.sha256(prev + canonical.encode("utf-8")).digest()


@dataclass(frozen=True)
class Break:
    """Where the chain stops holding: the first row whose hash does not follow from the one before."""

    id: int
    after_id: int | None  # the row before it in the log as it is now (None: the first row)
    kind: str  # 'deleted' (ids missing before it), 'altered', 'head' or 'published'

    def __str__(self) -> str:
        if self.kind == "deleted":
            return f"audit row(s) between id {self.after_id} and id {self.id} were deleted"
        if self.kind == "altered":
            return f"audit row id {self.id} was altered (or rows before it were rewritten)"
        if self.kind == "head":
            return f"audit rows after id {self.id} were deleted (the chain head names a later row)"
        return f"the published audit head id {self.id} is no longer in the log as published"


def verify(conn: psycopg.Connection[Any], published: tuple[int, bytes] | None = None,
           batch: int = 10_000) -> list[Break]:
    """Walk the whole chain; return its breaks (empty: intact, and `published` is still in it)."""
    breaks: list[Break] = []
    prev, prev_id = GENESIS, None
    found_published = published is None
    last = 0
    while True:
        rows = conn.execute(_CANONICAL, (last, batch)).fetchall()
        if not rows:
            break
        for rid, stored, canonical in rows:
            rid, stored = int(rid), bytes(stored)
            if row_hash(prev, canonical) != stored:
                # ids are gapless from 021 on: a gap before a broken link is a deletion
                gap = prev_id is not None and rid != prev_id + 1
                breaks.append(Break(rid, prev_id, "deleted" if gap else "altered"))
            if published is not None and rid == published[0]:
                found_published = stored == published[1]
            prev, prev_id = stored, rid
        last = int(rows[-1][0])
    head = conn.execute("SELECT id, row_hash FROM audit_chain_head").fetchone()
    if head is not None and int(head[0]) != (prev_id or 0):
        breaks.append(Break(prev_id or 0, prev_id, "head"))
    if not found_published and published is not None:
        breaks.append(Break(published[0], None, "published"))
    return breaks


def main(argv: list[str] | None = None) -> int:
    """`python -m server.db.audit [--dsn DSN] [--published ID:HEX]`: verify the chain; exit 1 on a break."""
    import argparse
    import os

    ap = argparse.ArgumentParser(prog="python -m server.db.audit", description="Verify the audit log's hash chain")
    ap.add_argument("--dsn", help="default: JISHI_DATABASE_URL, else the server settings' admin_dsn or dsn")
    ap.add_argument("--published", help="a head published earlier (a closed-period snapshot), as ID:HEX")
    args = ap.parse_args(argv)
    dsn = args.dsn or os.environ.get("JISHI_DATABASE_URL")
    if not dsn:
        from server.config import load

        database = load().database
        dsn = database.admin_dsn or database.dsn
    published = None
    if args.published:
        pid, _, hexed = args.published.partition(":")
        published = (int(pid), bytes.fromhex(hexed))
    with psycopg.connect(dsn) as conn:
        breaks = verify(conn, published)
        head = audit_head(conn)
    for b in breaks:
        print(f"BROKEN: {b}")
    if breaks:
        return 1
    print("intact" + (f"; head {head[0]}:{head[1].hex()}" if head else "; the log is empty"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
