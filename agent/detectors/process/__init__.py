"""Process detector: is the instrument's control software running, and is it busy?

Keys, defaults, verdicts and evidence: README.md beside this file; every key with its default:
sample.toml; behaviour as data: cases.toml (run by tests/agent/test_detector_cases.py).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import psutil

from agent.config import Invalid, positive, require
from agent.detectors.base import Observation


@dataclass(frozen=True)
class Config:
    names: tuple[str, ...] = ()
    cmdline: tuple[str, ...] = ()
    children: tuple[str, ...] = ()
    active_cpu_permille: int = 50
    active_io_kib_s: int = 0
    rescan_s: float = 5.0

    def __post_init__(self) -> None:
        require(bool(self.names or self.cmdline), "names", "give process names or cmdline patterns (or both)")
        for key in ("cmdline", "children"):
            for pattern in getattr(self, key):
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise Invalid(key, f"{pattern!r} is not a regular expression: {exc}") from None
        require(self.active_cpu_permille >= 0, "active_cpu_permille", "must be >= 0")
        require(self.active_io_kib_s >= 0, "active_io_kib_s", "must be >= 0")
        positive(self.rescan_s, "rescan_s")


DEAD = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)


def _norm(name: str) -> str:
    name = name.lower()
    return name[:-4] if name.endswith(".exe") else name


class ProcessDetector:
    kind = "process"
    senses_power = True
    summary_keys = ("cpu",)

    def __init__(self, name: str, cfg: Config) -> None:
        self.name = name
        self.cfg = cfg
        self._names = {_norm(n) for n in cfg.names}
        self._cmd = [re.compile(p) for p in cfg.cmdline]
        self._child_names = {_norm(n) for n in cfg.children}
        self._child_res = [re.compile(p, re.IGNORECASE) for p in cfg.children]
        self._procs: dict[int, psutil.Process] = {}
        self._children: dict[int, psutil.Process] = {}
        self._last_scan = -float("inf")
        self._prev: dict[int, tuple[float, int]] = {}  # pid -> (cpu seconds, io bytes)
        self._prev_t: float | None = None

    def _matches(self, name: str, cmdline: list[str]) -> bool:
        if _norm(name) in self._names:
            return True
        if self._cmd and cmdline:
            joined = " ".join(cmdline)
            return any(p.search(joined) for p in self._cmd)
        return False

    def _is_child(self, name: str) -> bool:
        n = _norm(name)
        return n in self._child_names or any(p.fullmatch(n) for p in self._child_res)

    def _scan(self) -> None:
        procs: dict[int, psutil.Process] = {}
        parents: dict[int, list[psutil.Process]] = {}
        me = psutil.Process().pid
        for p in psutil.process_iter(["pid", "ppid", "name", "cmdline", "status"]):
            info = p.info
            if info["pid"] == me or info["status"] in DEAD:
                continue
            parents.setdefault(info["ppid"] or 0, []).append(p)
            if self._matches(info["name"] or "", info["cmdline"] or []):
                procs[info["pid"]] = self._procs.get(info["pid"], p)
        children: dict[int, psutil.Process] = {}
        if self._child_names or self._child_res:
            stack = list(procs)
            while stack:
                for c in parents.get(stack.pop(), []):
                    if c.pid in children or c.pid in procs:
                        continue
                    stack.append(c.pid)
                    if self._is_child(c.info["name"] or ""):
                        children[c.pid] = self._children.get(c.pid, c)
        self._procs, self._children = procs, children

    def poll(self, now: float) -> Observation:
        if now - self._last_scan >= self.cfg.rescan_s:
            self._scan()
            self._last_scan = now
        alive: dict[int, tuple[float, int]] = {}
        for group in (self._procs, self._children):
            for pid, p in list(group.items()):
                try:
                    with p.oneshot():
                        if p.status() in DEAD:  # exited, not reaped: its name stays, it runs nothing
                            raise psutil.ZombieProcess(pid)
                        cpu = p.cpu_times()
                        total = cpu.user + cpu.system
                        try:
                            io = p.io_counters()
                            iob = io.read_bytes + io.write_bytes
                        except (psutil.AccessDenied, AttributeError, NotImplementedError):
                            iob = 0
                    alive[pid] = (total, iob)
                except (psutil.NoSuchProcess, psutil.ZombieProcess):
                    del group[pid]
                except psutil.AccessDenied:
                    alive[pid] = self._prev.get(pid, (0.0, 0))
        t = time.monotonic()
        cpu_permille = 0
        io_kib_s = 0
        if self._prev_t is not None and t > self._prev_t:
            dt = t - self._prev_t
            dcpu = sum(max(0.0, v[0] - self._prev[pid][0]) for pid, v in alive.items() if pid in self._prev)
            dio = sum(max(0, v[1] - self._prev[pid][1]) for pid, v in alive.items() if pid in self._prev)
            cpu_permille = round(dcpu / dt * 1000)
            io_kib_s = round(dio / dt / 1024)
        self._prev, self._prev_t = alive, t
        n = len(self._procs)
        evidence: dict[str, int | str | bool | None] = {"procs": n, "cpu": cpu_permille, "io": io_kib_s,
                                                         "children": len(self._children)}
        if n == 0:
            return Observation("off", evidence)
        active = bool(self._children) \
            or (self.cfg.active_cpu_permille > 0 and cpu_permille >= self.cfg.active_cpu_permille) \
            or (self.cfg.active_io_kib_s > 0 and io_kib_s >= self.cfg.active_io_kib_s)
        return Observation("running" if active else "idle", evidence)

    def close(self) -> None:
        self._procs.clear()
        self._children.clear()


def create(name: str, cfg: Config) -> ProcessDetector:
    return ProcessDetector(name, cfg)
