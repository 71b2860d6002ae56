"""The database worker: batches of MQTT messages -> one transaction each -> acks after commit.

Per batch: structural checks outside the transaction (pure), then in one transaction: registry
and signature checks against the registry as it is now, lock the agents' progress rows (in
agent_no order, so workers never deadlock), judge every envelope (duplicate, conflict, chain,
new), COPY the new envelopes and records, advance watermarks, derive, update live state, write
quarantine rows. After commit: PUBACK the MQTT messages, publish acks, tell live subscribers.

A bad message is refused on its own; it never fails the batch. If the database fails the batch
anyway: a connection problem is retried with back-off (nothing was acked, the broker keeps the
messages); any other database error splits the batch and retries message by message, so only a
message the database refuses on its own is quarantined (reason 'store_error').
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg

from protocols.derive import Carry, Derived, Gap
from protocols.errors import Reason
from protocols.records import Birth
from server import clock
from server.config import Settings
from server.db import queries
from server.derive import incremental
from server.ingest import energy, future, gaps, ha, live, quarantine
from server.ingest.ack import AckOut, ResendOut, publish_acks, publish_resends
from server.ingest.batching import Handoff
from server.ingest.book import Book, GapRow, Progress
from server.ingest.metrics import Metrics
from server.ingest.store import copy_envelopes, copy_prepared_records, finish_rows
from server.ingest.verify import (
    ControlIn,
    EnvelopeIn,
    Incoming,
    KeyCache,
    Opening,
    Refused,
    authenticate,
    open_any,
)
from server.store import archive
from server.store.conn import Conn
from server.store.times import dt_to_ms, ms_to_dt

log = logging.getLogger(__name__)
_BYTES_PER_RECORD = 250  # to bound a batch's records before parsing it


@dataclass
class Outcome:
    """What a committed batch leads to, done after commit."""

    acks: list[AckOut] = field(default_factory=list)
    resends: list[ResendOut] = field(default_factory=list)
    rejections: list[quarantine.Rejection] = field(default_factory=list)
    live_rows: list[live.LiveRow] = field(default_factory=list)
    records: int = 0
    envelopes: int = 0
    duplicates: int = 0
    late: int = 0
    lags: list[float] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    future_rows: list[future.FutureRow] = field(default_factory=list)
    energy_rows: list[energy.EnergyRow] = field(default_factory=list)
    """envelopes that brought records from a wall clock ahead of the server (stored, flagged)"""
    deferred: list[tuple[Incoming, Opening | Refused]] = field(default_factory=list)
    """messages of agents another worker was busy with: not processed, not acked, try again"""


class Pipeline:
    """Stateless apart from caches: turns a batch into a committed transaction and an Outcome."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.s = settings
        self.name = name
        self.keys = KeyCache()
        self.params = settings.derive.params()
        self.params_json = dataclasses.asdict(self.params)  # stored with the derived rows (migration 025)

    # -- messages --------------------------------------------------------------------------------

    def process(self, conn: Conn, msgs: list[Incoming], opened: list[Opening | Refused] | None = None,
                skip_locked: bool = False) -> Outcome:
        """Verify and store one batch in one transaction. `opened`: open_any() of each message,
        when the caller has done the pure part already (on another thread). skip_locked: agents
        whose progress row another worker holds are deferred (Outcome.deferred) instead of waited for."""
        out = Outcome()
        refused: list[Refused] = []
        openings: list[Opening] = []
        for r in opened if opened is not None else [open_any(m) for m in msgs]:
            if isinstance(r, Refused):
                refused.append(r)
            else:
                openings.append(r)
        now = clock.now()
        now_ms = dt_to_ms(now)
        with conn.transaction():
            envs: list[EnvelopeIn] = []
            ctrls: list[ControlIn] = []
            if openings:
                agents, keys = queries.registry_for(
                    conn, sorted({o.body["agent"] for o in openings}), sorted({o.body["key"] for o in openings})
                )
                for o in openings:
                    a = authenticate(o, agents, keys, self.keys)
                    if isinstance(a, Refused):
                        refused.append(a)
                    elif isinstance(a, EnvelopeIn):
                        envs.append(a)
                    else:
                        ctrls.append(a)
            registry = {e.agent.agent_id: e.agent for e in envs} | {c.agent.agent_id: c.agent for c in ctrls}
            books = self._load_books(conn, sorted(registry), skip_locked)
            if len(books) < len(registry):
                busy = set(registry) - set(books)
                by_msg = {id(o.msg): o for o in openings}
                later = [e.msg for e in envs if e.agent.agent_id in busy]
                later += [c.msg for c in ctrls if c.agent.agent_id in busy]
                out.deferred = [(m, by_msg[id(m)]) for m in later]
                envs = [e for e in envs if e.agent.agent_id not in busy]
                ctrls = [c for c in ctrls if c.agent.agent_id not in busy]
                registry = {k: v for k, v in registry.items() if k not in busy}
            stored = queries.stored_hashes(conn, [
                (books[e.agent.agent_id].prog.agent_no, rec["seq"], ms_to_dt(rec["t"]))
                for e in envs if books[e.agent.agent_id].may_hold(e.opened.first_seq)
                for rec in e.opened.body["records"]
                if books[e.agent.agent_id].needs_lookup(rec["seq"])
            ])
            envs.sort(key=lambda e: (e.agent.agent_id, e.opened.first_seq, e.msg.received))
            accepted: list[EnvelopeIn] = []
            chosen: list[list[int] | None] = []  # per accepted envelope: its new records' indices, None: all
            grace = self.s.ingest.replay_grace_s * 1000
            for e in envs:
                book = books[e.agent.agent_id]
                v = book.judge(e, stored, now_ms, grace)
                if v.reason is not None:
                    refused.append(Refused(e.msg, "rec", v.reason, v.detail, v.field, e.agent.agent_id))
                    continue
                out.duplicates += v.duplicates
                out.late += v.late
                if v.new:
                    book.accept(e, v)
                    accepted.append(e)
                    records = e.opened.body["records"]
                    chosen.append(None if len(v.new) == len(records) else v.new)
                    # the latest time of all its records bounds that of the new ones: when it is not
                    # ahead, no new record is (the usual case; no record is read)
                    if e.prepared.t_max - e.msg.received_ms > self.params.future_ms:
                        ahead = future.flag(e.agent.agent_id, records if len(v.new) == len(records)
                                            else [records[i] for i in v.new],
                                            e.msg.received_ms, e.msg.received_at, self.params.future_ms)
                        if ahead is not None:
                            out.future_rows.append(ahead)
                    if energy.MARK in e.msg.payload:  # canonical bytes: no mark, no stuck counter
                        stuck = energy.flag(e.agent.agent_id, (e.opened.body["records"][i] for i in v.new))
                        if stuck is not None:
                            out.energy_rows.append(stuck)
                    continue
                if v.replay_candidate is not None:
                    raw = archive.envelope_bytes(conn, book.prog.agent_no, v.replay_candidate)
                    if raw == e.msg.payload:
                        refused.append(Refused(
                            e.msg, "rec", str(Reason.REPLAY),
                            f"identical to envelope {v.replay_candidate} stored before; seqs {e.opened.first_seq}"
                            f"..{e.opened.last_seq} are below the watermark {book.prog.watermark}",
                            None, e.agent.agent_id,
                        ))
                        continue
                book.touched = True
            for book in books.values():
                book.settle(now)
            # births and deaths after the records are settled: a birth's spool_first ends holes,
            # and which seqs are holes depends on what this batch stored
            online: list[tuple[str, str, str, bool, datetime]] = []
            births: set[str] = set()
            for c in sorted(ctrls, key=lambda c: c.msg.received):
                if self._control(c, books[c.agent.agent_id], online, births):
                    books[c.agent.agent_id].settle(now)
            self._write_new(conn, books, accepted, chosen, out)
            out.live_rows += live.set_online(conn, [o for o in online if o[3]], now, self.s.derive.timezone)
            self._finish(conn, books, registry, now, out, births)
            out.live_rows += live.set_online(conn, [o for o in online if not o[3]], now, self.s.derive.timezone)
            out.rejections = [
                quarantine.Rejection(r.msg.received_at, r.msg.topic, r.kind, r.agent_id, r.reason, r.detail,
                                     r.field, r.msg.payload)
                for r in refused
            ]
            quarantine.record(conn, out.rejections, max_bytes=self.s.ingest.quarantine_max_bytes, worker=self.name)
            future.record(conn, out.future_rows)
            energy.record(conn, out.energy_rows)
        commit_s = time.time()
        out.lags = [commit_s - e.opened.body["records"][-1]["t"] / 1000 for e in accepted]
        return out

    def _load_books(self, conn: Conn, agent_ids: list[str], skip_locked: bool = False) -> dict[str, Book]:
        if not agent_ids:
            return {}
        progs = [Progress.from_row(r) for r in queries.lock_progress(conn, agent_ids, skip_locked)]
        by_no: dict[int, list[GapRow]] = {p.agent_no: [] for p in progs}
        for agent_no, first, last, kind, last_hash in queries.gaps_of(conn, list(by_no)):
            by_no[agent_no].append(GapRow(first, last, kind, last_hash))
        return {p.agent_id: Book(p, by_no[p.agent_no]) for p in progs}

    def _control(self, c: ControlIn, book: Book, online: list[tuple[str, str, str, bool, datetime]],
                 births: set[str]) -> bool:
        """Births and deaths: remember them; a Will of an older connection changes nothing.
        True when a birth declared ranges lost (the watermark may move)."""
        p, m, a = book.prog, c.model, c.agent
        current = (p.boot or 0, p.conn or 0)
        if (m.boot, m.conn) < current:
            return False
        p.boot, p.conn = m.boot, m.conn
        if isinstance(m, Birth):
            p.birth_at, p.spool_first, p.next_seq = c.msg.received_at, m.spool_first, m.next_seq
            p.death_at, p.death_clean = None, None
            declared = gaps.declare_below(book, m.spool_first)
            if declared:
                log.warning("agent %s: spool starts at %d, declaring lost for good: %s", a.agent_id,
                            m.spool_first, declared)
            births.add(a.agent_id)
            online.append((a.instrument_id, a.unit_id, a.agent_id, True, c.msg.received_at))
            return bool(declared)
        p.death_at, p.death_clean = c.msg.received_at, m.clean
        online.append((a.instrument_id, a.unit_id, a.agent_id, False, c.msg.received_at))
        return False

    def _write_new(self, conn: Conn, books: dict[str, Book], accepted: list[EnvelopeIn],
                   chosen: list[list[int] | None], out: Outcome) -> None:
        ids = queries.next_envelope_ids(conn, len(accepted))
        if accepted:
            agent_nos = {b.prog.agent_id: b.prog.agent_no for b in books.values()}
            out.envelopes = copy_envelopes(conn, (
                (ids[i], agent_nos[e.agent.agent_id], e.msg.received_at, e.opened.first_seq, e.opened.last_seq,
                 e.msg.payload)
                for i, e in enumerate(accepted)
            ))
            # in time order: the index leads with time, so rows in time order append at its right
            # edge instead of splitting pages (it stays ~30 % smaller); the rows sort by time
            rows: list[bytes] = []
            latest: dict[str, datetime] = {}
            for env_id, e, which in zip(ids, accepted, chosen, strict=True):
                prepared = e.prepared.rows
                aid = e.agent.agent_id
                rows += finish_rows(prepared if which is None else [prepared[i] for i in which], env_id,
                                    agent_nos[aid])
                if aid not in latest or e.msg.received_at > latest[aid]:
                    latest[aid] = e.msg.received_at
            rows.sort()
            out.records = copy_prepared_records(conn, rows)
            for b in books.values():
                at = latest.get(b.prog.agent_id)
                if at is not None and (b.prog.last_received_at is None or at > b.prog.last_received_at):
                    b.prog.last_received_at = at

    def _finish(self, conn: Conn, books: dict[str, Book], registry: dict[str, queries.AgentRow], now: datetime,
                out: Outcome, births: set[str]) -> None:
        """Gaps, derivation, live state, progress; and which acks to send after commit."""
        queries.insert_gaps(conn, [
            (b.prog.agent_no, g.first, g.last, g.kind, g.last_hash, g.reason) for b in books.values()
            for g in b.new_gaps
        ])
        for b in books.values():
            out.gaps += [g.kind for g in b.new_gaps]
        items: list[tuple[str, str, str, Carry, datetime | None]] = []
        derived: list[tuple[str, str, Derived]] = []
        for aid, b in books.items():
            a = registry[aid]
            d = self._derive(conn, b)
            if d is not None:
                derived.append((aid, a.instrument_id, d))
                if d.carry is not None:
                    items.append((a.instrument_id, a.unit_id, aid, d.carry, b.prog.last_received_at))
            if b.watermark_moved or b.touched or aid in births:
                out.acks.append(AckOut(aid, a.unit_id, a.instrument_id, b.prog.watermark))
        incremental.write_many(conn, derived)
        out.live_rows += live.rows_after_derivation(conn, items, now, self.s.derive.timezone)
        derived_ids = {aid for aid, _, _ in derived}
        queries.save_progress(conn, [
            {**b.prog.to_params(), "derive_params": self.params_json if aid in derived_ids else None}
            for aid, b in books.items()
        ])

    def _derive(self, conn: Conn, b: Book) -> Derived | None:
        """Derive the agent's records from derived_seq+1 up to the watermark; keep the carry in its progress."""
        p = b.prog
        lo, hi = p.derived_seq + 1, p.watermark
        if hi < lo:
            return None
        at_hand = b.new_recs(lo, hi)
        carry = Carry.from_dict(p.derive_carry) if p.derive_carry else None
        d = incremental.advance(conn, p.agent_no, p.agent_id, lo, hi, at_hand,
                                [Gap(g.first, g.last, g.kind) for g in b.gaps], carry, self.params)
        p.derived_seq = hi
        p.derive_carry = d.carry.to_dict() if d.carry is not None else None
        return d

    # -- periodic --------------------------------------------------------------------------------

    def scan_holes(self, conn: Conn) -> Outcome:
        """Resend requests for holes that have waited long enough; permanent gaps for hopeless ones."""
        out = Outcome()
        now = clock.now()
        with conn.transaction():
            progs = [Progress.from_row(r) for r in queries.progress_with_holes(conn)]
            if not progs:
                return out
            agents, _ = queries.registry_for(conn, [p.agent_id for p in progs], [])
            books: dict[str, Book] = {}
            gap_rows: dict[int, list[GapRow]] = {p.agent_no: [] for p in progs}
            for agent_no, first, last, kind, last_hash in queries.gaps_of(conn, list(gap_rows)):
                gap_rows[agent_no].append(GapRow(first, last, kind, last_hash))
            for p in progs:
                a = agents.get(p.agent_id)
                hole = p.first_hole()
                if a is None or hole is None:
                    continue
                action = gaps.decide(p, now, self.s.ingest)
                if action is gaps.Action.RESEND:
                    p.resend_attempts += 1
                    p.last_resend_at = now
                    out.resends.append(ResendOut(p.agent_id, a.unit_id, a.instrument_id, *hole))
                    queries.save_progress(conn, [p.to_params()])
                elif action is gaps.Action.GIVE_UP:
                    book = Book(p, gap_rows[p.agent_no])
                    book.declare_lost(*hole, reason=f"not received {(now - (p.hole_since or now)).total_seconds():.0f}"
                                      f" s after the hole appeared, {p.resend_attempts} resend request(s)")
                    book.settle(now)
                    books[p.agent_id] = book
                    log.warning("agent %s: seqs %d..%d declared lost for good", p.agent_id, *hole)
            if books:
                self._finish(conn, books, agents, now, out, set())
        return out

