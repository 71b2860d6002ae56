"""Live simulated instruments for the demo: real devices that real agents read, driven by a
compressed version of the usage model so that a lab manager's board changes within minutes.

Each instrument gets the devices its detection needs, from the existing simulators: a Modbus RTU
power meter on a pseudo-terminal (`sim.modbus_meter`), a serial status port on a pseudo-terminal
(`sim.serial_instrument`), a control-software process with an acquisition child and data files
(`sim.control_software`). Users check in and out through the agent's own check-in endpoint, the
way a person at the PC does (`jishi-agent checkin`). Every change is written to a JSON-lines truth
file as it happens, so what the board showed can be checked afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim.control_software import ControlSoftware
from sim.history import Profile, power_levels
from sim.modbus_meter import BusMeter, ModbusBus, ModbusMeter
from sim.model import InstrumentSpec, Person, pick_user
from sim.serial_instrument import SerialInstrument

log = logging.getLogger("jishi.sim.live")

PROCESS_NAMES = {"imu-lcms": "MassHunter", "btri-icpoes": "Syngistix", "btri-gdms": "GDMSControl"}


class Software(ControlSoftware):
    """The fake control software in a session of its own: the driver starts it from a thread at a
    user's check-in, and a Ctrl-C in the demo's terminal must reach only the demo, which stops it
    in order (`stop()`). Same command line as ControlSoftware.start."""

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        root = Path(__file__).resolve().parent.parent
        env = {**os.environ, "PYTHONPATH": str(root)}
        self.proc = subprocess.Popen([sys.executable, "-m", "sim.control_software", "--name", self.name,
                                      "--data-dir", str(self.data_dir), "--duty", str(self.duty)],
                                     env=env, start_new_session=True)
        time.sleep(0.3)  # let it install its signal handlers


@dataclass
class Devices:
    """The simulated hardware of one instrument (whatever its detection needs)."""

    spec: InstrumentSpec
    workdir: Path
    meter: BusMeter | None = None
    serial: SerialInstrument | None = None
    software: Software | None = None
    state: str = "off"
    rng: random.Random = field(default_factory=random.Random)
    dip_until: float = 0.0

    @classmethod
    def open(cls, spec: InstrumentSpec, workdir: Path, seed: int, bus: ModbusBus | None = None) -> Devices:
        """The instrument's devices; its power meter on `bus` (shared with other meters) if given,
        else on a line of its own."""
        d = cls(spec, workdir, rng=random.Random(f"{seed}:{spec.id}:live"))
        d.data_dir.mkdir(parents=True, exist_ok=True)  # the data-files detector watches it from the start
        if spec.detection in ("power", "power_serial"):
            d.meter = bus.add(watts=spec.power.off_w) if bus is not None else ModbusMeter(watts=spec.power.off_w)
        if spec.detection in ("serial", "power_serial"):
            d.serial = SerialInstrument(dialect=spec.dialect, state="off", seed=seed)
        if spec.detection == "software":
            d.software = Software(workdir / "data", name=PROCESS_NAMES.get(spec.id, "AcqSoft")[:15], duty=0.02)
        d.set_state("idle" if spec.always_on else "off")
        return d

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def set_state(self, state: str) -> None:
        """off | idle | running | fault, as every device of the instrument shows it."""
        prev, self.state = self.state, state
        if self.serial is not None:
            self.serial.state = state
        if self.software is not None:
            if state == "off" and self.software.proc is not None:
                self.software.stop()
            elif state != "off" and self.software.proc is None:
                self.software.start()
            if state == "running" and prev != "running":
                self.software.begin_run()
            elif state != "running" and prev == "running" and self.software.proc is not None:
                self.software.end_run()
        self.tick()

    def tick(self) -> None:
        """Called every second: the meter's reading follows the state, with noise and short dips."""
        if self.meter is None:
            return
        p = self.spec.power
        now = time.monotonic()
        if self.state == "running" and p.dips_per_hour and self.rng.random() < p.dips_per_hour / 3600 * 20:
            self.dip_until = now + 3
        base = {"off": p.off_w, "idle": p.standby_w, "fault": p.standby_w}.get(self.state, p.running_w)
        if self.state == "running" and now < self.dip_until:
            base = p.standby_w
        self.meter.watts = max(0.0, base * (1 + p.noise * self.rng.gauss(0, 1)))

    def fault(self, seconds: float) -> None:
        """A fault the instrument reports (serial) or a meter that stops answering (power only)."""
        if self.serial is not None:
            self.set_state("fault")
        elif self.meter is not None:
            self.meter.mode = "silent"
        time.sleep(seconds)
        if self.meter is not None:
            self.meter.mode = "ok"
        self.set_state("idle")

    def close(self) -> None:
        for dev in (self.meter, self.serial):
            if dev is not None:
                dev.close()
        if self.software is not None:
            self.software.stop()


