"""A fake instrument control-software process, started and stopped by tests and benchmarks.

`python -m sim.control_software --name FakeAcqSoft --data-dir DIR` runs until SIGTERM. On
SIGUSR1 it starts an acquisition: a child process named `acq_worker` that uses about a third of
a core and appends to a data file in DIR every 0.1 s; SIGUSR2 stops it. On Linux the process
names are set with prctl, so detectors can match by name as on Windows (`MassHunter.exe`).
`ControlSoftware` drives it from Python. POSIX only (signals); the agent itself is not.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def set_name(name: str) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME


def worker(data_dir: Path, duty: float) -> None:
    set_name("acq_worker")
    stop = False

    def handler(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, handler)
    path = data_dir / f"run-{int(time.time() * 1000)}.dat"
    with open(path, "ab") as fh:
        while not stop:
            end = time.monotonic() + 0.1 * duty
            x = 0
            while time.monotonic() < end:
                x += 1
            fh.write(f"{time.time():.3f} {x}\n".encode())
            fh.flush()
            time.sleep(0.1 * (1 - duty))


def main_process(name: str, data_dir: Path, duty: float) -> None:
    set_name(name)
    child: subprocess.Popen[bytes] | None = None
    running = True

    def start(signum: int, frame: object) -> None:
        nonlocal child
        if child is None or child.poll() is not None:
            child = subprocess.Popen([sys.executable, "-m", "sim.control_software", "--child",
                                      "--data-dir", str(data_dir), "--duty", str(duty)])

    def stop(signum: int, frame: object) -> None:
        nonlocal child
        if child is not None:
            child.terminate()
            child.wait()
            child = None

    def quit_(signum: int, frame: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    signal.signal(signal.SIGTERM, quit_)
    while running:
        time.sleep(0.05)
    stop(0, None)


class ControlSoftware:
    """Start / run / stop the fake control software from a test."""

    def __init__(self, data_dir: Path, name: str = "FakeAcqSoft", duty: float = 0.3) -> None:
        self.data_dir = data_dir
        self.name = name
        self.duty = duty
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        root = Path(__file__).resolve().parent.parent
        env = {**os.environ, "PYTHONPATH": str(root)}
        self.proc = subprocess.Popen([sys.executable, "-m", "sim.control_software", "--name", self.name,
                                      "--data-dir", str(self.data_dir), "--duty", str(self.duty)], env=env)
        time.sleep(0.3)  # let it install its signal handlers

    def begin_run(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR1)

    def end_run(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> ControlSoftware:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", default="FakeAcqSoft")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--duty", type=float, default=0.3)
    p.add_argument("--child", action="store_true")
    args = p.parse_args()
    if args.child:
        worker(args.data_dir, args.duty)
    else:
        main_process(args.name, args.data_dir, args.duty)


if __name__ == "__main__":
    main()