def split_by_agent(batch: list[Incoming], opened: list[Opening | Refused], min_records: int,
                   groups: int) -> list[tuple[list[Incoming], list[Opening | Refused]]]:
    """A big batch as `groups` batches by agent (the same agents in the same group in every
    worker), each stored in its own transaction; a small one as it is.

    Why: a transaction holds its agents' progress rows until commit, and another worker skips
    those agents (SKIP LOCKED) and defers their messages. A backlog spreads every agent's
    envelopes over all workers, so with one transaction per batch each worker's batch needs every
    agent and the workers' database phases take turns; in groups, a worker that finds one group
    busy stores another meanwhile. Small (live) batches stay one transaction: one commit each."""
    records = sum(len(o.body["records"]) for o in opened
                  if isinstance(o, Opening) and o.opened is not None)
    if groups <= 1 or records < min_records:
        return [(batch, opened)]
    parts: list[tuple[list[Incoming], list[Opening | Refused]]] = [([], []) for _ in range(groups)]
    for m, o in zip(batch, opened, strict=True):
        agent = o.body.get("agent") if isinstance(o, Opening) else o.agent_id
        part = parts[zlib.crc32(agent.encode()) % groups if isinstance(agent, str) else 0]
        part[0].append(m)
        part[1].append(o)
    return [p for p in parts if p[0]]