def agent_toml(spec: InstrumentSpec, prof: Profile, dev: Devices, *, agent_id: str, mqtt_host: str, mqtt_port: int,
               checkin_port: int, heartbeat_s: float = 60.0, confirm_s: float = 5.0, post_run_s: float | None = None,
               idle_timeout_s: float = 240.0) -> str:
    """The agent configuration for the live instrument: the same rule and power levels as the
    history's virtual agent, shorter debounce and heartbeat so the board follows within seconds."""
    lines = [
        "# written by sim/demo.py at every start (the devices' pseudo-terminals change)",
        "[agent]", f'id = "{agent_id}"', f'unit = "{spec.unit_id}"', f'instrument = "{spec.id}"',
        'key_file = "agent.key"', 'data_dir = "data"', "sample_period_s = 1.0", f"heartbeat_s = {heartbeat_s}",
        'log_level = "INFO"', "",
        "[mqtt]", f'host = "{mqtt_host}"', f"port = {mqtt_port}", "backoff_min_s = 1.0", "backoff_max_s = 10.0", "",
    ]
    lines += _instrument_sections("", spec, prof, dev, checkin_port=checkin_port, confirm_s=confirm_s,
                                  post_run_s=post_run_s, idle_timeout_s=idle_timeout_s)
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class GatewayMember:
    """One instrument of a gateway: its devices, agent id, directory (key, spool) and check-in port."""

    spec: InstrumentSpec
    prof: Profile
    dev: Devices
    agent_id: str
    agent_dir: Path
    checkin_port: int
    post_run_s: float | None = None


def gateway_toml(gateway_id: str, members: Sequence[GatewayMember], *, mqtt_host: str, mqtt_port: int,
                 heartbeat_s: float = 60.0, confirm_s: float = 5.0, idle_timeout_s: float = 240.0) -> str:
    """ONE gateway agent process for several instruments (agent/README.md, "Gateway mode"): each
    `[[instrument]]` keeps the key, spool and agent id it has as a single agent (its directory under
    agents/), its power meter is an address on the shared bus; users check in at its own port."""
    lines = [
        "# written by sim/demo.py at every start (the devices' pseudo-terminals change)",
        "[gateway]", f'id = "{gateway_id}"', 'log_level = "INFO"', "",
        "[agent]", "sample_period_s = 1.0", f"heartbeat_s = {heartbeat_s}", "",
        "[mqtt]", f'host = "{mqtt_host}"', f"port = {mqtt_port}", "backoff_min_s = 1.0", "backoff_max_s = 10.0", "",
    ]
    for m in members:
        lines += ["[[instrument]]", f'id = "{m.agent_id}"', f'unit = "{m.spec.unit_id}"',
                  f'instrument = "{m.spec.id}"', f'key_file = "{m.agent_dir / "agent.key"}"',
                  f'data_dir = "{m.agent_dir / "data"}"']
        lines += _instrument_sections("instrument.", m.spec, m.prof, m.dev, checkin_port=m.checkin_port,
                                      confirm_s=confirm_s, post_run_s=m.post_run_s, idle_timeout_s=idle_timeout_s)
    return "\n".join(lines) + "\n"


