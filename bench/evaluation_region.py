"""Benchmark: the full evaluation of a region and one unit's report.

A region as the issue sizes it: 5,000 instruments in 60 units, one year (2025) of derived data:
3 runs a day per instrument, each inside a user session (a third of them external users), idle /
off time between runs, two-day agent-offline gaps three times a year (segments not watched), a
day in 29 arriving from the spool, and service records for 30 % of the external runs (5 % of them
claiming twice the hours). Derived rows are generated inside PostgreSQL (generate_series), not
through ingest: this measures the evaluation, not the ingest. Running segments carry their
session's identity (method, identifier), as the derive writer stores them since migration 012, and
are inserted after their sessions, as the derive writer writes them; the running-time rollup of
migration 013 is filled by its triggers on usage_segments while they are inserted: the same SQL
that fills it for the derive writer (in five statements, so each trigger works on a bounded set).
Service records come last; their statement trigger (migration 029) computes each record's window
time (record_window_usage), the same SQL that keeps it for the web's imports and the derive writer.

    python bench/evaluation_region.py            # private PostgreSQL under /tmp, ~12 M rows
    python bench/evaluation_region.py --dsn URL  # an existing, empty, migrated database
    python bench/evaluation_region.py --instruments 500 --units 6   # a quick run
    python bench/evaluation_region.py --workdir /tmp/jishi-eval --reuse  # generate once, keep, reuse
    python bench/evaluation_region.py --workdir /tmp/jishi-eval --reuse --unit-only  # just the unit
    python bench/evaluation_region.py --workdir /tmp/jishi-prov --reuse --instruments 20000 --units 240 \
        --replicate 2 --shared-buffers 4GB   # a province: a 10,000-instrument region (generated, or kept
                                             # with --reuse) copied once; shared_buffers as deployed

Every measurement is made the new way (what migration 037 keeps at write time: the classed
running-time rollup, per-record checks and their totals, service totals; one unit's record list
from record_checks with migration 040's sessions and applicant seen) and the old way (013's
per-identity rollup classed at report time, windows measured from the running segments, every record
read), interleaved; one unit's report also the way before 040 ("037": its record list from 029's
window rows grouped by session). The results are compared figure by figure (exact equality of the
region's result and report, and of the unit's report and its JSON bytes): the output says IDENTICAL
or DIFFERENT.

``--replicate N`` builds a province of N copies of a generated region in SQL (INSERT ... SELECT under
new ids, see `replicate`), minutes instead of the hours a generation of its size takes, and checks
every copied unit's figures against its original's (SAME or DIFFERENT), one copied unit's report too.

``--reuse`` skips generation when the database already holds a generated region of the requested
size (``--dsn``, or the private cluster kept in ``--workdir``); new migrations are applied first.

Targets (issue 17): region <= 2 s, one unit's report <= 0.3 s, a province (20,000 instruments)
<= 10 s; results identical to the old way's; bounded memory.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import re
import resource
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg

from server.db.migrate import apply
from server.evaluation import privacy, reconciliation, rubric
from server.evaluation.period import Period
from server.evaluation.report import RegionResult, evaluate_region, region_report, unit_report
from server.exports.workbook import write_json, write_xlsx
from server.web.services.evaluation import page_view
from sim.devstack import PostgresServer

YEAR = 2025
SEGMENT_CHUNKS = 5
PAGE_ROWS = 200  # server/web/pages/main.py MAX_ROWS: the rows of a list the unit's report page draws


def generate(dsn: str, n_instruments: int, n_units: int) -> dict[str, float]:
    """Fill an empty migrated database; returns seconds per step."""
    per_unit = n_instruments // n_units
    steps: dict[str, float] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:

        def step(name: str, sql: str) -> None:
            t = time.perf_counter()
            conn.execute(sql.encode())
            steps[name] = time.perf_counter() - t

        conn.execute("SELECT setseed(0.42)")
        step(
            "registry",
            """
            INSERT INTO organisations (id, name, kind)
              SELECT 'O' || u, '单位' || u, 'university' FROM generate_series(1, %(units)s) u
              UNION ALL SELECT 'A' || u, '附属' || u, 'hospital' FROM generate_series(1, %(units)s) u
              UNION ALL SELECT 'E' || e, '企业' || e, 'enterprise' FROM generate_series(1, 200) e;
            INSERT INTO units (id, org_id, name, region)
              SELECT 'U' || u, 'O' || u, '单位' || u, '盟市' || (u % 12) FROM generate_series(1, %(units)s) u;
            INSERT INTO unit_affiliations SELECT 'U' || u, 'A' || u FROM generate_series(1, %(units)s) u;
            -- per unit 30 internal users (10 of them from the affiliated org) and 15 external ones
            INSERT INTO platform_users (id, name, org_id)
              SELECT 'P' || u || '_' || k, '用户' || u || '_' || k,
                     CASE WHEN k <= 20 THEN 'O' || u WHEN k <= 30 THEN 'A' || u ELSE 'E' || ((u * 7 + k) % 200 + 1) END
              FROM generate_series(1, %(units)s) u, generate_series(1, 45) k;
            INSERT INTO identity_map (unit_id, method, identifier, user_id)
              SELECT 'U' || u, 'os', 'user' || k, 'P' || u || '_' || k
              FROM generate_series(1, %(units)s) u, generate_series(1, 45) k;
            INSERT INTO instruments (id, unit_id, name, classification_code, original_value, category, accepted_on,
                                     registered_on, is_open, sharing_mode, location, specs, model)
              SELECT 'I' || n, 'U' || least((n - 1) / %(per)s + 1, %(units)s), '仪器' || n,
                     '0303' || lpad(((n % 40) + 1)::text, 2, '0') || '00',
                     CASE WHEN n % 10 = 0 THEN 200000 ELSE 300000 + (n * 7919) % 5000000 END,
                     CASE WHEN n % 3 = 0 THEN '专用' ELSE '通用' END,
                     CASE WHEN n % 50 = 0 THEN date '2025-03-01' + (n % 200) ELSE date '2018-01-01' + (n % 1500) END,
                     CASE WHEN n % 17 = 0 THEN NULL
                          WHEN n % 50 = 0 THEN date '2025-03-01' + (n % 200) + 20 + (n % 40)
                          ELSE date '2018-02-01' + (n % 1500) END,
                     n % 23 <> 0, CASE WHEN n % 29 = 0 THEN '内部共享' ELSE '外部共享' END,
                     '盟市' || (n % 12), '分辨率 ' || (n % 9) || ' nm', 'M-' || (n % 300)
              FROM generate_series(1, %(n)s) n;
            INSERT INTO instrument_exemptions (instrument_id, reason, approved_by, approval_ref, approved_on)
              SELECT 'I' || n, '涉密任务', '主管部门', '批复' || n, date '2024-06-01'
              FROM generate_series(1, %(n)s) n WHERE n % 97 = 0;
            INSERT INTO agents (id, instrument_id) SELECT 'G' || n, 'I' || n FROM generate_series(1, %(n)s) n;
            INSERT INTO service_cases (unit_id, occurred_on, title, kind)
              SELECT 'U' || u, date '2025-01-01' + k * 30, '案例' || k, '企业成果'
              FROM generate_series(1, %(units)s) u, generate_series(1, 1 + u % 6) k;
        """.replace("%(units)s", str(n_units))
            .replace("%(per)s", str(per_unit))
            .replace("%(n)s", str(n_instruments)),
        )
        # Three runs a day per instrument (the instrument's service days), start 08:00 + 3h*k + jitter.
        step(
            "runs",
            f"""
            CREATE UNLOGGED TABLE bench_runs AS
            SELECT a.id AS agent_id, i.id AS instrument_id, i.unit_id, d, k,
                   (date '{YEAR}-01-01' + d)::timestamp AT TIME ZONE 'Asia/Shanghai'
                       + make_interval(hours => 8 + 3 * k, mins => (random() * 60)::int) AS start_at,
                   make_interval(mins => 30 + (random() * 80)::int) AS dur,
                   'user' || CASE WHEN random() < 1.0 / 3 THEN 31 + (random() * 14.99)::int
                                  ELSE 1 + (random() * 29.99)::int END AS ident,
                   -- agent offline two days, three times a year; spool arrival one day in 29
                   (d - (i.id_n * 37) % 120) % 120 IN (0, 1) AS offline,
                   d % 29 = i.id_n % 29 AS spooled, i.id_n
            FROM (SELECT id, unit_id, accepted_on, substr(id, 2)::int AS id_n FROM instruments) i
            JOIN agents a ON a.instrument_id = i.id
            CROSS JOIN generate_series(0, 364) d CROSS JOIN generate_series(0, 2) k
            WHERE date '{YEAR}-01-01' + d >= i.accepted_on
        """,
        )
        step(
            "sessions",
            """
            INSERT INTO user_sessions (agent_id, instrument_id, session_id, method, identifier, start_at, end_at,
                                       end_reason, start_seq)
            SELECT agent_id, instrument_id, d || '-' || k, 'os', ident, start_at - interval '5 min',
                   start_at + dur + interval '5 min', 'os_logout', d * 6 + k * 2 + 1
            FROM bench_runs
        """,
        )
        # Segments after their sessions, as the derive writer writes them; in a few statements so
        # that each one's rollup trigger (migration 013) works on a bounded transition table.
        conn.execute("SET work_mem = '256MB'")
        for chunk in range(SEGMENT_CHUNKS):
            step(
                f"segments_{chunk}",
                f"""
            INSERT INTO usage_segments (agent_id, instrument_id, start_at, end_at, state, watched, arrival,
                                        session_id, start_seq, method, identifier)
            SELECT agent_id, instrument_id, start_at, start_at + dur, 'running', NOT offline,
                   CASE WHEN spooled THEN 'spool' ELSE 'live' END, d || '-' || k, (d * 6 + k * 2 + 1), 'os', ident
            FROM bench_runs WHERE id_n % {SEGMENT_CHUNKS} = {chunk}
            UNION ALL
            SELECT agent_id, instrument_id, start_at + dur, next_start,
                   CASE WHEN k = 2 THEN 'off' ELSE 'idle' END, NOT offline,
                   CASE WHEN spooled THEN 'spool' ELSE 'live' END, NULL, (d * 6 + k * 2 + 2), NULL, NULL
            FROM (SELECT *, lead(start_at) OVER (PARTITION BY agent_id ORDER BY start_at) AS next_start
                  FROM bench_runs WHERE id_n % {SEGMENT_CHUNKS} = {chunk}) r
            WHERE next_start IS NOT NULL
        """,
            )
        step(
            "coverage",
            """
            INSERT INTO coverage (agent_id, instrument_id, start_at, end_at, status, reason)
            SELECT agent_id, instrument_id, min(start_at), max(start_at + dur),
                   CASE WHEN offline THEN 'offline' ELSE 'watching' END, CASE WHEN offline THEN 'silent' ELSE '' END
            FROM (SELECT *, sum(chg) OVER (PARTITION BY agent_id ORDER BY start_at) AS island
                  FROM (SELECT *, (offline IS DISTINCT FROM
                                   lag(offline) OVER (PARTITION BY agent_id ORDER BY start_at))::int AS chg
                        FROM bench_runs) x) y
            GROUP BY agent_id, instrument_id, island, offline
        """,
        )
        # Every trigger runs: 029's window trigger, and the audit trigger, which chains one audit
        # row per record (linear since migration 036 locks and moves the chain head once per
        # transaction; 021's per-row head update made this one statement quadratic).
        # In chunks of instruments like the segments: each statement's triggers (029, 037) take one
        # advisory lock per instrument, and a province's 20,000 in one transaction overflow the
        # lock table (max_locks_per_transaction).
        for chunk in range(SEGMENT_CHUNKS):
            step(
                f"service_records_{chunk}",
                f"""
            INSERT INTO service_records (unit_id, instrument_id, record_no, start_at, end_at, service_hours, amount,
                                         way, user_type, direction, applicant_org_name)
            SELECT unit_id, instrument_id, instrument_id || '-' || d || '-' || k,
                   date_trunc('hour', start_at), date_trunc('hour', start_at + dur) + interval '1 hour',
                   round((extract(epoch FROM dur) / 3600 * CASE WHEN random() < 0.05 THEN 2 ELSE 1 END)::numeric, 1),
                   round((extract(epoch FROM dur) / 3600 * 300)::numeric, 2), '占用', 130, 135, '企业'
            FROM bench_runs WHERE substr(ident, 5)::int > 30 AND random() < 0.3 AND id_n % {SEGMENT_CHUNKS} = {chunk};
        """,
            )
        step("drop_runs", "DROP TABLE bench_runs")
        step("analyze", "VACUUM ANALYZE")
    return steps


# Province mode (--replicate N): the region generated above, copied N - 1 times under new ids.
# Copy r renames every id by a suffix: instrument I<k> becomes I<k>-<r>, its agent G<k>-<r>, unit
# U<u> U<u>-<r> (with its organisation O<u>-<r>, affiliate A<u>-<r>, people P<u>_<k>-<r> and their
# identity map), names likewise, a service record's id <id + r * max id> (its number is unique per
# unit and stays). External users' enterprises (E<e>) are shared, as in the generator. "-" sorts below
# every digit (and is allowed in ids), so each copy's rows keep their original's order (I1 < I10 < I2
# and I1-1 < I10-1 < I2-1): the evaluation adds floats in id order, and a copied unit comes out equal
# to its original to the last bit.
# Derived rows (013's rollup, 029's windows, 037's classed rollup, record checks and totals, service
# totals) are copied, not rebuilt: each is a function of one instrument's own segments, sessions,
# coverage and records and of its unit's identity map, people and affiliations, and the copy maps
# each of these one-to-one, so rebuilt rows would be the copied ones with the ids renamed. The bench
# checks it rather than trusting it: the old way recomputes everything from the raw rows of the
# whole province and must come out IDENTICAL to the new way, and every copied unit must evaluate
# exactly as its original (ids renamed back).
# Triggers are off while copying (session_replication_role = replica, which needs a superuser): no
# audit rows are written for the copied records (the evaluation does not read the audit log).

_SUFFIXED = ("id", "instrument_id", "agent_id", "unit_id", "org_id", "user_id", "owner_unit_id", "name")
# table -> (columns with another expression: "" leaves a sequence-default id out; WHERE: the
# originals, default rows whose first suffixed key has no suffix)
_COPY: dict[str, tuple[dict[str, str], str]] = {
    "organisations": ({}, "id ~ '^[OA][0-9]+$'"),
    "units": ({}, ""),
    "unit_affiliations": ({}, ""),
    "platform_users": ({"org_id": "CASE WHEN org_id ~ '^[OA]' THEN org_id || %(sfx)s ELSE org_id END"}, ""),
    "identity_map": ({}, ""),
    "instruments": ({}, ""),
    "instrument_exemptions": ({"id": ""}, ""),
    "agents": ({}, ""),
    "service_cases": ({"id": ""}, ""),
    "user_sessions": ({}, ""),
    "usage_segments": ({}, ""),
    "coverage": ({}, ""),
    "usage_rollup": ({}, ""),
    "usage_rollup_classed": ({}, ""),
    "service_records": ({"id": "id + %(ro)s"}, "id <= %(max_id)s"),
    "record_window_usage": ({"record_id": "record_id + %(ro)s"}, "record_id <= %(max_id)s"),
    "record_checks": ({"record_id": "record_id + %(ro)s"}, ""),
    "record_totals": ({}, ""),
    "service_totals": ({}, ""),
}


def replicate(dsn: str, copies: int) -> dict[str, float]:
    """Copy the generated region `copies - 1` times under new ids (see above); seconds per step."""
    steps: dict[str, float] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        (max_id,) = conn.execute("SELECT max(id) FROM service_records").fetchone()  # type: ignore[misc]
        for r in range(1, copies):
            for table, (exprs, where) in _COPY.items():
                cols = [
                    c for (c,) in conn.execute(
                        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public'"
                        " AND table_name = %s AND is_generated = 'NEVER' ORDER BY ordinal_position",
                        (table,),
                    )
                    if exprs.get(c) != ""
                ]
                values = [exprs.get(c, f"{c} || %(sfx)s" if c in _SUFFIXED else c) for c in cols]
                if not where:
                    where = f"{next(c for c in cols if c in _SUFFIXED)} NOT LIKE '%%-%%'"
                sql = (f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(values)} FROM {table}"
                       f" WHERE {where}")
                t = time.perf_counter()
                conn.execute(sql.encode(), {"sfx": f"-{r}", "ro": r * max_id, "max_id": max_id})
                steps[f"{table}_{r}"] = time.perf_counter() - t
                print(f"  copy {r} {table}: {steps[f'{table}_{r}']:.1f} s", flush=True)
        conn.execute("SELECT setval('service_records_id_seq', (SELECT max(id) FROM service_records))")
        t = time.perf_counter()
        for table in _COPY:
            conn.execute(f"VACUUM ANALYZE {table}".encode())
        steps["analyze"] = time.perf_counter() - t
    return steps


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def already_generated(dsn: str, n_instruments: int) -> bool:
    """True if the database holds a generated region of this size (service records written)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM instruments), EXISTS (SELECT 1 FROM service_records)"
        ).fetchone()
    return row is not None and row[0] == n_instruments and bool(row[1])


