"""The agent's main loop: poll detectors, decide the state, track users, record, stay alive.

One thread (this one) writes records; the publisher thread reads the spool and talks MQTT; the
check-in server and the file watcher have their own small threads and hand their work here.
Nothing a device does can stop the loop: every poll is guarded, and a failing detector becomes
`unknown` evidence plus a `lifecycle`/`detector_error` record (once per episode, and once more
when it recovers).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import platform
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from agent import SOFTWARE
from agent.clock import Clock
from agent.config import Config, GatewayConfig
from agent.detectors import module
from agent.detectors.base import Detector, Observation
from agent.detectors.episodes import ErrorEpisodes
from agent.identity import EXPLICIT, OS, Sessions
from agent.identity.remote import META_N, Refused, RemoteCommands
from agent.publisher import Publisher
from agent.recorder import Recorder
from agent.signer import load_key
from agent.spool import RunLock, Spool, SpoolError
from agent.state import StateMachine, compile_rules
from agent.waker import Waker

if TYPE_CHECKING:
    from agent.identity.checkin import CheckinServer, Request

log = logging.getLogger("jishi.agent")
SAMPLE_UNITS = {"mw": "mW", "cpu": "permille", "io": "KiB/s", "ms": "ms"}


class Summary:
    """Per-detector summary of the polls between two heartbeats (counts and min/max/avg)."""

    SHORT: ClassVar[dict[str, str]] = {
        "running": "run", "idle": "idle", "off": "off", "unknown": "unk", "fault": "fault"}

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.counts: dict[str, int] = {}
        self.agg: dict[str, list[int]] = {}  # key -> [min, max, sum, n]
        self.last: dict[str, Any] = {}

    def add(self, obs: Observation) -> None:
        self.n += 1
        short = self.SHORT[obs.verdict]
        self.counts[short] = self.counts.get(short, 0) + 1
        for k, v in obs.evidence.items():
            if k in self.keys and isinstance(v, int) and not isinstance(v, bool):
                a = self.agg.get(k)
                if a is None:
                    self.agg[k] = [v, v, v, 1]
                else:
                    a[0], a[1], a[2], a[3] = min(a[0], v), max(a[1], v), a[2] + v, a[3] + 1
            else:
                self.last[k] = v

    def evidence(self) -> dict[str, Any]:
        ev: dict[str, Any] = {"n": self.n, **self.counts}
        for k, (lo, hi, total, n) in self.agg.items():
            ev[f"{k}_min"], ev[f"{k}_max"], ev[f"{k}_avg"] = lo, hi, total // n
        for k, v in self.last.items():
            if k not in ev and len(ev) < 16:
                ev[k] = v
        return ev



class MainLoop:
    """What stops and wakes a main loop (an agent's or a gateway's): the Windows service's stop
    request (`stop_event`, winservice.py), a stop signal, and `wake` (a check-in from the server)."""

    stop_event: threading.Event
    wake: Waker
    _signalled: bool

    def _loop_controls(self) -> None:
        self.stop_event = threading.Event()
        self._signalled = False
        self.wake = Waker()

    def install_signals(self) -> None:
        """SIGINT and SIGTERM (and Windows' SIGBREAK) stop the main loop. The handler runs in the main
        thread between any two bytecodes, so it takes no lock: a flag and the lock-free `Waker`."""

        def handler(signum: int, frame: Any) -> None:
            self._signalled = True
            self.wake.set()

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)
        if hasattr(signal, "SIGBREAK"):  # Windows services and consoles (Ctrl+Break)
            signal.signal(signal.SIGBREAK, handler)

    def stopping(self) -> bool:
        return self._signalled or self.stop_event.is_set()


class Agent(MainLoop):
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        a = cfg.agent
        self.key = load_key(a.key_file)
        self.run_lock = RunLock(cfg.spool_path)
        if not self.run_lock.acquire():
            raise SpoolError(f"another agent process (pid {self.run_lock.holder()}) is running on {cfg.spool_path}: "
                             "one agent per spool")
        try:
            self.spool = Spool(cfg.spool_path, a.id)
        except BaseException:
            self.run_lock.release()
            raise
        self.boot = self.spool.start_boot()
        self.clock = Clock(a.clock_jump_ms, last_t=int(self.spool.meta("last_t", 0)))
        self.publisher = Publisher(cfg, self.key, self.boot)
        self.recorder = Recorder(self.spool, a.id, self.boot, self.clock, on_append=self.publisher.notify)
        self.spool.overflow = self.recorder.overflow_builder  # a full disk drops old samples, declared
        self.detectors: list[Detector] = []
        for entry in cfg.detectors:
            det = module(entry.kind).create(entry.name, entry.config)
            if entry.kind == "data_files":
                det.on_output = self._output
            self.detectors.append(det)
        st = cfg.state
        running, on, warmup = compile_rules(st.running, st.on, st.warmup, self.detectors)
        self.machine = StateMachine(
            running=running, on=on, warmup=warmup,
            confirm_ms=round(st.confirm_s * 1000), post_run_ms=round(st.post_run_s * 1000),
            warmup_max_ms=round(st.warmup_max_s * 1000), post_credit_ms=round(st.post_credit_s * 1000))
        self.rule_text = st.running
        self.sessions = Sessions(self.recorder, self.spool, round(cfg.identity.idle_timeout_s * 1000))
        self.os_users: Any = None
        if cfg.identity.os_session:
            from agent.identity.os_session import OsUsers

            self.os_users = OsUsers(cfg.identity.os_ignore_users, cfg.identity.os_include_remote)
        self.card: Any = None
        if cfg.identity.card_port:
            from agent.identity.card_reader import CardReader

            self.card = CardReader(cfg.identity.card_port, cfg.identity.card_baudrate,
                                   cfg.identity.read_card_key(), cfg.identity.card_pattern)
        self.http: CheckinServer | None = None
        if cfg.identity.checkin:
            from agent.identity.checkin import CheckinServer  # http.server and email: only when on

            self.http = CheckinServer(cfg.identity.checkin_port, a.instrument, self.snapshot)
        self._loop_controls()
        self.publisher.on_session_command = self.wake.set
        self.remote = RemoteCommands(a.id, a.unit, a.instrument, cfg.identity.server_key,
                                     int(self.spool.meta(META_N, 0)), lambda n: self.spool.set_meta(META_N, n),
                                     lambda: self.clock.now()[0])
        self.summaries = {d.name: Summary(d.summary_keys) for d in self.detectors}
        self.last_obs: dict[str, Observation] = {}
        self._det_error: dict[str, str | None] = {}
        self._episodes = ErrorEpisodes()
        self._samples: dict[str, list[int | None]] = (
            {s: [] for s in cfg.samples.signals} if cfg.samples.enabled else {})
        self._sample_start = 0
        self._snapshot: dict[str, Any] = {}
        self._spool_stats: dict[str, Any] = {}
        self.started_mono = time.monotonic()
        self.ticks = 0
        self._output_lock = threading.Lock()
        self._outputs: list[tuple[int, str, int, str]] = []

    # ---- lifecycle ---------------------------------------------------------------------------------

    def run(self) -> int:
        self.publisher.start()
        try:
            self.start()
            period = self.cfg.agent.sample_period_s
            next_tick = time.monotonic()
            while not self.stopping():
                self.safe_tick()
                next_tick += period
                now = time.monotonic()
                if next_tick < now:  # overran (slow device): skip, do not burst
                    next_tick = now
                while not self.stopping() and self.wake.wait(next_tick - time.monotonic()):
                    self.wake.clear()  # a check-in from the server: answer now, not at the next tick
                    self.safe_remote()
        finally:
            self.shutdown()
        return 0

    def start(self) -> None:
        a = self.cfg.agent
        self.recorder.lifecycle("boot", {"sw": SOFTWARE, "pid": os.getpid(), "os": platform.system()[:32],
                                         "config": self.cfg.digest, "detectors": len(self.detectors)})
        previous = self.spool.meta("config_digest")
        if previous != self.cfg.digest:
            self.recorder.lifecycle("config", {"digest": self.cfg.digest, "previous": previous,
                                               "rule": self.cfg.state.running})
            self.spool.set_meta("config_digest", self.cfg.digest)
        self.sessions.resume()
        if self.http is not None:
            try:
                self.http.start()
            except OSError as exc:
                log.error("check-in page on 127.0.0.1:%d unavailable: %s", self.cfg.identity.checkin_port, exc)
                self.http = None
        self._last_heartbeat_mono = self.clock.mono()
        self._next_heartbeat = time.monotonic() + a.heartbeat_s
        self._next_os_poll = 0.0
        self._next_limits = time.monotonic() + 1
        self._next_last_t = 0.0
        self._next_stats = 0.0
        self._failures = 0  # ticks failed in a row (safe_tick)
        log.info("agent %s started (boot %d) for %s/%s with %d detectors", a.id, self.boot, a.unit, a.instrument,
                 len(self.detectors))

    def safe_tick(self) -> None:
        """One tick that never raises: e.g. the disk is full, keep trying and log sparsely."""
        try:
            self.tick()
            self._failures = 0
        except Exception:
            self._failures += 1
            if self._failures == 1 or self._failures % 60 == 0:
                log.exception("tick failed (%d in a row)", self._failures)

    def shutdown(self) -> None:
        self.finish()
        self.publisher.stop()
        self.spool.close()
        self.run_lock.release()
        self.wake.close()
        log.info("agent stopped")

    def finish(self) -> None:
        """Everything of a clean stop before the publisher's last flush: sessions, samples, `stop`."""
        try:
            if self.http is not None:
                self.http.stop()
            self._drain_requests()
            self.sessions.stop()
            self._flush_samples()
            self.recorder.lifecycle("stop", {"ticks": self.ticks, "uptime_s": round(time.monotonic()
                                                                                    - self.started_mono)})
            t, _ = self.clock.now()
            self.spool.set_meta("last_t", t)
        except Exception:
            log.exception("while stopping")
        for det in self.detectors:
            try:
                det.close()
            except Exception:
                log.exception("closing detector %s", det.name)
        if self.card is not None:
            self.card.close()

    # ---- one tick ----------------------------------------------------------------------------------

    def tick(self) -> None:
        self.ticks += 1
        now = time.monotonic()
        t, mono = self.clock.now()
        jump = self.clock.check_jump()
        if jump is not None:
            log.warning("wall clock jumped by %d ms", jump[0])
            self.recorder.lifecycle("clock", {"jump_ms": jump[0], "wall": jump[1], "invalid": self.clock.wall_invalid})
        obs = self.poll_all(now)
        tr = self.machine.update(obs, t, mono)
        if tr is not None:
            evidence: dict[str, Mapping[str, Any]] = {n: {"v": o.verdict, **o.evidence} for n, o in obs.items()}
            row = self.recorder.state(tr, self.rule_text, evidence)
            self.spool.set_meta("last_state", f"{tr.state} {tr.since}")
            log.info("state %s -> %s (seq %d)", tr.prev_state, tr.state, row.seq)
        self.sessions.on_state(self.machine.state, mono)
        self._identity(now)
        if now >= self._next_heartbeat:
            self.heartbeat()
            self._next_heartbeat = now + self.cfg.agent.heartbeat_s
        if self._samples:
            self._sample(obs, t)
        if now >= self._next_limits:
            self._enforce_limits(t)
            self._next_limits = now + self.cfg.spool.check_s
        if now >= self._next_last_t:
            self.spool.set_meta("last_t", t)
            self._next_last_t = now + 60
        self._update_snapshot(now)

    def poll_all(self, now: float) -> dict[str, Observation]:
        obs: dict[str, Observation] = {}
        for det in self.detectors:
            try:
                o = det.poll(now)
            except Exception as exc:  # a bug or an unexpected device: never stop the loop
                if det.name not in self._episodes.open:  # one traceback per episode, not per poll
                    log.exception("detector %s failed", det.name)
                o = Observation.failed(f"{type(exc).__name__}: {exc}")
            obs[det.name] = o
            self.summaries[det.name].add(o)
            self._track_error(det.name, o)
        self.last_obs = obs
        return obs

    def _track_error(self, name: str, o: Observation) -> None:
        """Log changes of a detector's error; one record per error episode (agent/detectors/episodes.py)."""
        prev = self._det_error.get(name)
        if o.error is not None and prev is None:
            log.warning("detector %s: %s", name, o.error)
        elif o.error is None and prev is not None:
            log.info("detector %s answers again", name)
        self._det_error[name] = o.error
        detail = self._episodes.update(name, o.error)
        if detail is not None:
            self.recorder.lifecycle("detector_error", detail)

    def heartbeat(self) -> None:
        mono = self.clock.mono()
        evidence = {name: s.evidence() for name, s in self.summaries.items()}
        self.recorder.heartbeat(self.machine.state, mono - self._last_heartbeat_mono, evidence)
        self._last_heartbeat_mono = mono
        for s in self.summaries.values():
            s.reset()

    # ---- identity ----------------------------------------------------------------------------------

    def _identity(self, now: float) -> None:
        if self.os_users is not None and now >= self._next_os_poll:
            self._next_os_poll = now + self.cfg.identity.os_poll_s
            try:
                user = self.os_users.current()
            except Exception as exc:
                log.warning("reading OS sessions: %s", exc)
            else:
                if user is None:
                    self.sessions.end(OS, "os_logout")
                else:
                    self.sessions.start(OS, "os", user)
        if self.card is not None:
            for hashed in self.card.poll():
                cur = self.sessions.user(EXPLICIT)
                if cur == ("card", hashed):
                    self.sessions.end(EXPLICIT, "card")
                else:
                    self.sessions.start(EXPLICIT, "card", hashed)
                    self.sessions.reset_idle(self.clock.mono())
        self._drain_requests()
        self.safe_remote()

    def safe_remote(self) -> None:
        try:
            self._remote_commands()
        except Exception:
            log.exception("handling a command from the server failed")

    def _remote_commands(self) -> None:
        """Check-ins and check-outs the server signed (a phone scanned the label): SPEC §9.5."""
        q = self.publisher.session_commands
        while not q.empty():
            raw = q.get_nowait()
            try:
                cmd = self.remote.check(raw)
            except Refused as exc:
                log.warning("refused a command from the server: %s (%s)", exc.reason, exc.detail)
                continue
            cur = self.sessions.open.get(EXPLICIT)
            if cmd.cmd == "checkout":
                if cur is None or (cur[0] != cmd.session and (cur[1], cur[2]) != (cmd.method, cmd.user)):
                    log.warning("refused a checkout command from the server: not_checked_in (%s)", cmd.id)
                    continue
                self.sessions.end(EXPLICIT, "checkout")
                log.info("checked out by phone (command %s)", cmd.id)
                continue
            if cur is not None and (cur[1], cur[2]) == (cmd.method, cmd.user):
                self.sessions.end(EXPLICIT, "replaced")  # the same person again: the phone's session id
            self.sessions.start(EXPLICIT, cmd.method, cmd.user, session=cmd.session)
            self.sessions.reset_idle(self.clock.mono())
            log.info("checked in by phone (command %s, session %s)", cmd.id, cmd.session)

    def _drain_requests(self) -> None:
        if self.http is None:
            return
        q = self.http.requests
        while not q.empty():
            req = q.get_nowait()
            try:
                req.result = self._handle(req)
            except Exception as exc:
                log.exception("check-in request failed")
                req.result = {"ok": False, "error": str(exc)}
            req.done.set()

    def _handle(self, req: Request) -> dict[str, Any]:
        if req.action == "checkout":
            session = self.sessions.end(EXPLICIT, "checkout")
            if session is None:
                return {"ok": False, "error": "nobody is checked in", "message": "无人签到 Nobody is checked in"}
            return {"ok": True, "session": session, "message": "已签退 Checked out"}
        if req.kind == "card":
            if self.card is None and not (self.cfg.identity.card_key or self.cfg.identity.card_key_file):
                return {"ok": False, "error": "no card key is configured on this agent"}
            from agent.identity.card_reader import card_hash

            method, user = "card", card_hash(self.cfg.identity.read_card_key(), req.user)
        else:
            method, user = ("booking" if req.kind == "booking" else "checkin"), req.user
        session = self.sessions.start(EXPLICIT, method, user)
        self.sessions.reset_idle(self.clock.mono())
        if session is None:
            return {"ok": True, "session": self.sessions.open[EXPLICIT][0], "message": "已签到 Already checked in"}
        return {"ok": True, "session": session, "message": "已签到 Checked in"}

    def _output(self, path: str, size: int, sha: str) -> None:
        """A data file finished (watchdog/hash thread): keep it locally for spot checks."""
        with self._output_lock:
            self._outputs.append((self.clock.now()[0], path, size, sha))

    # ---- samples, limits, status -------------------------------------------------------------------

    def _sample(self, obs: Mapping[str, Observation], t: int) -> None:
        if not any(self._samples.values()):
            self._sample_start = t
        for signal_name, values in self._samples.items():
            det, key = signal_name.split(".", 1)
            o = obs.get(det)
            v = o.evidence.get(key) if o is not None else None
            values.append(v if isinstance(v, int) and not isinstance(v, bool) else None)
        per_record = max(1, round(self.cfg.samples.record_s / self.cfg.agent.sample_period_s))
        if len(next(iter(self._samples.values()))) >= per_record:
            self._flush_samples()

    def _flush_samples(self) -> None:
        step = max(1, round(self.cfg.agent.sample_period_s * 1000))
        for signal_name, values in self._samples.items():
            if values:
                det, key = signal_name.split(".", 1)
                self.recorder.sample(f"{det}_{key}", SAMPLE_UNITS.get(key, "count"), self._sample_start, step, values)
            values.clear()

    def _enforce_limits(self, t: int) -> None:
        sp = self.cfg.spool
        dropped = self.spool.enforce_limits(round(sp.max_mb * 1024 * 1024), round(sp.max_age_days * 86_400_000), t,
                                            self.recorder.overflow_builder)
        if dropped:
            log.warning("spool limit reached: dropped %d ranges of sample/heartbeat records", len(dropped))
            self.publisher.notify()
        with self._output_lock:
            outputs, self._outputs = list(self._outputs), []
        for out in outputs:
            self.spool.output(*out)

    def _update_snapshot(self, now: float) -> None:
        if now >= self._next_stats:
            st = self.spool.stats()
            self._spool_stats = {"boot": st.boot, "next_seq": st.next_seq, "spool_first": st.first_seq,
                                 "spool_records": st.count}
            self._next_stats = now + 5
        os_user = self.sessions.user(OS)
        ex = self.sessions.user(EXPLICIT)
        self._snapshot = {
            "agent": self.cfg.agent.id, "unit": self.cfg.agent.unit, "instrument": self.cfg.agent.instrument,
            "state": self.machine.state, "raw_state": self.machine.raw,
            "os_user": os_user[1] if os_user else None,
            "explicit_user": (ex[1][:20] + "…" if ex[0] == "card" else ex[1]) if ex else None,
            "explicit_method": ex[0] if ex else None,
            "detectors": {n: {"verdict": o.verdict, "error": o.error} for n, o in self.last_obs.items()},
            **self._spool_stats, "publisher": self.publisher.status(), "ticks": self.ticks,
        }

    def snapshot(self) -> dict[str, Any]:
        return dict(self._snapshot) if self._snapshot else {"state": "starting"}


# ---- gateway mode ----------------------------------------------------------------------------------

CURRENT_AGENT: contextvars.ContextVar[str] = contextvars.ContextVar("jishi_agent", default="")


@contextlib.contextmanager
def speaking_as(agent: Agent) -> Iterator[None]:
    """The gateway's log lines inside name `agent` (AgentLogFilter)."""
    token = CURRENT_AGENT.set(agent.cfg.agent.id)
    try:
        yield
    finally:
        CURRENT_AGENT.reset(token)


class AgentLogFilter(logging.Filter):
    """Adds `agent_id` to every log record: the agent whose tick is running, else the thread's name
    (publisher threads are named `publisher-<agent id>`), so a gateway's one log says who spoke."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.agent_id = CURRENT_AGENT.get() or record.threadName
        return True


class Gateway(MainLoop):
    """Several instruments in one process, each a complete `Agent` (key, spool, chain, MQTT client).

    One loop ticks them in turn, each at its own sample period, so detectors that share a bus
    (meters on one RS-485 line) are never asked at the same time; a failing instrument costs only
    its own tick. Each agent's publisher is its own thread with its own connection and identity.
    """

    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        self.agents: list[Agent] = []
        try:
            for instrument in cfg.instruments:
                self.agents.append(Agent(instrument))
        except BaseException:
            for agent in self.agents:
                agent.spool.close()
                agent.run_lock.release()
            raise
        self._loop_controls()

    def run(self) -> int:
        for agent in self.agents:
            agent.publisher.on_session_command = self.wake.set  # one loop answers every instrument's
            agent.publisher.start()
        try:
            for agent in self.agents:
                with speaking_as(agent):
                    agent.start()
            log.info("gateway %s started with %d instruments", self.cfg.gateway.id, len(self.agents))
            due = [time.monotonic()] * len(self.agents)
            while not self.stopping():
                for i, agent in enumerate(self.agents):
                    if time.monotonic() < due[i]:
                        continue
                    with speaking_as(agent):
                        agent.safe_tick()
                    due[i] = max(due[i] + agent.cfg.agent.sample_period_s, time.monotonic())
                while not self.stopping() and self.wake.wait(min(due) - time.monotonic()):
                    self.wake.clear()  # a check-in from the server: answered before the next tick
                    for agent in self.agents:
                        with speaking_as(agent):
                            agent.safe_remote()
        finally:
            self.shutdown()
        return 0

    def shutdown(self) -> None:
        """Clean stop of every instrument; the publishers flush in parallel, not one after another."""
        for agent in self.agents:
            with speaking_as(agent):
                agent.finish()
        for agent in self.agents:
            agent.publisher.begin_stop()
        for agent in self.agents:
            agent.publisher.stop()
            agent.spool.close()
            agent.run_lock.release()
            agent.wake.close()
        self.wake.close()
        log.info("gateway %s stopped", self.cfg.gateway.id)