def _instrument_sections(prefix: str, spec: InstrumentSpec, prof: Profile, dev: Devices, *, checkin_port: int,
                         confirm_s: float, post_run_s: float | None, idle_timeout_s: float) -> list[str]:
    """State rule, identity and detectors of one instrument (`prefix` "instrument." in a gateway)."""
    levels, hyst = power_levels(spec)
    post = prof.post_run_s if post_run_s is None else post_run_s
    lines = [
        f"[{prefix}state]", f'running = "{prof.running}"', f'on = "{prof.on}"', f"confirm_s = {confirm_s}",
        f"post_run_s = {post}", "",
        f"[{prefix}identity]", "os_session = false", "checkin = true", f"checkin_port = {checkin_port}",
        f"idle_timeout_s = {idle_timeout_s}", "",
    ]
    if dev.meter is not None:
        lv = ", ".join(f'{{ state = "{x.state}", below_w = {x.below_w} }}' if x.below_w is not None
                       else f'{{ state = "{x.state}" }}' for x in levels)
        lines += [f"[{prefix}detectors.power]", 'kind = "power_meter"', f'port = "{dev.meter.port}"',
                  f"slave = {dev.meter.slave}", "timeout_s = 0.3", "retries = 1", f"levels = [{lv}]",
                  f"hysteresis_w = {hyst}", ""]
    if dev.serial is not None:
        lines += [f"[{prefix}detectors.status]", 'kind = "serial_status"', f'port = "{dev.serial.port}"',
                  f'dialect = "{spec.dialect}"', "timeout_s = 0.3", ""]
    if dev.software is not None:
        lines += [f"[{prefix}detectors.software]", 'kind = "process"', f'names = ["{dev.software.name}"]',
                  'children = ["acq_worker"]', "active_cpu_permille = 0", "rescan_s = 2.0", "",
                  f"[{prefix}detectors.files]", 'kind = "data_files"', f'path = "{dev.data_dir}"',
                  'patterns = ["*.dat"]', "active_s = 20", "settle_s = 5", "hash_files = true", ""]
    return lines


class Truthlog:
    """Append-only JSON lines of what the live simulator did (thread-safe)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, instrument: str, event: str, **kw: Any) -> None:
        line = json.dumps({"t": int(time.time() * 1000), "instrument": instrument, "event": event, **kw},
                          ensure_ascii=False)
        with self._lock:
            self._f.write(line + "\n")
            self._f.flush()

    def close(self) -> None:
        with self._lock:
            self._f.close()


@dataclass(frozen=True)
class BookedSlot:
    """A booking the driver plays on its instrument before anything else: check-in with the
    booking code at the slot's start, one run inside the slot, check-out before its end."""

    code: str
    start: float  # wall clock, seconds since the epoch
    end: float


