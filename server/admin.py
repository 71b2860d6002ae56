"""`jishi`: the evaluation console (reports, exports, evidence, imports, grades).

Database: --dsn, else JISHI_DATABASE_URL, else the server settings (server/config.py:
JISHI_DATABASE__ADMIN_DSN, else JISHI_DATABASE__DSN, or the config file); the console's role is
jishi_admin (server/db/grants.sql). `jishi verify` needs no database and imports nothing
of the server but the offline verifier, so an evaluator can run it on their own PC.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

    from server.config import Settings
    from server.evaluation.period import Period

log = logging.getLogger("jishi")


@functools.cache
def _settings() -> Settings:
    """The process's settings, loaded once (here, at the entry point) by the commands that need them;
    `jishi verify` never does (it runs where only the core package is installed)."""
    from server.config import load

    return load()


def _dsn(args: argparse.Namespace) -> str:
    if args.dsn:
        return str(args.dsn)
    env = os.environ.get("JISHI_DATABASE_URL")
    if env:
        return env
    database = _settings().database
    return database.admin_dsn or database.dsn


def _connect(args: argparse.Namespace) -> psycopg.Connection[Any]:
    import psycopg

    return psycopg.connect(_dsn(args))


def _period(args: argparse.Namespace) -> Period:
    from server.evaluation.period import Period

    if getattr(args, "period", None):
        return Period.parse(args.period)
    if getattr(args, "year", None):
        return Period.year(args.year)
    return Period.default()


def _as_of(args: argparse.Namespace) -> datetime | None:
    from server.store.times import TZ

    text = getattr(args, "as_of", None)
    return datetime.fromisoformat(text).replace(tzinfo=TZ) if text else None


def _rubric(args: argparse.Namespace) -> Any:
    from server.evaluation import rubric

    return rubric.load(Path(args.rubric) if getattr(args, "rubric", None) else None)


def cmd_report(args: argparse.Namespace) -> int:
    from server.evaluation import privacy
    from server.evaluation.report import unit_report
    from server.exports.workbook import write_json, write_xlsx

    period = _period(args)
    started = time.perf_counter()
    from server.evaluation.report import Report
    from server.exports import closing

    with _connect(args) as conn:
        snap = closing.current(conn, period.label)
        rep: Report
        if snap is not None:  # a closed period: the signed snapshot, late records beside it
            rep = closing.unit_view(conn, snap, args.unit)
            print(f"{period.label} is closed (version {snap.version}): the report is read from its snapshot")
        else:
            rep = unit_report(
                conn, period, args.unit, _rubric(args), privacy.load(conn), as_of=_as_of(args),
                silent_days=args.silent_days,
            )  # fmt: skip
    out = Path(args.out)
    stem = f"{args.unit}-{period.label.replace('..', '_')}"
    write_xlsx(rep, out / f"{stem}.xlsx")
    write_json(rep, out / f"{stem}.json")
    print(f"{out / stem}.xlsx, .json ({time.perf_counter() - started:.2f} s)")
    for key, label, value, _ in rep.summary:
        if key in (
            "open_rate",
            "utilization_verified",
            "utilization_all",
            "sharing_verified",
            "sharing_all",
            "revenue",
            "grade",
            "subsidy",
            "closed",
            "amended_instruments",
        ):
            print(f"  {label}: {_fmt(value)}")
    return 0


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "—" if v is None else str(v)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from server.evaluation import privacy
    from server.evaluation.report import evaluate_region, region_report
    from server.exports import closing
    from server.exports.workbook import write_json, write_xlsx

    period = _period(args)
    started = time.perf_counter()
    out = Path(args.out)
    stem = f"evaluation-{period.label.replace('..', '_')}"
    with _connect(args) as conn:
        snap = closing.current(conn, period.label)
        if snap is not None:  # a closed period: the signed snapshot, late records beside it
            frozen = closing.region_view(conn, snap)
    if snap is not None:
        write_xlsx(frozen, out / f"{stem}.xlsx")
        write_json(frozen, out / f"{stem}.json")
        print(f"{out / stem}.xlsx, .json: {period.label} is closed (version {snap.version}), read from its snapshot")
        for row in frozen.as_dict()["tables"]["scores"]["rows"]:
            print(f"{row['unit_id']:<12}{float(row['score'] or 0):>8.2f}  {row['grade']}")
        return 0
    with _connect(args) as conn:
        result = evaluate_region(
            conn,
            period,
            _rubric(args),
            privacy.load(conn),
            sample_size=args.sample,
            seed=args.seed,
            as_of=_as_of(args),
            silent_days=args.silent_days,
        )
    computed = time.perf_counter() - started
    rep = region_report(result)
    write_xlsx(rep, out / f"{stem}.xlsx")
    write_json(rep, out / f"{stem}.json")
    print(f"{out / stem}.xlsx, .json (computed in {computed:.2f} s, total {time.perf_counter() - started:.2f} s)")
    print(f"{'单位':<12}{'评分':>8}  等级")
    for uid, sheet in result.sheets.items():
        print(f"{uid:<12}{sheet.total:>8.2f}  {sheet.grade}{'' if sheet.complete else '（待专家评分）'}")
    if result.calendar.note():
        print(f"注意：{result.calendar.note()}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from server.evaluation import privacy
    from server.exports import nrii

    period = _period(args)
    with _connect(args) as conn:
        files = nrii.export(
            conn, period, Path(args.out), privacy.load(conn), args.unit or None, include_names=args.include_names
        )
    print(f"{files.instruments_csv} ({files.instruments} instruments)")
    print(f"{files.services_csv} ({files.services} service records)")
    print(f"{files.json}")
    return 0


def cmd_evidence(args: argparse.Namespace) -> int:
    from server.evaluation import privacy
    from server.exports import evidence

    period = _period(args)
    out = Path(args.out) if args.out else Path(f"evidence-{args.unit}-{period.label.replace('..', '_')}.zip")
    with _connect(args) as conn:
        summary = evidence.write_bundle(conn, period, args.unit, out, privacy.load(conn), _settings().derive.params())
    print(f"{out}: {summary}")
    return 0


def cmd_envelopes(args: argparse.Namespace) -> int:
    from server.exports import evidence

    first = date.fromisoformat(args.from_)
    last = date.fromisoformat(args.to) if args.to else first
    out = Path(args.out) if args.out else Path(f"envelopes-{args.instrument}-{first}_{last}.bin")
    n = 0
    with _connect(args) as conn, out.open("wb") as f:
        for entry in evidence.full_envelopes(conn, args.instrument, first, last):
            f.write(entry)
            n += 1
    print(f"{out}: {n} signed envelopes of {args.instrument}, {first}..{last}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from server.exports.verify import verify_bundle

    result = verify_bundle(Path(args.bundle))
    print(result.text())
    return 0 if result.ok else 1


def cmd_import(args: argparse.Namespace) -> int:
    from server.registry.importer import KINDS, ImportOptions, import_file

    # `jishi import KIND FILE` or `jishi import --kind KIND FILE`
    if args.file is not None and not args.kind:
        kind, file = args.kind_or_file, args.file
    elif args.file is None and args.kind:
        kind, file = args.kind, args.kind_or_file
    else:
        raise ValueError("give the kind once and one file: jishi import KIND FILE (or --kind KIND FILE)")
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
    card_key = Path(args.card_key_file).read_bytes().strip() if args.card_key_file else None
    with _connect(args) as conn:
        conn.execute("SELECT audit_as(%s, true)", (f"cli:{getpass.getuser()}",))  # audit_log
        conn.commit()  # the importer commits (or rolls back) itself; the declaration must outlive that
        report = import_file(
            conn, kind, args.unit, Path(file), dry_run=args.dry_run, options=ImportOptions(card_key=card_key)
        )
    print(report.text())
    if args.report:
        Path(args.report).write_text(
            json.dumps(report.as_dict(), ensure_ascii=False, indent=1, default=str), encoding="utf-8"
        )
    return 0 if report.status in ("committed", "dry_run") and report.ok else 2


def cmd_registry(args: argparse.Namespace) -> int:
    """Registry listings for a unit (prices, exemptions, ...) and the importable kinds."""
    from datetime import date

    if args.what == "kinds":
        from server.registry.importer import KINDS

        for key, spec in KINDS.items():
            print(f"{key:<12}{spec.label}：{spec.description}")
        return 0
    from server.registry.queries import listing

    if not args.unit:
        raise ValueError("--unit is required")
    on = date.fromisoformat(args.on) if args.on else None
    with _connect(args) as conn:
        headers, rows = listing(conn, args.what, args.unit, on)
    if args.json:
        print(json.dumps([dict(zip(headers, r, strict=True)) for r in rows], ensure_ascii=False, indent=1, default=str))
        return 0
    table = [list(headers), *[["—" if v is None else str(v) for v in r] for r in rows]]
    widths = [max(_width(row[i]) for row in table) for i in range(len(headers))]
    for row in table:
        print("  ".join(v + " " * (w - _width(v)) for v, w in zip(row, widths, strict=True)).rstrip())
    print(f"（{len(rows)} 行）")
    return 0


def _width(text: str) -> int:
    """Columns a text takes in a terminal: CJK characters take two."""
    return sum(2 if ord(c) >= 0x1100 else 1 for c in text)


def cmd_account(args: argparse.Namespace) -> int:
    """Create a web account (the first operator cannot be made through the web itself)."""
    from server.web.auth import hash_password

    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass("password: ")
    if len(password) < 10:
        raise ValueError("the password must have at least 10 characters")
    with _connect(args) as conn:
        conn.execute("SELECT audit_as(%s, true)", (f"cli:{getpass.getuser()}",))
        row = conn.execute(
            "INSERT INTO web_accounts (login, display_name, role, unit_id, password_hash)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (login) DO NOTHING RETURNING id",
            (args.login, args.name, args.role, args.unit, hash_password(password)),
        ).fetchone()
    if row is None:
        raise ValueError(f"an account {args.login!r} exists already")
    print(f"account {args.login} ({args.role}) created")
    return 0


def cmd_org(args: argparse.Namespace) -> int:
    """`jishi org create`: an organisation, checked against the registry schema like the API's."""
    from server.registry import queries, schema

    values = schema.api_model("OrgIn", schema.ORGANISATION, "create")(
        id=args.id, name=args.name, kind=args.kind).model_dump()
    with _connect(args) as conn:
        conn.execute("SELECT audit_as(%s, true)", (f"cli:{getpass.getuser()}",))
        if queries.exists(conn, schema.ORGANISATION, "id", args.id):
            raise ValueError(f"an organisation {args.id!r} exists already")
        queries.insert_row(conn, schema.ORGANISATION, values)
    print(f"organisation {args.id} created")
    return 0


