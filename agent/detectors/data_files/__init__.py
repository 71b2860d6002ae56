"""Data-files detector: new or growing files in the acquisition folder (watchdog).

Keys, defaults, verdicts and evidence: README.md beside this file; every key with its default:
sample.toml; behaviour as data: cases.toml (run by tests/agent/test_detector_cases.py).
"""

from __future__ import annotations

import fnmatch
import hashlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import positive, require
from agent.detectors.base import Observation, RateLimit


@dataclass(frozen=True)
class Config:
    path: Path
    recursive: bool = True
    patterns: tuple[str, ...] = ("*",)
    ignore: tuple[str, ...] = ("~*", "*.tmp", ".*")
    active_s: float = 60.0
    settle_s: float = 30.0
    hash_files: bool = False
    hash_max_mb: int = 4096
    report_names: bool = False
    retry_s: float = 30.0

    def __post_init__(self) -> None:
        positive(self.active_s, "active_s")
        positive(self.settle_s, "settle_s")
        require(bool(self.patterns), "patterns", "give at least one glob")
        require(self.hash_max_mb > 0, "hash_max_mb", "must be > 0")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class DataFilesDetector:
    kind = "data_files"
    senses_power = False
    summary_keys = ("files",)

    def __init__(self, name: str, cfg: Config, on_output: Callable[[str, int, str], None] | None = None) -> None:
        self.name = name
        self.cfg = cfg
        self.on_output = on_output
        self._lock = threading.Lock()
        self._touched: dict[str, float] = {}  # path -> monotonic time of last write
        self._new = 0  # files created, since the agent started
        self._done = 0  # files finished, since the agent started
        self._last_activity = -float("inf")
        self._last_sha = ""
        self._last_name = ""
        self._observer: Any = None
        self._error: str | None = None
        self._retry = RateLimit(cfg.retry_s)
        self._hash_q: queue.Queue[str | None] = queue.Queue()
        self._hasher: threading.Thread | None = None

    # called from the watchdog thread
    def _event(self, path: str, created: bool) -> None:
        name = Path(path).name
        if not any(fnmatch.fnmatch(name, p) for p in self.cfg.patterns):
            return
        if any(fnmatch.fnmatch(name, p) for p in self.cfg.ignore):
            return
        with self._lock:
            if created and path not in self._touched:
                self._new += 1
            self._touched[path] = self._last_activity = time.monotonic()

    def _start(self) -> None:
        from agent import lean

        lean.deferred("ctypes.util")  # watchdog's inotify imports it and opens libc with CDLL(None) instead
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        det = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.is_directory:
                    return
                kind = event.event_type
                if kind in ("created", "modified", "closed"):
                    det._event(str(event.src_path), kind == "created")
                elif kind == "moved":
                    det._event(str(event.dest_path), True)

        if not self.cfg.path.is_dir():
            raise FileNotFoundError(f"folder {self.cfg.path} does not exist")
        observer = Observer()
        observer.schedule(Handler(), str(self.cfg.path), recursive=self.cfg.recursive)
        observer.daemon = True
        observer.start()
        self._observer = observer
        if self.cfg.hash_files and self._hasher is None:
            self._hasher = threading.Thread(target=self._hash_worker, name=f"hash-{self.name}", daemon=True)
            self._hasher.start()

    def _hash_worker(self) -> None:
        while (path := self._hash_q.get()) is not None:
            try:
                p = Path(path)
                size = p.stat().st_size
                sha = sha256_file(p) if size <= self.cfg.hash_max_mb * 1024 * 1024 else ""
            except OSError:
                continue
            with self._lock:
                self._last_sha = sha
            if self.on_output is not None:
                self.on_output(path, size, sha)

    def poll(self, now: float) -> Observation:
        if self._observer is None or not self._observer.is_alive():
            if self._observer is not None or self._error is None or self._retry.ready():
                try:
                    self._observer = None
                    self._start()
                    self._error = None
                except (OSError, RuntimeError) as exc:
                    self._error = f"watching {self.cfg.path}: {exc}"
            if self._error is not None:
                return Observation.failed(self._error)
        t = time.monotonic()
        with self._lock:
            finished = [p for p, last in self._touched.items() if t - last >= self.cfg.settle_s]
            for p in finished:
                del self._touched[p]
                self._done += 1
                self._last_name = Path(p).name
                if self.cfg.hash_files:
                    self._hash_q.put(p)
                elif self.on_output is not None:
                    try:
                        self.on_output(p, Path(p).stat().st_size, "")
                    except OSError:
                        pass
            active = t - self._last_activity < self.cfg.active_s
            evidence: dict[str, int | str | bool | None] = {
                "files": len(self._touched), "new": self._new, "done": self._done}
            if self._last_sha:
                evidence["sha"] = self._last_sha
            if self.cfg.report_names and self._last_name:
                evidence["name"] = self._last_name[:128]
        return Observation("running" if active else "idle", evidence)

    def close(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=2)
            self._observer = None
        if self._hasher is not None:
            self._hash_q.put(None)
            self._hasher.join(timeout=2)
            self._hasher = None


def create(name: str, cfg: Config) -> DataFilesDetector:
    return DataFilesDetector(name, cfg)