def _same_region(old: RegionResult, new: RegionResult, now: datetime) -> list[str]:
    """The fields of two region results that differ (exact equality of every figure), and the
    reports built from them (same generation time)."""
    diffs = [
        f.name for f in dataclasses.fields(RegionResult)
        if f.name != "calendar" and getattr(old, f.name) != getattr(new, f.name)
    ]
    if region_report(old, now).as_dict() != region_report(new, now).as_dict():
        diffs.append("region_report")
    return diffs


@dataclasses.dataclass
class Copies:
    """A province made by `replicate`: `copies` regions of `units` units each, copy r's ids suffixed
    with -r and its service record ids offset by r * max_id."""

    copies: int
    units: int
    max_id: int
    back_user: dict[str, str] = dataclasses.field(default_factory=dict)  # a copy's person pseudonym -> original's

    @staticmethod
    def original(unit_id: str) -> str:
        return unit_id.split("-")[0]

    def canon(self, obj: Any, pseudonyms: privacy.Pseudonymizer) -> str:
        """`obj` as JSON with every copy's id renamed to its original's (originals stay as they are)."""
        text = json.dumps(_plain(obj), sort_keys=True, ensure_ascii=False, default=str)
        if not self.back_user:  # the generator's 45 people per unit
            self.back_user = {
                pseudonyms.user(f"P{u}_{k}-{r}"): pseudonyms.user(f"P{u}_{k}")
                for r in range(1, self.copies) for u in range(1, self.units + 1) for k in range(1, 46)
            }
        text = re.sub(r"U-[0-9a-f]{12}", lambda m: self.back_user.get(m.group(0), m.group(0)), text)
        text = re.sub(r"((?<![0-9A-Za-z])[IGUOAP]|单位|附属|用户|仪器)([0-9][0-9_]*)-[1-9][0-9]*", r"\1\2", text)
        return re.sub(r'"(record_id|id)": ([0-9]+)',
                      lambda m: f'"{m.group(1)}": {(int(m.group(2)) - 1) % self.max_id + 1}', text)


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def _copies_as_originals(result: RegionResult, prov: Copies, pseudonyms: privacy.Pseudonymizer) -> list[str]:
    """The copied units whose figures (indicators, reconciliation, score sheet, subsidy, findings,
    revenue at risk, instruments) differ from their original's, ids renamed back."""
    by_unit: dict[str, list[Any]] = {}
    for uid in result.sheets:
        by_unit[uid] = [
            result.evaluation.units.get(uid), result.reconciliation.units.get(uid), result.sheets[uid],
            result.subsidies.get(uid), [f for f in result.findings if f.unit_id == uid],
            [a for a in result.at_risk if a.unit_id == uid], result.evaluation.unit_instruments(uid),
        ]
    return [
        uid for uid in sorted(by_unit) if prov.original(uid) != uid
        and prov.canon(by_unit[uid], pseudonyms) != prov.canon(by_unit[prov.original(uid)], pseudonyms)
    ]