def cmd_unit(args: argparse.Namespace) -> int:
    """`jishi unit create`: a unit of an existing organisation."""
    from server.registry import queries, schema

    values = schema.api_model("UnitIn", schema.UNIT, "create")(
        id=args.id, org_id=args.org, name=args.name, region=args.region).model_dump()
    with _connect(args) as conn:
        conn.execute("SELECT audit_as(%s, true)", (f"cli:{getpass.getuser()}",))
        if queries.exists(conn, schema.UNIT, "id", args.id):
            raise ValueError(f"a unit {args.id!r} exists already")
        if not queries.exists(conn, schema.ORGANISATION, "id", args.org):
            raise LookupError(f"no organisation {args.org!r}: create it first with `jishi org create`")
        queries.insert_row(conn, schema.UNIT, values)
    print(f"unit {args.id} created")
    return 0


def cmd_enrol_token(args: argparse.Namespace) -> int:
    """`jishi enrol-token`: a one-time token for an instrument's agent, with the configuration to copy
    and the one command to run on the PC or gateway (what the instrument's enrolment page shows)."""
    from datetime import timedelta

    from server.web.services import enrol

    host = args.mqtt_host or _settings().web.mqtt_host
    port = args.mqtt_port or _settings().web.mqtt_port
    with _connect(args) as conn:
        conn.execute("SELECT audit_as(%s, true)", (f"cli:{getpass.getuser()}",))
        row = conn.execute("SELECT unit_id FROM instruments WHERE id = %s", (args.instrument,)).fetchone()
        if row is None:
            raise LookupError(f"no instrument {args.instrument!r}")
        try:
            issued = enrol.issue(conn, args.instrument, args.agent_id, None, timedelta(days=args.days))
        except enrol.AgentTaken as exc:
            state = "was revoked" if exc.revoked else f"belongs to instrument {exc.instrument}"
            raise ValueError(f"agent {exc.agent} {state}; choose another --agent-id") from None
    config = enrol.agent_config(host, port, row[0], args.instrument, issued.agent_id)
    url = args.url.rstrip("/") + "/api/v1/enrol"
    command = enrol.one_command("agent.toml", url, issued.token)
    if args.config_out:
        Path(args.config_out).write_text(config, encoding="utf-8")
    else:
        print(config)
    print(f"# agent {issued.agent_id}; the token works once, until {issued.expires_at.isoformat()}")
    print(command)
    return 0


