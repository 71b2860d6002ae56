"""Raise a stop signal at every line of a process's waiting code, once each, in a child process.

A signal handler runs in the main thread between two bytecodes, also while that thread holds a lock
inside `threading.Event.wait`; a handler that takes the same lock hangs the process (CI,
2026-12-03). The child installs the handlers under test (`setup`), then runs `loop` 20 times with a
tracer that raises SIGTERM at each line of the files `files` names (each line once: a drain loop
would refill forever), then runs `check`. A hang is a timeout, reported as such.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import signal, sys, threading
{setup}
handler = signal.getsignal(signal.SIGTERM)
inside, raised, seen = [False], [0], set()


def guarded(signum, frame):
    inside[0] = True
    try:
        handler(signum, frame)
    finally:
        inside[0] = False


signal.signal(signal.SIGTERM, guarded)
FILES = {files}


def tracer(frame, event, arg):
    if frame.f_code.co_filename not in FILES:
        return tracer if event == "call" else None
    where = (frame.f_code.co_filename, frame.f_lineno)
    if event == "line" and not inside[0] and where not in seen:
        seen.add(where)
        raised[0] += 1
        signal.raise_signal(signal.SIGTERM)
    return tracer


sys.settrace(tracer)
for _ in range(20):
{loop}
sys.settrace(None)
{check}
print(f"stopped after {{raised[0]}} signals", flush=True)
"""


def signalled_at_every_line(setup: str, loop: str, files: str, check: str, args: list[str] | None = None) -> int:
    """Run the child; the number of signals raised (the child's check passed, nothing hung)."""
    code = CHILD.format(setup=setup, files=files, check=check,
                        loop="\n".join("    " + line for line in loop.strip().splitlines()))
    done = subprocess.run([sys.executable, "-c", code, *(args or [])], cwd=ROOT, capture_output=True, text=True,
                          timeout=30, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("stopped after "), done.stdout + done.stderr[-3000:]
    return int(done.stdout.split()[2])