class Contention:
    """Whether another worker has lately held agents this one wanted: big batches are split by
    agent (split_by_agent) only then.

    Why: every transaction pays a fixed cost, mostly PostgreSQL's statement triggers on the derived
    tables (~23 ms of backend per segment upsert in a backlog drain), so four transactions per batch
    cost a lone worker ~4 us of CPU per record (20.3 against 15.6 us in all; bench/RESULTS.md,
    "ingest4") and buy it nothing. When another worker holds agents this one wants (FOR UPDATE SKIP
    LOCKED defers them), batches are split as before, for WINDOW_S after the last deferral. (In the
    drain bench two workers' whole batches never met on an agent, so they stayed whole: setting
    ingest.split_only_when_contended = false splits always.)"""

    WINDOW_S = 30.0
    """split for this long after the last deferral"""

    def __init__(self) -> None:
        self._until = float("-inf")

    def note(self, deferred: bool, now: float) -> None:
        if deferred:
            self._until = now + self.WINDOW_S

    def groups(self, configured: int, now: float) -> int:
        return configured if now < self._until else 1


class Worker:
    """The thread that owns the database connection and runs batches, retries and periodic work."""

    def __init__(
        self,
        settings: Settings,
        inbox: queue.Queue[Incoming],
        metrics: Metrics,
        *,
        name: str,
        ack_messages: Callable[[list[Incoming]], None],
        publish: Callable[..., None],
        hub: live.LiveHub | None = None,
    ) -> None:
        self.s = settings
        self.inbox = inbox
        self.metrics = metrics
        self.name = name
        self.ack_messages = ack_messages
        self.publish = publish
        self.hub = hub
        self.pipeline = Pipeline(settings, name)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"ingest-db-{name}", daemon=True)
        self._prep = threading.Thread(target=self._prepare, name=f"ingest-open-{name}", daemon=True)
        budget = settings.ingest.batch_max_records * _BYTES_PER_RECORD
        self._handoff = Handoff(max_messages=settings.ingest.batch_max_messages, max_bytes=budget,
                                capacity_messages=2 * settings.ingest.batch_max_messages, capacity_bytes=2 * budget)
        self._conn: Conn | None = None
        self._next_holes = time.monotonic() + settings.ingest.gap_check_every_s
        self._deferred: list[tuple[Incoming, Opening | Refused]] = []
        self._contention = Contention()

    def start(self) -> None:
        self._prep.start()
        self.thread.start()

    def stop(self, timeout: float = 10) -> None:
        self.stop_event.set()
        self.thread.join(timeout)
        self._prep.join(timeout)

    def _prepare(self) -> None:
        """Open each message as it arrives (the pure checks) while the database thread waits on the
        database; the database thread takes all that is opened at once (server/ingest/batching.py)."""
        while not self.stop_event.is_set():
            try:
                m = self.inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            self._handoff.put((m, open_any(m)), self.stop_event)
            self.metrics.queue_depth.set(self.inbox.qsize())

    # -- loop ------------------------------------------------------------------------------------

    def _run(self) -> None:
        self.metrics.workers.inc()
        try:
            while not self.stop_event.is_set():
                waiting, self._deferred = self._deferred, []
                ing = self.s.ingest
                taken = self._handoff.take(0.005 if waiting else 0.2, linger_s=ing.batch_max_wait_ms / 1000,
                                           gap_s=ing.batch_gap_ms / 1000)
                batch = [m for m, _ in waiting] + [m for m, _ in taken]
                opened = [o for _, o in waiting] + [o for _, o in taken]
                if batch:
                    groups = (self._contention.groups(ing.split_groups, time.monotonic())
                              if ing.split_only_when_contended else ing.split_groups)
                    for part, part_opened in split_by_agent(batch, opened, self.s.ingest.split_min_records, groups):
                        self._with_retry(lambda conn, b=part, o=part_opened: self._batch(conn, b, o))  # type: ignore[misc]
                    if len(self._deferred) == len(batch):
                        time.sleep(0.005)  # every agent busy in another worker: let it commit
                now = time.monotonic()
                if now >= self._next_holes:
                    self._next_holes = now + self.s.ingest.gap_check_every_s
                    self._with_retry(self._holes)
        finally:
            self.metrics.workers.dec()
            if self._conn is not None:
                self._conn.close()

    def _connection(self) -> Conn:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(self.s.database.dsn, connect_timeout=self.s.database.connect_timeout_s,
                                   application_name=f"jishi-ingest-{self.name}", autocommit=True)
            if self.s.database.ha:
                try:
                    ha.require_synchronous(conn)
                except psycopg.OperationalError:
                    conn.close()
                    raise
            self._conn = conn
        return self._conn

    def _with_retry(self, job: Callable[[Conn], None]) -> None:
        """Run job until it succeeds; on connection trouble back off (messages stay unacked)."""
        delay = self.s.ingest.retry_initial_s
        while not self.stop_event.is_set():
            try:
                job(self._connection())
                return
            except psycopg.OperationalError as exc:
                self.metrics.db_errors.inc()
                log.warning("database unavailable (%s); retrying in %.1f s", str(exc).strip().splitlines()[0]
                            if str(exc).strip() else type(exc).__name__, delay)
                if self._conn is not None:
                    try:
                        self._conn.close()
                    except Exception:  # pragma: no cover - closing a broken connection
                        pass
                    self._conn = None
                self.stop_event.wait(delay)
                delay = min(delay * 2, self.s.ingest.retry_max_s)

    # -- jobs ------------------------------------------------------------------------------------

    def _batch(self, conn: Conn, batch: list[Incoming], opened: list[Opening | Refused] | None = None) -> None:
        self.metrics.busy.inc()
        t0 = time.monotonic()
        try:
            try:
                out = self.pipeline.process(conn, batch, opened, skip_locked=True)
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                self.metrics.db_errors.inc()
                if len(batch) == 1:
                    self._store_error(conn, batch[0], exc)
                    return
                log.warning("batch of %d failed on the database (%s); retrying one by one", len(batch), exc)
                for m in batch:
                    self._batch(conn, [m])
                return
            self._contention.note(bool(out.deferred), time.monotonic())
            if out.deferred:
                self._deferred.extend(out.deferred)
                later = {id(m) for m, _ in out.deferred}
                batch = [m for m in batch if id(m) not in later]
            self._after_commit(batch, out)
        finally:
            self.metrics.busy.dec()
            self.metrics.batch_seconds.observe(time.monotonic() - t0)

    def _store_error(self, conn: Conn, m: Incoming, exc: Exception) -> None:
        rej = quarantine.Rejection(m.received_at, m.topic, m.topic.rsplit("/", 1)[-1], None,
                                   quarantine.STORE_ERROR, f"database refused: {exc}", None, m.payload)
        with conn.transaction():
            quarantine.record(conn, [rej], max_bytes=self.s.ingest.quarantine_max_bytes, worker=self.name)
        self.ack_messages([m])
        quarantine.account([rej], self.metrics)

    def _after_commit(self, batch: list[Incoming], out: Outcome) -> None:
        m = self.metrics
        self.ack_messages(batch)
        publish_acks(self.publish, out.acks)
        publish_resends(self.publish, out.resends)
        now = time.time()
        for msg in batch:
            m.ack_latency.observe(max(0.0, now - msg.received))
        m.acks.inc(len(out.acks))
        m.resends.inc(len(out.resends))
        m.records_stored.inc(out.records)
        m.envelopes_stored.inc(out.envelopes)
        m.duplicates.inc(out.duplicates)
        m.late_records.inc(out.late)
        m.batch_messages.observe(len(batch))
        m.batch_records.observe(out.records)
        for lag in out.lags:
            m.lag.observe(max(0.0, lag))
        for kind in out.gaps:
            m.gaps.labels(kind=kind).inc()
        quarantine.account(out.rejections, m)
        m.future_records.inc(future.account(out.future_rows))
        if self.hub is not None and out.live_rows:
            self.hub.publish(out.live_rows)

    def _holes(self, conn: Conn) -> None:
        out = self.pipeline.scan_holes(conn)
        self._after_commit([], out)