def cmd_setup(args: argparse.Namespace) -> int:
    """`jishi setup`: the first-run checklist (what the operator's /setup page shows)."""
    from server.registry import queries

    with _connect(args) as conn:
        counts = queries.setup_counts(conn)
        gaps = queries.setup_gaps(conn)
    print("  ".join(f"{k} {v}" for k, v in counts.items()))
    for key, (n, items) in gaps.items():
        print(f"{key}: {n}" + "".join(f"\n  {r['id']}  {r['name']}" for r in items[:20]))
    return 0 if all(n == 0 for n, _ in gaps.values()) else 1


def cmd_score(args: argparse.Namespace) -> int:
    from server.evaluation import rubric

    period = _period(args)
    with _connect(args) as conn:
        rubric.record_expert_score(
            conn, _rubric(args), args.unit, period.label, args.criterion, args.points, args.note, args.expert
        )
    print(f"{args.unit} {period.label} {args.criterion} = {args.points}")
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    from server.evaluation import review
    from server.evaluation.indicators import compute

    period = _period(args)
    with _connect(args) as conn:
        if args.what == "low-use":
            items, units = review.low_use(compute(conn, period), args.threshold)
            rows: list[dict[str, Any]] = [i.as_dict() for i in items]
            print(json.dumps({"instruments": rows, "units_to_summon": units}, ensure_ascii=False, indent=1))
        else:
            cands = review.duplicate_review(
                conn, period, classification_code=args.code, specs=args.specs, location=args.location
            )
            print(json.dumps([c.as_dict() for c in cands], ensure_ascii=False, indent=1))
    return 0


