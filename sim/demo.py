"""`make demo`: the whole system on this machine, with a year and more of history and live agents.

    .venv/bin/python -m sim.demo [--web-port 8080] [--history-from 2025-01-01] [--fresh]

What runs (everything under ./var/demo, reused by the next run):
- a private PostgreSQL + TimescaleDB and a Mosquitto broker (sim/devstack.py);
- the registry of two units (organisations, affiliations, instruments with national platform
  fields, price lists, people and identity maps, service records, demo logins), an Ed25519 key per
  agent, enrolled;
- `jishi-server ingest` and the web server, as child processes;
- on the first run, the history since 1 January of last year (so the evaluation year is whole):
  the seeded usage model, turned into the records each instrument's agent would have made, signed
  with that agent's key and published through the broker into the ingest, as an agent with a
  backlog does (bench/RESULTS.md, "Demo backfill": this is as fast as the ingest's batch path);
- a real `jishi-agent run` per instrument (own key, spool and config under var/demo/agents/<id>/)
  reading simulated devices: Modbus RTU power meters and serial status ports on pseudo-terminals,
  fake control software with data files; simulated users check in through the agents;
- except for the instruments of one unit (imu) that can be watched from outside (power meters,
  serial status ports): ONE gateway agent process watches them all (agent/README.md, "Gateway
  mode"), their power meters on one simulated RS-485 bus (one pseudo-terminal, one Modbus address
  each); each instrument keeps its own key, spool, chain and MQTT identity (var/demo/agents/<id>/);
- a local robot receiver (企业微信 / 钉钉 stand-in, its messages in var/demo/logs/robot-messages.jsonl)
  and `jishi-server alerts`: stopping an agent ends as an alert there about a minute later;
- a booking by an outside user on one instrument, starting a few seconds after the agents: the
  simulated user checks in with the booking code and runs the instrument inside the slot, and
  after the slot the alerts job drafts the service record (measured hours x the price-list fee),
  shown on /bookings;
- Ctrl-C stops the agents first (clean stop records), then the servers, then the databases.

Every child runs in its own process group, so a Ctrl-C in the terminal reaches only this process,
which then stops them in order: SIGTERM, and SIGKILL for whatever has not ended after a grace time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.pool
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import psycopg

from protocols import topics
from protocols.signing import generate as new_key
from protocols.signing import key_id, load_private, public_to_b64, save_private
from server.signals import stop_on_signals
from sim import backfill, demo_alerts, seed
from sim.catalog import INSTRUMENTS, ORGS, PEOPLE, UNITS
from sim.devstack import MosquittoServer, PostgresServer, free_port, role_dsn, service_dir
from sim.history import VirtualAgent, envelopes, profile
from sim.model import HOUR, TZ, InstrumentSpec, Person, Truth, generate, ms, write_truth

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "jishi-demo"
DB = "jishi"
SEED = 7
GATEWAY_UNIT = "imu"  # its instruments that can be watched from outside go through one gateway agent
GATEWAY_DETECTION = ("power", "serial", "power_serial")  # a gateway cannot see a PC's processes or files
BOOKING_ORG = "org-yili"  # an enterprise: an outside user of either unit


def agent_id(spec: InstrumentSpec) -> str:
    return f"{spec.id}-a1"


def gateway_id(unit: str) -> str:
    return f"gw-{unit}"


def through_gateway(specs: list[InstrumentSpec]) -> list[InstrumentSpec]:
    """The instruments the gateway watches (the rest run an agent each)."""
    return [s for s in specs if s.unit_id == GATEWAY_UNIT and s.detection in GATEWAY_DETECTION]


OIDC_CLIENT = ("jishi-demo", "jishi-demo-secret")
OIDC_PASSWORD = "demo-idp"


def oidc_demo_people() -> list[tuple[str, Person]]:
    """The demo OIDC provider's users mapped to demo people: a member of IMU and an outside user
    of an enterprise; the provider's `newcomer` maps to nobody (the self-registration)."""
    inside = next(p for p in PEOPLE if p.mapped and not p.external and p.unit_id == "imu")
    outside = next(p for p in PEOPLE if p.mapped and p.external)
    return [("teacher", inside), ("visitor", outside)]