class Packer:
    """Moves old raw envelopes into packs on a thread and connection of its own, a few agents
    per transaction, so packing (xz is slow on purpose) never holds up ingest batches. One
    packer at a time across all ingest processes (advisory lock)."""

    LOCK = 0x6A69736870
    AGENTS_PER_TRANSACTION = 20

    def __init__(self, settings: Settings, stop: threading.Event) -> None:
        self.s = settings
        self.stop_event = stop
        self.thread = threading.Thread(target=self._run, name="ingest-packer", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        while not self.stop_event.wait(self.s.ingest.pack_every_s):
            try:
                agents, moved = self.run_once()
                if moved:
                    log.info("packed %d envelopes of %d agents", moved, agents)
            except psycopg.Error as exc:
                log.warning("packing failed (%s); will try again", exc)

    def run_once(self) -> tuple[int, int]:
        older = datetime.now(UTC) - timedelta(seconds=self.s.ingest.pack_after_s)
        total_agents = total = 0
        with psycopg.connect(self.s.database.dsn, autocommit=True,
                             application_name="jishi-ingest-packer") as conn:
            if not queries.try_advisory_lock(conn, self.LOCK):
                return 0, 0
            try:
                while not self.stop_event.is_set():
                    with conn.transaction():
                        agents, moved = archive.pack_old(conn, older, self.AGENTS_PER_TRANSACTION)
                    total_agents += agents
                    total += moved
                    if agents < self.AGENTS_PER_TRANSACTION:
                        break
            finally:
                queries.advisory_unlock(conn, self.LOCK)
        return total_agents, total