@contextlib.contextmanager
def _records_from_windows(on: bool) -> Iterator[None]:
    """One unit's record list read the way before migration 040 (window rows grouped by session)."""
    kept = reconciliation.RECORDS
    if on:
        reconciliation.RECORDS = reconciliation.RECORDS_FROM_WINDOWS
    try:
        yield
    finally:
        reconciliation.RECORDS = kept


def run(dsn: str, out: Path, unit: str, *, unit_only: bool = False, prov: Copies | None = None) -> dict[str, float]:
    """Each measurement twice, the new way (windows kept at derive time, migration 029) and the old
    way (measured from the segments) interleaved, the first of each warming the cache; the results
    of both compared figure by figure. A province (`prov`): the old way once (it is slow), the new
    way a third time (warm), every copied unit compared with its original, and one copied unit's
    report with its original's."""
    period = Period.year(YEAR)
    rb = rubric.load()
    figures: dict[str, float] = {}
    now = datetime(2026, 1, 10, tzinfo=UTC)
    with psycopg.connect(dsn) as conn:
        counts = {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
            for t in ("usage_segments", "user_sessions", "coverage", "service_records", "instruments",
                      "usage_rollup", "record_window_usage", "usage_rollup_classed", "record_checks",
                      "record_totals", "service_totals")
        }
        print("rows:", counts)
        print("load average at start", os.getloadavg(),
              "shared_buffers", conn.execute("SHOW shared_buffers").fetchone()[0])  # type: ignore[index]
        pseudonyms = privacy.load(conn)
        conn.commit()
        results: dict[str, RegionResult] = {}
        # a province: new, old (once, it is slow), new after it (the old way's 5 GB evicted the new
        # way's pages), new again (warm, as a server evaluating its region repeatedly)
        for attempt in range(0 if unit_only else 2 if prov is None else 3):
            for way, precomputed in (("new", True), ("old", False)):
                if prov is not None and attempt and way == "old":
                    continue
                t = time.perf_counter()
                results[way] = evaluate_region(conn, period, rb, pseudonyms, precomputed=precomputed)
                figures[f"evaluate_region_{way}_{attempt}"] = time.perf_counter() - t
                print(f"  evaluate_region_{way}_{attempt}: {figures[f'evaluate_region_{way}_{attempt}']:.2f}")
        if results:
            diffs = _same_region(results["old"], results["new"], now)
            print("region, old vs new:", "IDENTICAL" if not diffs else f"DIFFERENT in {diffs}")
            # which of migration 037's tables each compared field comes from
            print("  evaluation (running/external hours: usage_rollup_classed; revenue: service_totals),"
                  " reconciliation (totals: record_checks + record_totals; fees: service_totals),"
                  " sheets, subsidies, findings, sample, revenue at risk, region report")
            if prov is not None:
                t = time.perf_counter()
                bad = _copies_as_originals(results["new"], prov, pseudonyms)
                print(f"copied units vs their originals ({len(results['new'].sheets) - prov.units} compared,"
                      f" {time.perf_counter() - t:.1f} s):", "SAME" if not bad else f"DIFFERENT: {bad}")
            t = time.perf_counter()
            rep = region_report(results["new"])
            write_xlsx(rep, out / "evaluation.xlsx")
            write_json(rep, out / "evaluation.json")
            figures["region_report_write"] = time.perf_counter() - t
        reports: dict[str, Any] = {}
        for attempt in range(6):
            # "037": the record list from the window rows (the way before migration 040); the order
            # rotates, so that no way always follows the old way's reading of 1 GB of segments
            # "page": the report as the unit's page builds it (report6: the long lists' first
            # PAGE_ROWS rows, the figures summed in SQL); compared with "new" as the page draws both
            ways = [("new", True), ("037", True), ("old", False), ("page", True)]
            for way, precomputed in ways[attempt % 4:] + ways[:attempt % 4]:
                t = time.perf_counter()
                with _records_from_windows(way == "037"):
                    urep = unit_report(conn, period, unit, rb, pseudonyms, now=now, precomputed=precomputed,
                                       rows=PAGE_ROWS if way == "page" else None)
                figures[f"unit_report_only_{way}_{attempt}"] = time.perf_counter() - t
                if way == "page":  # no workbook: the XLSX and the JSON are built from the full report
                    print(f"  unit_report_only_page_{attempt}: {figures[f'unit_report_only_page_{attempt}']:.2f}")
                    reports[way] = urep
                    continue
                write_xlsx(urep, out / f"{unit}-{way}.xlsx")
                write_json(urep, out / f"{unit}-{way}.json")
                figures[f"unit_report_{way}_{attempt}"] = time.perf_counter() - t
                print(f"  unit_report_{way}_{attempt}: {figures[f'unit_report_{way}_{attempt}']:.2f}"
                      f" (report only {figures[f'unit_report_only_{way}_{attempt}']:.2f})")
                reports[way] = urep
        for way in ("037", "new"):
            same = reports["old"] == reports[way] and (out / f"{unit}-old.json").read_bytes() == (
                out / f"{unit}-{way}.json"
            ).read_bytes()
            print(f"unit {unit}, old vs {way}:", "IDENTICAL" if same else "DIFFERENT")
        same = page_view(reports["page"], PAGE_ROWS) == page_view(reports["new"], PAGE_ROWS) and (
            reports["page"].summary, reports["page"].data) == (reports["new"].summary, reports["new"].data)
        print(f"unit {unit}, new vs page (as the page draws them; summary and figures):",
              "IDENTICAL" if same else "DIFFERENT")
        if prov is not None:
            copy = f"{unit}-{prov.copies - 1}"
            for attempt in range(2):
                t = time.perf_counter()
                crep = unit_report(conn, period, copy, rb, pseudonyms, now=now)
                figures[f"unit_report_only_copy_{attempt}"] = time.perf_counter() - t
                print(f"  unit_report_only {copy} (copy of {unit}), new way:"
                      f" {figures[f'unit_report_only_copy_{attempt}']:.2f}")
            same = prov.canon(crep.as_dict(), pseudonyms) == prov.canon(reports["new"].as_dict(), pseudonyms)
            print(f"unit {copy} vs its original {unit}, ids renamed:", "SAME" if same else "DIFFERENT")
        if results:
            result = results["new"]
            grades: dict[str, int] = {}
            for s in result.sheets.values():
                grades[s.grade] = grades.get(s.grade, 0) + 1
            checked = sum(u.records for u in result.reconciliation.units.values())
            overclaimed = sum(u.overclaimed_records for u in result.reconciliation.units.values())
            print("grades:", grades, "service records checked:", checked, "overclaimed:", overclaimed)
    figures["peak_rss_mb"] = peak_rss_mb()
    return figures


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn")
    ap.add_argument("--instruments", type=int, default=5000)
    ap.add_argument("--units", type=int, default=60)
    ap.add_argument("--keep", action="store_true", help="keep the private database directory")
    ap.add_argument("--workdir", type=Path, help="private cluster here (created if missing, kept)")
    ap.add_argument("--reuse", action="store_true", help="skip generation if the database holds the region")
    ap.add_argument("--unit-only", action="store_true", help="measure only one unit's report")
    ap.add_argument("--unit", default="U1")
    ap.add_argument("--shared-buffers", help="e.g. 4GB (deploy/postgresql.conf.d/jishi.conf); default the"
                    " private cluster's 256MB, which a province's year rows outgrow")
    ap.add_argument("--replicate", type=int, default=1, metavar="N",
                    help="a province: generate a region of instruments/N (or --reuse one) and copy it N - 1 times")
    args = ap.parse_args()
    if args.workdir is not None:
        workdir = args.workdir.absolute()
        workdir.mkdir(parents=True, exist_ok=True)
        args.keep = True
    else:
        workdir = Path(tempfile.mkdtemp(prefix="jishi-bench-"))
    workdir.chmod(0o755)
    server = None
    try:
        if args.dsn:
            dsn = args.dsn
        else:
            server = PostgresServer(workdir / "pg", fast=True).start()
            with psycopg.connect(server.dsn(), autocommit=True) as conn:  # kept in postgresql.auto.conf
                if args.shared_buffers:
                    conn.execute(f"ALTER SYSTEM SET shared_buffers = '{args.shared_buffers}'".encode())
                else:
                    conn.execute("ALTER SYSTEM RESET shared_buffers")
            server.stop()
            server.start()
            dsn = server.create_database("bench")
        apply(dsn)  # an up-to-date database is left as it is
        copies = args.replicate
        if args.reuse and already_generated(dsn, args.instruments):
            print("reusing the generated region in", dsn)
        else:
            t = time.perf_counter()
            if not (copies > 1 and args.reuse and already_generated(dsn, args.instruments // copies)):
                steps = generate(dsn, args.instruments // copies, args.units // copies)
                print(f"generated in {time.perf_counter() - t:.1f} s:", {k: round(v, 1) for k, v in steps.items()})
            if copies > 1:
                t = time.perf_counter()
                steps = replicate(dsn, copies)
                print(f"replicated {copies}x in {time.perf_counter() - t:.1f} s:",
                      {k: round(v, 1) for k, v in steps.items()})
        prov = None
        if copies > 1:
            with psycopg.connect(dsn) as conn:
                (max_id,) = conn.execute("SELECT max(id) FROM service_records").fetchone()  # type: ignore[misc]
            prov = Copies(copies, args.units // copies, max_id // copies)
        figures = run(dsn, workdir, args.unit, unit_only=args.unit_only, prov=prov)
        print(f"{date.today()} {platform.node()} {platform.processor() or platform.machine()}"
              f" load average {os.getloadavg()}")
        for k, v in figures.items():
            print(f"  {k}: {v:.2f}")
    finally:
        if server is not None:
            server.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