def start_oidc_provider(children: Children, port: int, web_url: str) -> dict[str, Any] | None:
    """Start the demo's OpenID Connect provider (node oidc-provider, sim/oidc) without waiting
    for it (the web reads its discovery document at the first login); None without node."""
    from sim import oidc_provider

    why = oidc_provider.available()
    if why:
        say(f"no university login in this demo: {why}")
        return None
    users: dict[str, dict[str, Any]] = {
        login: {"password": OIDC_PASSWORD, "claims": {"name": p.name, "email": f"{login}@example.edu.cn"}}
        for login, p in oidc_demo_people()}
    users["newcomer"] = {"password": OIDC_PASSWORD, "claims": {"name": "新用户", "email": "newcomer@example.com"}}
    issuer = f"http://127.0.0.1:{port}"
    cfg = {"issuer": issuer, "port": port, "host": "127.0.0.1", "users": users,
           "clients": [{"client_id": OIDC_CLIENT[0], "client_secret": OIDC_CLIENT[1],
                        "redirect_uris": [f"{web_url}/login/sso/demo/callback"]}]}
    children.start("oidc-provider", ["node", str(oidc_provider.SCRIPT)], cwd=oidc_provider.HERE,
                   env=_env() | {"JISHI_OIDC_CONFIG": json.dumps(cfg), "NODE_ENV": "production"})
    return {"id": "demo", "kind": "oidc", "label_zh": "统一身份认证登录（演示）", "label_en": "University login (demo)",
            "issuer": issuer, "client_id": OIDC_CLIENT[0], "client_secret": OIDC_CLIENT[1],
            "subject_claim": "sub"}