class Driver:
    """Plays compressed usage on every instrument: sessions of a few minutes with runs of one to
    six minutes, check-ins through the agents' check-in endpoints, forgotten check-outs, power
    switched off between sessions, rare faults."""

    def __init__(self, instruments: Sequence[tuple[InstrumentSpec, Devices, int]], people: Sequence[Person],
                 truth: Truthlog, seed: int, speed: float = 1.0, booked: dict[str, BookedSlot] | None = None) -> None:
        self.instruments = instruments
        self.booked = dict(booked or {})
        self.booking_done: dict[str, bool] = {}  # instrument -> the booked run was played (checked out)
        self.people = people
        self.truth = truth
        self.seed = seed
        self.speed = speed
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        ticker = threading.Thread(target=self._tick, name="sim-meters", daemon=True)
        ticker.start()
        self.threads.append(ticker)
        for spec, dev, port in self.instruments:
            t = threading.Thread(target=self._play, args=(spec, dev, port), name=f"sim-{spec.id}", daemon=True)
            t.start()
            self.threads.append(t)

    def join(self, timeout: float = 10) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout)

    def _tick(self) -> None:
        while not self.stop.wait(1.0):
            for _, dev, _ in self.instruments:
                dev.tick()

    def _sleep(self, seconds: float) -> bool:
        return self.stop.wait(seconds / self.speed)

    def _checkin(self, port: int, body: dict[str, Any] | None) -> bool:
        from agent.identity.checkin import call

        try:
            r = call(port, "/checkin" if body else "/checkout", body or {}, timeout=10)
        except OSError:
            return False
        return bool(r.get("ok"))

    def _booking(self, spec: InstrumentSpec, dev: Devices, port: int, slot: BookedSlot) -> bool:
        """Play the booked slot in real time (not scaled by `speed`: the slot is on the calendar);
        False if the demo stopped meanwhile."""
        length = slot.end - slot.start
        if self.stop.wait(max(0.0, slot.start - time.time())):
            return False
        if dev.state == "off":
            dev.set_state("idle")
        ok = self._checkin(port, {"user": slot.code, "kind": "booking"})
        self.truth.write(spec.id, "check_in", user=slot.code, kind="booking", ok=ok)
        if self.stop.wait(0.1 * length):
            return False
        dev.set_state("running")
        self.truth.write(spec.id, "run_start", user=slot.code)
        if self.stop.wait(max(0.0, slot.start + 0.6 * length - time.time())):
            return False
        dev.set_state("idle")
        self.truth.write(spec.id, "run_end", user=slot.code)
        if self.stop.wait(max(0.0, slot.start + 0.85 * length - time.time())):
            return False
        ok = self._checkin(port, None)
        self.truth.write(spec.id, "check_out", user=slot.code, ok=ok)
        self.booking_done[spec.id] = ok
        return True

    def _play(self, spec: InstrumentSpec, dev: Devices, port: int) -> None:
        slot = self.booked.get(spec.id)
        if slot is not None and not self._booking(spec, dev, port, slot):
            return
        rng = random.Random(f"{self.seed}:{spec.id}:driver:{time.time_ns()}")
        if self._sleep(rng.uniform(5, 60)):
            return
        while not self.stop.is_set():
            if dev.state == "off":
                dev.set_state("idle")
                self.truth.write(spec.id, "power_on")
                if self._sleep(rng.uniform(5, 20)):
                    return
            user = pick_user(rng, spec, self.people)
            ok = self._checkin(port, {"user": user.login, "kind": "account"})
            self.truth.write(spec.id, "check_in", user=user.login, external=user.external, ok=ok)
            for _ in range(rng.randint(*spec.runs_per_session)):
                if self._sleep(rng.uniform(10, 40)):
                    return
                dev.set_state("running")
                self.truth.write(spec.id, "run_start", user=user.login)
                if self._sleep(rng.uniform(60, 360)):
                    return
                dev.set_state("idle")
                self.truth.write(spec.id, "run_end", user=user.login)
            if self._sleep(rng.uniform(10, 40)):
                return
            if rng.random() < spec.forgotten_checkout * 2:
                self.truth.write(spec.id, "left_without_check_out", user=user.login)
            else:
                ok = self._checkin(port, None)
                self.truth.write(spec.id, "check_out", user=user.login, ok=ok)
            if rng.random() < 0.05:
                self.truth.write(spec.id, "fault_start")
                dev.fault(rng.uniform(40, 120) / self.speed)
                self.truth.write(spec.id, "fault_end")
            if not spec.always_on and rng.random() < 0.35:
                dev.set_state("off")
                self.truth.write(spec.id, "power_off")
            if self._sleep(rng.uniform(30, 240)):
                return