def _key_file(args: argparse.Namespace) -> Path:
    """The snapshot signing key: --key-file, else the web's setting JISHI_WEB_SNAPSHOT_KEY_FILE."""
    path = getattr(args, "key_file", None) or os.environ.get("JISHI_WEB_SNAPSHOT_KEY_FILE")
    if not path:
        raise ValueError("no signing key: give --key-file or set JISHI_WEB_SNAPSHOT_KEY_FILE")
    return Path(path)


def cmd_period(args: argparse.Namespace) -> int:
    """Closed evaluation periods: keygen, close, reopen, show, verify (server/evaluation/closing.py)."""
    from server.evaluation import snapshot

    if args.action == "keygen":
        path = _key_file(args)
        key, made = snapshot.generate_key(path)
        print(f"{path}: {'new key written' if made else 'key exists, kept'}")
        print(f"public key {snapshot.public_key_b64(key)}")
        return 0
    if args.action == "verify":
        doc = json.loads(Path(args.file).read_text(encoding="utf-8"))
        expected = args.public_key
        if expected is None and args.key_file:
            expected = snapshot.public_key_b64(snapshot.load_key(Path(args.key_file)))
        result = snapshot.verify(doc, expected)
        print(result.text())
        if expected is None:
            print("note: no --public-key given: only the file's own consistency was checked")
        return 0 if result.ok else 1

    from server.evaluation import privacy
    from server.exports import closing

    period = _period(args)
    actor = f"cli:{getpass.getuser()}"
    with _connect(args) as conn:
        conn.execute("SELECT audit_as(%s, true)", (actor,))  # audit_log
        if args.action == "close":
            key = snapshot.load_key(_key_file(args))
            snap = closing.close(conn, period, _rubric(args), privacy.load(conn), _settings().derive.params(), key,
                                 actor)
            print(f"{period.label} closed: version {snap.version}, sha256 {snap.payload_sha256}")
            print(f"signed by {snap.public_key}")
        elif args.action == "reopen":
            snap = closing.reopen(conn, period.label, actor, args.reason or "")
            print(f"{period.label} reopened: version {snap.version} is no longer in force ({snap.reopen_reason})")
        else:
            for s in closing.history(conn, period.label):
                state = f"reopened {s.reopened_at} by {s.reopened_by}: {s.reopen_reason}" if s.reopened_at else ""
                print(f"{s.period} v{s.version} closed {s.closed_at} by {s.closed_by}, sha256 {s.payload_sha256}"
                      f" — {state or 'in force'}")
            in_force = closing.current(conn, period.label)
            if in_force is None:
                print(f"{period.label} is not closed")
                return 0
            if args.out:
                Path(args.out).write_text(json.dumps(in_force.export(conn), ensure_ascii=False), encoding="utf-8")
                print(f"{args.out}: signed snapshot (check it with `jishi period verify {args.out}`)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jishi", description="Jishi evaluation console")
    p.add_argument("--dsn", help="PostgreSQL DSN (default: $JISHI_DATABASE_URL or the server settings)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    def period_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--year", type=int, help="evaluation year (default: last year, Asia/Shanghai)")
        sp.add_argument("--period", help="any period: YYYY-MM-DD..YYYY-MM-DD (end exclusive)")

    sp = sub.add_parser("report", help="a unit's evaluation workbook (XLSX) and JSON")
    period_args(sp)
    sp.add_argument("--unit", required=True)
    sp.add_argument("--out", default=".")
    sp.add_argument("--rubric", help="rubric TOML (default: the sample rubric)")
    sp.add_argument("--as-of", help="judge deadlines and agent silence at this local time (default: period end)")
    sp.add_argument("--silent-days", type=int, default=7)
    sp.set_defaults(func=cmd_report)

    sp = sub.add_parser("evaluate", help="all units: score sheet, subsidies, findings, spot-check sample")
    period_args(sp)
    sp.add_argument("--out", default=".")
    sp.add_argument("--rubric")
    sp.add_argument("--sample", type=int, default=50, help="spot-check sample size")
    sp.add_argument("--seed", type=int, help="sample seed (default: the period's year)")
    sp.add_argument("--as-of")
    sp.add_argument("--silent-days", type=int, default=7)
    sp.set_defaults(func=cmd_evaluate)

    sp = sub.add_parser("export", help="exports in other layouts")
    sp.add_argument("layout", choices=["nrii"])
    period_args(sp)
    sp.add_argument("--unit", action="append", help="only these units (repeatable)")
    sp.add_argument("--out", default=".")
    sp.add_argument("--include-names", action="store_true", help="applicants' real names (default: pseudonyms)")
    sp.set_defaults(func=cmd_export)

    sp = sub.add_parser("evidence", help="bundle of signed records, their signed heads, keys and manifest for a unit")
    period_args(sp)
    sp.add_argument("--unit", required=True)
    sp.add_argument("--out")
    sp.set_defaults(func=cmd_evidence)

    sp = sub.add_parser("envelopes", help="an instrument's full signed envelopes of some days, for a dispute")
    sp.add_argument("--instrument", required=True)
    sp.add_argument("--from", dest="from_", required=True, help="first local day, YYYY-MM-DD")
    sp.add_argument("--to", help="last local day (default: the first; at most 31 days)")
    sp.add_argument("--out")
    sp.set_defaults(func=cmd_envelopes)

    sp = sub.add_parser("verify", help="recompute hours from an evidence bundle alone (no database)")
    sp.add_argument("bundle")
    sp.set_defaults(func=cmd_verify)

    from server.registry.kind_names import KIND_NAMES

    sp = sub.add_parser(
        "import",
        help="import a registry sheet (XLSX/CSV), all or nothing: " + ", ".join(KIND_NAMES),
        description="jishi import KIND FILE --unit U (or --kind KIND FILE); `jishi registry kinds` lists the kinds",
    )
    sp.add_argument("kind_or_file", metavar="KIND", help=f"one of {', '.join(KIND_NAMES)} (or give --kind)")
    sp.add_argument("file", metavar="FILE", nargs="?", help="the XLSX or CSV file")
    sp.add_argument("--kind", choices=KIND_NAMES)
    sp.add_argument("--unit", required=True)
    sp.add_argument("--card-key-file", help="the deployment's card key: hash raw card numbers (identities)")
    sp.add_argument("--dry-run", action="store_true", help="check every row, write nothing")
    sp.add_argument("--report", help="write the per-row report as JSON here")
    sp.set_defaults(func=cmd_import)

    sp = sub.add_parser("registry", help="list a unit's registry: prices, exemptions, cases, users, identities, ...")
    rsub = sp.add_subparsers(dest="registry_command", required=True)
    rl = rsub.add_parser("list", help="a unit's prices, exemptions, cases, users, identities, instruments, imports")
    rl.add_argument("what", choices=["prices", "exemptions", "cases", "users", "identities", "instruments", "imports"])
    rl.add_argument("--unit", required=True)
    rl.add_argument("--on", help="prices in force on this date (YYYY-MM-DD); default: every row")
    rl.add_argument("--json", action="store_true")
    rl.set_defaults(func=cmd_registry)
    rk = rsub.add_parser("kinds", help="the kinds of sheet `jishi import` takes")
    rk.set_defaults(func=cmd_registry, what="kinds", unit=None, on=None, json=False)

    sp = sub.add_parser("score", help="an expert's score for a criterion, with a note")
    period_args(sp)
    sp.add_argument("--unit", required=True)
    sp.add_argument("--criterion", required=True)
    sp.add_argument("--points", type=float, required=True)
    sp.add_argument("--note", required=True)
    sp.add_argument("--expert", required=True)
    sp.add_argument("--rubric")
    sp.set_defaults(func=cmd_score)

    sp = sub.add_parser("account", help="create a web account (e.g. the first platform operator)")
    sp.add_argument("login")
    sp.add_argument("--role", required=True, choices=["operator", "unit_manager", "evaluator"])
    sp.add_argument("--unit", help="the unit of a unit manager")
    sp.add_argument("--name", default="", help="display name")
    sp.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    sp.set_defaults(func=cmd_account)

    sp = sub.add_parser("org", help="create an organisation (university, institute, company, ...)")
    osub = sp.add_subparsers(dest="org_command", required=True)
    oc = osub.add_parser("create", help="a new organisation")
    oc.add_argument("id")
    oc.add_argument("--name", required=True)
    oc.add_argument("--kind", default="other", help="university, institute, enterprise, startup, hospital, ...")
    oc.set_defaults(func=cmd_org)

    sp = sub.add_parser("unit", help="create a unit (the body that is evaluated)")
    usub = sp.add_subparsers(dest="unit_command", required=True)
    uc = usub.add_parser("create", help="a new unit of an existing organisation")
    uc.add_argument("id")
    uc.add_argument("--org", required=True, help="the organisation it belongs to")
    uc.add_argument("--name", required=True)
    uc.add_argument("--region", default="")
    uc.set_defaults(func=cmd_unit)

    sp = sub.add_parser("enrol-token", help="a one-time agent enrolment token, the agent.toml and the command")
    sp.add_argument("instrument")
    sp.add_argument("--url", required=True, help="the web server's address as the PC reaches it")
    sp.add_argument("--agent-id", help="default: <instrument>-a<n>")
    sp.add_argument("--days", type=int, default=7, choices=range(1, 91), metavar="1..90")
    sp.add_argument("--mqtt-host", help="the broker as the PC reaches it (default: the web setting)")
    sp.add_argument("--mqtt-port", type=int)
    sp.add_argument("--config-out", help="write agent.toml here instead of printing it")
    sp.set_defaults(func=cmd_enrol_token)

    sp = sub.add_parser("setup", help="what is still missing before the first evaluation (exit 1 while any)")
    sp.set_defaults(func=cmd_setup)

    sub.add_parser("deploy-config", help="broker configuration generated from the registry (see --help)",
                   add_help=False)

    sp = sub.add_parser("period", help="close / reopen / show an evaluation period; verify a snapshot offline")
    sp.add_argument("action", choices=["keygen", "close", "reopen", "show", "verify"])
    sp.add_argument("file", nargs="?", help="verify: the snapshot file `period show --out` wrote")
    period_args(sp)
    sp.add_argument("--key-file", help="the server's Ed25519 signing key (default: $JISHI_WEB_SNAPSHOT_KEY_FILE)")
    sp.add_argument("--rubric", help="rubric TOML (default: the sample rubric)")
    sp.add_argument("--reason", help="reopen: why (recorded in the audit log)")
    sp.add_argument("--out", help="show: write the signed snapshot to this file")
    sp.add_argument("--public-key", help="verify: the deployment's public key (base64), as keygen printed it")
    sp.set_defaults(func=cmd_period)

    sp = sub.add_parser("review", help="low-use list or duplicate-purchase review")
    sp.add_argument("what", choices=["low-use", "duplicate"])
    period_args(sp)
    sp.add_argument("--threshold", type=float, default=0.2, help="low-use utilization threshold")
    sp.add_argument("--code", default="", help="classification code of the proposed purchase")
    sp.add_argument("--specs", default="", help="key specs (words)")
    sp.add_argument("--location", default="")
    sp.set_defaults(func=cmd_review)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == ["deploy-config"]:
        from server.deploy_config import main as deploy_main

        return deploy_main(raw[1:])
    args = build_parser().parse_args(raw)
    _settings.cache_clear()  # loaded at most once per command, never carried over from an earlier call
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        rc: int = args.func(args)
    except (LookupError, ValueError, OSError) as e:
        print(f"jishi {args.command}: {e}", file=sys.stderr)
        return 2
    return rc


if __name__ == "__main__":
    sys.exit(main())