def map_oidc_people(dsn: str) -> None:
    """identity_map rows `login` `demo:<login>` for the provider's demo users (idempotent)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT audit_as('demo-seed', true)")
        for login, p in oidc_demo_people():
            conn.execute("INSERT INTO identity_map (unit_id, method, identifier, user_id) VALUES (%s, 'login', %s, %s)"
                         " ON CONFLICT DO NOTHING", (p.unit_id, f"demo:{login}", p.id))


def say(msg: str) -> None:
    print(f"[demo {datetime.now():%H:%M:%S}] {msg}", flush=True)


# ---- child processes ------------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]


class Children:
    """Child processes, each in its own process group (a terminal's Ctrl-C reaches only us)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.items: list[Child] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> Child:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=env or _env(), cwd=cwd, start_new_session=True)
        child = Child(name, proc)
        self.items.append(child)
        return child

    def dead(self) -> list[Child]:
        return [c for c in self.items if c.proc.poll() is not None]

    def stop(self, names: list[str] | None = None, grace: float = 15.0) -> None:
        """SIGTERM to each group, wait up to `grace`, then SIGKILL what is left."""
        chosen = [c for c in self.items if names is None or c.name in names]
        for c in chosen:
            _signal_group(c.proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for c in chosen:
            try:
                c.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                say(f"{c.name} did not stop within {grace:.0f} s: killing it")
                _signal_group(c.proc, signal.SIGKILL)
                c.proc.wait(10)
            _signal_group(c.proc, signal.SIGKILL)  # stragglers of its group (e.g. grandchildren)
        self.items = [c for c in self.items if c not in chosen]


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def with_server_key(toml: str, server_key: str) -> str:
    """An agent (or gateway) configuration that takes check-ins by phone: the server's command key in
    every [identity] table (agent/README.md, "Check-in by phone")."""
    return re.sub(r"^(\[(?:instrument\.)?identity\])$", lambda m: f'{m.group(1)}\nserver_key = "{server_key}"', toml,
                  flags=re.M)


def _phone_checkin(dsn: str, specs: list[InstrumentSpec], sso: bool) -> tuple[str, str, str] | None:
    """A label code for the first instrument watched by a power meter only, and how to log in on the
    phone: the demo OIDC provider's outside user (`visitor`, a person of another organisation) when
    the university login runs, else a staff login of another unit made to name such a person."""
    power = [s for s in specs if s.detection == "power"]
    if not power:
        return None
    spec = power[0]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT audit_as('sim-demo', true)")
        if sso:
            how = f"through 统一身份认证登录（演示） as visitor (password {OIDC_PASSWORD})"
        else:
            person = next((p for p in PEOPLE if p.unit_id != spec.unit_id and p.mapped), None)
            login = next((lg for lg in seed.DEMO_LOGINS if lg.unit_id is not None and lg.unit_id != spec.unit_id),
                         None)
            if person is None or login is None:
                return None
            conn.execute("UPDATE web_accounts SET person_id = %s WHERE login = %s AND person_id IS NULL",
                         (person.id, login.login))
            how = f"as {login.login} (password {PASSWORD})"
        row = conn.execute("SELECT code FROM checkin_codes WHERE instrument_id = %s", (spec.id,)).fetchone()
        if row is None:
            code = "".join(random.SystemRandom().choice("23456789ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(8))
            conn.execute("INSERT INTO checkin_codes (instrument_id, code, created_at, created_by)"
                         " VALUES (%s, %s, now(), 'sim-demo')", (spec.id, code))
        else:
            code = row[0]
    return spec.id, code, how


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JISHI_", "PG"))}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextmanager
def sigint_ignored() -> Iterator[None]:
    """Children started inside inherit SIGINT ignored (Python then installs no KeyboardInterrupt)."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _own_group(broker: MosquittoServer) -> None:
    """Start the broker in a process group of its own: Mosquitto handles SIGINT itself, and a
    Ctrl-C must not take the broker away before the agents have sent their clean stops.
    (devstack has no option for it; this wraps the extra Popen arguments it computes.)"""
    runas = broker._as
    base = runas.kwargs
    runas.kwargs = lambda: {**base(), "start_new_session": True}  # type: ignore[method-assign]


def _port(preferred: int) -> int:
    """`preferred` if it can be listened on (as the servers do, with SO_REUSEADDR), else a free one."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return free_port()


# ---- history --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    spec: InstrumentSpec
    key_file: Path
    t0: int
    t1: int
    sent: int


@dataclass
class Made:
    agent: str
    spec: InstrumentSpec
    truth: Truth
    envelopes: list[bytes]
    last_seq: int
    last_hash: str
    last_boot: int
    last_t: int


def make_history(job: Job) -> Made:
    """One instrument's truth and its agent's signed envelopes (runs in a worker process)."""
    spec = job.spec
    truth = generate(spec, PEOPLE, job.t0, job.t1, SEED)
    aid = agent_id(spec)
    va = VirtualAgent(aid, spec, truth, profile(spec), seed=SEED)
    recs = va.run()
    key = load_private(job.key_file)
    envs = list(envelopes(aid, spec.unit_id, spec.id, key, recs, job.sent))
    last = recs[-1]
    return Made(aid, spec, truth, envs, last["seq"], va.prev, last["boot"], last["t"])


def seed_spool(data_dir: Path, agent: str, next_seq: int, last_hash: str, boot: int, last_t: int) -> None:
    """The agent's spool as it would be after its history was sent and acknowledged, so the live
    agent continues the same chain (seq, prev, boot) instead of starting a new one."""
    from agent.spool import Spool

    sp = Spool(data_dir / "spool.db", agent)
    try:
        for k, v in (("next_seq", next_seq), ("last_hash", last_hash), ("boot", boot), ("acked", next_seq - 1),
                     ("last_t", last_t), ("config_digest", "sim")):
            sp.set_meta(k, v)
    finally:
        sp.close()


def _history_worker_signals() -> None:
    """The worker leaves Ctrl-C to the demo, and dies on SIGTERM: it inherits the demo's SIGTERM
    handler, which only sets a flag, so a worker that `Pool.terminate` reached while it was still
    alive survived, and the pool's join waited for it forever (the first run hung after publishing)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def history_pool() -> Iterator[multiprocessing.pool.Pool]:
    """One forked worker that generates histories; closed and joined when the block ends, terminated
    when it raises."""
    pool = multiprocessing.get_context("fork").Pool(1, initializer=_history_worker_signals)
    try:
        yield pool
    except BaseException:
        pool.terminate()
        pool.join()
        raise
    pool.close()
    pool.join()


def backfill_history(dsn: str, broker: MosquittoServer, agents_dir: Path, specs: list[InstrumentSpec], t0: int,
                     t1: int, stop: threading.Event) -> list[Made]:
    """Generate (one worker process) and publish (this process) instrument by instrument, while the
    ingest stores; return when everything is stored."""
    sent = int(time.time() * 1000)
    jobs = [Job(s, agents_dir / agent_id(s) / "agent.key", t0, t1, sent) for s in specs]
    expected: dict[str, int] = {}
    made: list[Made] = []
    started = time.monotonic()
    with history_pool() as pool:
        for m in pool.imap(make_history, jobs):
            if stop.is_set():
                raise KeyboardInterrupt
            top = topics.topic(m.spec.unit_id, m.spec.id, topics.Kind.REC)
            backfill.publish(broker.host, broker.port, ((top, e) for e in m.envelopes))
            expected[m.agent] = m.last_seq
            say(f"  {m.spec.id}: {m.last_seq:,} records in {len(m.envelopes)} envelopes published "
                f"({m.truth.running_ms() / HOUR:,.0f} running hours in truth)")
            m.envelopes = []
            made.append(m)

    last_said = [time.monotonic()]

    def progress(done: int, total: int) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        if time.monotonic() - last_said[0] >= 10:
            last_said[0] = time.monotonic()
            say(f"  ingest: {done:,} / {total:,} records stored")

    backfill.wait_stored(dsn, expected, timeout=3600, progress=progress)
    total = sum(expected.values())
    secs = time.monotonic() - started
    say(f"history stored: {total:,} records of {len(made)} agents in {secs:.0f} s ({total / secs:,.0f} records/s)")
    return made


# ---- the run ------------------------------------------------------------------------------------


_stop = threading.Event()


def _announce_stop(signum: int) -> None:
    if not _stop.is_set():
        print(flush=True)
        say("stopping (Ctrl-C again is ignored; everything is being stopped in order)")


def _wait_http(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not _stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


def _status(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        online, total = conn.execute(
            "SELECT count(*) FILTER (WHERE online AND last_received_at > now() - interval '5 minutes'), count(*)"
            " FROM live_state").fetchone() or (0, 0)
        running = conn.execute("SELECT count(*) FROM live_state WHERE state = 'running' AND online").fetchone()
        recs = conn.execute("SELECT coalesce(sum(watermark), 0) FROM agent_progress").fetchone()
    return (f"agents online {online}/{total}, running now {running[0] if running else 0}, "
            f"records stored {int(recs[0]) if recs else 0:,}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sim.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--var", type=Path, default=ROOT / "var" / "demo", help="where everything is kept")
    ap.add_argument("--web-port", type=int, default=8080)
    ap.add_argument("--history-from", type=date.fromisoformat,
                    help="first day of the backfilled history (default: 1 January of last year)")
    ap.add_argument("--fresh", action="store_true", help="forget the previous run's data and start over")
    ap.add_argument("--speed", type=float, default=1.0, help="live simulation speed factor")
    ap.add_argument("--instruments", type=int, default=len(INSTRUMENTS),
                    help=f"how many of the {len(INSTRUMENTS)} simulated instruments (first run only)")
    ap.add_argument("--book", default="imu-tem", help="the instrument an outside user books at every start")
    ap.add_argument("--booking-minutes", type=float, default=3.0, help="length of that booking's slot")
    ap.add_argument("--settle-minutes", type=float, default=1.0,
                    help="the alerts job settles a booking this long after its slot")
    args = ap.parse_args(argv)
    stop_on_signals(_stop, _announce_stop)
    var: Path = args.var.absolute()
    state_file = var / "state.json"
    state: dict[str, Any] = json.loads(state_file.read_text()) if state_file.exists() and not args.fresh else {}
    first = not state.get("history_done")
    if first:
        state["instruments"] = [s.id for s in INSTRUMENTS[:max(1, args.instruments)]]
    specs = [s for s in INSTRUMENTS if s.id in state.get("instruments", [])] or list(INSTRUMENTS)
    if first:
        for sub in ("mqtt", "agents", "truth", "logs", "state.json"):
            p = var / sub
            if p.is_symlink():  # a service directory kept elsewhere (devstack.service_dir)
                shutil.rmtree(p.resolve(), ignore_errors=True)
                p.unlink()
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    var.mkdir(parents=True, exist_ok=True)
    var.chmod(0o755)
    children = Children(var / "logs")
    # The services run as their own users, who may not reach a checkout in root's mode-700 home.
    pg = PostgresServer(service_dir(var / "pg", "postgres"), _port(state.get("pg_port", 55432)))
    broker = MosquittoServer(service_dir(var / "mqtt", "mosquitto"), _port(state.get("mqtt_port", 18830)))
    _own_group(broker)
    devices: list[Any] = []
    bus: Any = None
    driver: Any = None
    truthlog: Any = None
    try:
        say(f"PostgreSQL + TimescaleDB on 127.0.0.1:{pg.port} ({pg.datadir})")
        pg.start()
        say(f"Mosquitto on 127.0.0.1:{broker.port}")
        broker.start()
        from server.db.migrate import apply

        if first:
            pg.drop_database(DB)
        dsn = pg.create_database(DB)
        applied = apply(dsn)
        if applied:
            say(f"migrations applied: {', '.join(applied)}")
        web_port = _port(state.get("web_port", args.web_port))
        state.update(pg_port=pg.port, mqtt_port=broker.port, web_port=web_port)
        agents_dir = var / "agents"
        if first:
            say(f"seeding the registry: 2 units, organisations, {len(specs)} instruments, people, prices, logins,"
                " agent keys")
            keys = []
            for spec in specs:
                d = agents_dir / agent_id(spec)
                d.mkdir(parents=True, exist_ok=True)
                key = new_key()
                save_private(key, d / "agent.key")
                keys.append((agent_id(spec), spec.id, key_id(key), public_to_b64(key)))
            with psycopg.connect(dsn, autocommit=True) as conn:
                seed.registry(conn, UNITS, ORGS, PEOPLE, specs)
                seed.logins(conn, PASSWORD)
                seed.enrol(conn, keys)
                seed.service_cases(conn)
        ingest_cfg = var / "ingest.toml"
        ingest_cfg.write_text(
            f'log_level = "INFO"\n[database]\ndsn = "{role_dsn(dsn, "jishi_ingest")}"\nowner_dsn = "{dsn}"\n'
            f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nclient_id = "jishi-demo-ingest"\n'
            "[metrics]\nport = 0\n")
        children.start("ingest", [sys.executable, "-m", "server.cli", "--config", str(ingest_cfg), "ingest"])
        # the server's command key: signs phone check-ins (SPEC §9.5); every demo agent is given its public half
        command_key = var / "server-command.key"
        if not command_key.exists():
            save_private(new_key(), command_key)
        server_key = public_to_b64(load_private(command_key))
        web_env = _env() | {"JISHI_WEB_MQTT_HOST": broker.host, "JISHI_WEB_MQTT_PORT": str(broker.port),
                            "JISHI_WEB_COMMAND_KEY_FILE": str(command_key),
                            "JISHI_WEB_COMMAND_MQTT_HOST": broker.host,
                            "JISHI_WEB_COMMAND_MQTT_PORT": str(broker.port)}
        oidc_port = _port(state.get("oidc_port", 8090))
        state["oidc_port"] = oidc_port
        sso = start_oidc_provider(children, oidc_port, f"http://127.0.0.1:{web_port}")
        if sso is not None:
            map_oidc_people(dsn)
            web_env["JISHI_WEB__LOGIN_PROVIDERS"] = json.dumps([sso])
        # each process connects as its own database role (server/db/grants.sql); the owner only migrates
        # and seeds
        children.start("web", [sys.executable, "-m", "server.web.serve", "--dsn", role_dsn(dsn, "jishi_web"),
                               "--port", str(web_port),
                               "--insecure-cookies", "--log-level", "warning"], env=web_env)
        url = f"http://127.0.0.1:{web_port}"
        if not _wait_http(f"{url}/healthz", 60) and not _stop.is_set():
            raise RuntimeError(f"the web server did not answer on {url}; see {var / 'logs' / 'web.log'}")
        say(f"ingest and web running (web at {url})")
        robot_port = _port(state.get("robot_port", 8099))
        state["robot_port"] = robot_port
        robot_log = var / "logs" / "robot-messages.jsonl"
        robots = RobotLog(robot_log)
        children.start("robot-receiver", demo_alerts.receiver_argv(robot_port, str(robot_log)))
        demo_alerts.configure(dsn, f"http://127.0.0.1:{robot_port}")
        say(f"local robot receiver (企业微信 / 钉钉 stand-in) on 127.0.0.1:{robot_port}; messages in {robot_log}")

        if first:
            today = datetime.now(TZ).date()
            start_day = args.history_from or date(today.year - 1, 1, 1)
            t0 = ms(datetime(start_day.year, start_day.month, start_day.day, tzinfo=TZ))
            t1 = int(time.time() * 1000) - 60_000
            say(f"backfilling history {start_day} .. now for {len(specs)} instruments "
                "(first run only; a few minutes)")
            made = backfill_history(dsn, broker, agents_dir, specs, t0, t1, _stop)
            for m in made:
                seed_spool(agents_dir / m.agent / "data", m.agent, m.last_seq + 1, m.last_hash, m.last_boot, m.last_t)
            with psycopg.connect(dsn, autocommit=True) as conn:
                n = seed.service_records(conn, [m.truth for m in made], PEOPLE, ORGS, seed=SEED, until=t1)
            paths = write_truth([m.truth for m in made], var / "truth" / "history")
            say(f"{n} self-reported service records; ground truth in {paths[0].parent}")
            state["history_done"] = True
            state["history"] = {"from": start_day.isoformat(), "to_ms": t1}
            state_file.write_text(json.dumps(state, indent=1))
        else:
            state_file.write_text(json.dumps(state, indent=1))
            say("reusing the data of the previous run (history already stored)")
            _repair_spools(dsn, agents_dir, specs)

        from sim.live import BookedSlot, Devices, Driver, GatewayMember, Truthlog, agent_toml, gateway_toml
        from sim.modbus_meter import ModbusBus

        gw_specs = through_gateway(specs)
        say(f"starting {len(specs)} simulated instruments and their agents"
            + (f" ({len(gw_specs)} of them through one gateway agent)" if gw_specs else ""))
        live: list[tuple[InstrumentSpec, Devices, int]] = []
        members: list[GatewayMember] = []
        if gw_specs:
            with sigint_ignored():
                bus = ModbusBus()
        for spec in specs:
            on_gw = spec in gw_specs
            with sigint_ignored():
                dev = Devices.open(spec, var / "sim" / spec.id, SEED, bus=bus if on_gw else None)
            devices.append(dev)
            port = free_port()
            d = agents_dir / agent_id(spec)
            post = 30.0 if spec.hidden_post_s else 0.0
            if on_gw:
                members.append(GatewayMember(spec, profile(spec), dev, agent_id(spec), d, port, post))
            else:
                (d / "agent.toml").write_text(with_server_key(agent_toml(
                    spec, profile(spec), dev, agent_id=agent_id(spec), mqtt_host=broker.host, mqtt_port=broker.port,
                    checkin_port=port, post_run_s=post), server_key))
                children.start(f"agent-{spec.id}", [sys.executable, "-m", "agent.cli", "run", "--config",
                                                    str(d / "agent.toml")], cwd=d)
            live.append((spec, dev, port))
        gw = gateway_id(GATEWAY_UNIT)
        if members:
            gdir = agents_dir / gw
            gdir.mkdir(parents=True, exist_ok=True)
            (gdir / "gateway.toml").write_text(with_server_key(gateway_toml(gw, members, mqtt_host=broker.host,
                                                                            mqtt_port=broker.port), server_key))
            children.start(f"agent-{gw}", [sys.executable, "-m", "agent.cli", "run", "--config",
                                           str(gdir / "gateway.toml")], cwd=gdir)
        truthlog = Truthlog(var / "truth" / "live.jsonl")
        _wait_online(dsn, [agent_id(s) for s in specs], 30)
        # after the agents are back: the previous run's clean stops are not alerts
        children.start("alerts", demo_alerts.job_argv(role_dsn(dsn, "jishi_admin"), args.settle_minutes))
        booked: dict[str, BookedSlot] = {}
        booking = _book(dsn, args.book if args.book in {s.id for s in specs} else specs[0].id, args.booking_minutes)
        if booking is not None:
            booked[booking.instrument] = BookedSlot(booking.code, booking.start, booking.end)
        driver = Driver(live, PEOPLE, truthlog, SEED, speed=args.speed, booked=booked)
        driver.start()
        print(flush=True)
        print(f"  Jishi demo is running:  {url}/login", flush=True)
        print(f"  logins (password for all: {PASSWORD}):", flush=True)
        for lg in seed.DEMO_LOGINS:
            print(f"    {lg.login:<14} {lg.role:<13} {lg.display_name}", flush=True)
        if sso is not None:
            people = ", ".join(f"{lg} ({p.name}, {p.org_id})" for lg, p in oidc_demo_people())
            print(f"  university login (统一身份认证登录, demo OIDC provider {sso['issuer']}; password"
                  f" {OIDC_PASSWORD}): {people};", flush=True)
            print(f"    newcomer (unknown: registers, confirmed at {url}/registry/registrations)", flush=True)
        print(f"  board of a unit:        {url}/units/imu/board   {url}/units/btri/board", flush=True)
        phone = _phone_checkin(dsn, specs, sso is not None)
        if phone is not None:
            inst, code, login_how = phone
            print(f"  phone check-in (QR label {url}/instruments/{inst}/label, power meter only): open"
                  f" {url}/c/{code} at a phone's size and log in {login_how}", flush=True)
        if members:
            pid = next(c.proc.pid for c in children.items if c.name == f"agent-{gw}")
            print(f"  gateway {gw} (ONE agent process, pid {pid}, config {agents_dir / gw / 'gateway.toml'})"
                  " watches:", flush=True)
            for gm in members:
                how = [f"power meter at Modbus address {gm.dev.meter.slave} of the shared bus"] if gm.dev.meter else []
                how += ["its own serial status line"] if gm.dev.serial else []
                print(f"    {gm.spec.id:<12} agent {gm.agent_id:<15} {', '.join(how)}", flush=True)
            if bus is not None:
                print(f"    (one simulated RS-485 bus: {bus.port}, {len(bus.meters)} meters; each instrument its own"
                      " key, spool and MQTT identity)", flush=True)
        singles = [c for c in children.items if c.name.startswith("agent-") and c.name != f"agent-{gw}"]
        if singles:
            print(f"  alerts: stop an agent (e.g. kill {singles[0].proc.pid}, {singles[0].name}) and about a minute"
                  f" later its unit's robots get a message: {robot_log}", flush=True)
        if booking is not None:
            slot = [datetime.fromtimestamp(t, TZ) for t in (booking.start, booking.end)]
            print(f"  booking {booking.code} by an outside user on {booking.instrument}"
                  f" {slot[0]:%H:%M:%S}-{slot[1]:%H:%M:%S}"
                  f" (Beijing time): the simulated user checks in with the code; after the slot"
                  f" + {args.settle_minutes:g} min the drafted service record is at {url}/bookings", flush=True)
        print(f"  logs: {var / 'logs'}   ground truth: {var / 'truth'}", flush=True)
        print("  Ctrl-C stops everything.", flush=True)
        print(flush=True)
        next_status = time.monotonic() + 20
        while not _stop.wait(1.0):
            dead = [c for c in children.dead() if c.name in ("ingest", "web", "alerts", "robot-receiver")]
            if dead:
                raise RuntimeError(f"{dead[0].name} exited ({dead[0].proc.returncode}); see {var / 'logs'}")
            for c in children.dead():
                if c.name.startswith("agent-"):
                    say(f"{c.name} exited ({c.proc.returncode}); see {var / 'logs' / (c.name + '.log')}")
                    children.items.remove(c)
            for line in robots.new():
                say(f"local robots got: {line}")
            if booking is not None and booking.end < time.time():
                settled = _settled(dsn, booking.code)
                if settled is not None:
                    say(f"booking {booking.code} settled: {settled}; see {url}/bookings")
                    booking = None
            if time.monotonic() >= next_status:
                next_status = time.monotonic() + 60
                try:
                    say(_status(dsn))
                except psycopg.Error as exc:
                    say(f"status unavailable: {exc}")
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        say(f"error: {exc}")
        return 1
    finally:
        if driver is not None:
            driver.join(5)
        say("stopping agents")
        children.stop([c.name for c in children.items if c.name.startswith("agent-")], grace=20)
        for dev in devices:
            dev.close()
        if bus is not None:
            bus.close()
        if truthlog is not None:
            truthlog.close()
        say("stopping web and ingest")
        children.stop(grace=20)
        say("stopping Mosquitto and PostgreSQL")
        broker.stop()
        pg.stop()
        say("stopped; the data stays in " + str(var) + " for the next run")


class RobotLog:
    """What the local robot receiver got since the demo started, one line per message for the
    terminal (both robots of a unit get the same message: said once)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pos = path.stat().st_size if path.exists() else 0
        self.last = ""

    def new(self) -> list[str]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(self.pos)
            data = f.read()
        done = data.rfind(b"\n") + 1  # complete lines only
        self.pos += done
        out = []
        for raw in data[:done].splitlines():
            try:
                body = json.loads(raw).get("body") or {}
            except ValueError:
                continue
            md = body.get("markdown") or {}
            text = str(md.get("content") or md.get("text") or "")
            items = [ln[2:].replace("**", "") for ln in text.splitlines() if ln.startswith("- ")]
            line = " / ".join(items[len(items) // 2:] or items)  # the English half of the message
            if line and line != self.last:
                out.append(line)
            self.last = line
        return out


def _wait_online(dsn: str, agents: list[str], timeout: float) -> None:
    """Until every agent has said it is online (its birth), or `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not _stop.is_set():
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute("SELECT count(*) FROM live_state WHERE online AND agent_id = ANY(%s)",
                               (agents,)).fetchone()
        if row is not None and row[0] >= len(agents):
            return
        time.sleep(0.5)
    say(f"not every agent came online within {timeout:.0f} s (see their logs)")


@dataclass(frozen=True)
class Booking:
    code: str
    instrument: str
    start: float
    end: float


def _book(dsn: str, instrument: str, minutes: float) -> Booking | None:
    """An outside user's booking of `instrument` from a few seconds from now (the price list gets
    an external hourly rate if it has none); None if the slot is taken (a previous run's booking)."""
    from server.bookings.service import BookingRefused

    fee = demo_alerts.ensure_external_price(dsn, instrument)
    try:
        code = demo_alerts.book_outside(dsn, instrument, BOOKING_ORG, minutes=minutes, start_in_s=10)
    except BookingRefused as exc:
        say(f"no booking this time ({exc.key}): the previous one is still in its slot")
        return None
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT start_at, end_at FROM bookings WHERE code = %s", (code,)).fetchone()
    assert row is not None
    say(f"an outside user ({BOOKING_ORG}) booked {instrument} for {minutes:g} min, code {code}"
        f" (external rate {fee} 元/h)")
    return Booking(code, instrument, row[0].timestamp(), row[1].timestamp())


def _settled(dsn: str, code: str) -> str | None:
    """How the booking was settled (outcome, measured hours, drafted fee), None while it is not."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute("SELECT outcome, measured_hours, draft_amount, draft_price_item FROM bookings"
                           " WHERE code = %s AND settled_at IS NOT NULL", (code,)).fetchone()
    if row is None:
        return None
    return f"{row[0]}, {row[1]} h measured, drafted service record: {row[2]} 元 ({row[3]})"


def _repair_spools(dsn: str, agents_dir: Path, specs: list[InstrumentSpec]) -> None:
    """An agent whose spool went missing continues from what the server holds, not from seq 1."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for spec in specs:
            aid = agent_id(spec)
            data = agents_dir / aid / "data"
            if (data / "spool.db").exists():
                continue
            row = conn.execute("SELECT watermark, watermark_hash, coalesce(boot, 1) FROM agent_progress"
                               " WHERE agent_id = %s", (aid,)).fetchone()
            if row is not None and row[1]:
                say(f"{aid}: spool missing; continuing its chain after seq {row[0]}")
                seed_spool(data, aid, int(row[0]) + 1, str(row[1]), int(row[2]), int(time.time() * 1000))


if __name__ == "__main__":
    sys.exit(main())
