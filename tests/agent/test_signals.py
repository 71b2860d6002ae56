"""A stop signal stops the agent whatever the main thread is doing when it arrives.

The handler runs in the main thread between two bytecodes. A handler that takes a lock the
interrupted code holds (threading.Event's, inside `Event.wait`) waits for it forever: `jishi-agent
run` then ignored SIGTERM (CI, 2026-12-03). Here the signal is raised at every line of the main
loop's waiting code (threading's and agent/waker.py's, each line once), in a child process so a hang is a timeout.
The test of the whole stop is tests/agent/test_cli.py's SIGTERM test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.agent.helpers import write_config

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import signal, sys, threading
from pathlib import Path

import agent.waker
from agent.config import load
from agent.runner import Agent

runner = Agent(load(Path(sys.argv[1]), environ={}))
runner.install_signals()
handler = signal.getsignal(signal.SIGTERM)
inside = [False]
raised = [0]
seen = set()


def guarded(signum, frame):
    inside[0] = True
    try:
        handler(signum, frame)
    finally:
        inside[0] = False


signal.signal(signal.SIGTERM, guarded)
FILES = {threading.__file__, agent.waker.__file__}


def tracer(frame, event, arg):
    if frame.f_code.co_filename not in FILES:
        return tracer if event == "call" else None
    if event == "line" and not inside[0] and (frame.f_code.co_filename, frame.f_lineno) not in seen:
        seen.add((frame.f_code.co_filename, frame.f_lineno))  # each line once: a drain loop would refill forever
        raised[0] += 1
        signal.raise_signal(signal.SIGTERM)
    return tracer


sys.settrace(tracer)
for _ in range(20):  # the main loop's waiting, as run() does it, a signal at each of its lines
    runner.wake.wait(0.001)
    runner.wake.clear()
    stopping = runner.stopping()
sys.settrace(None)
assert stopping
print(f"stopped after {raised[0]} signals", flush=True)
"""


def test_sigterm_inside_the_loops_wait_stops_the_agent(tmp_path: Path) -> None:
    class Nowhere:
        host, port = "127.0.0.1", 9

    cfg = write_config(tmp_path, agent_id="sig1", broker=Nowhere(), running="power", period=0.05, detectors="""
[detectors.power]
kind = "power_meter"
port = "/dev/null"
levels = [{ state = "off", below_w = 5 }, { state = "running" }]
""", mqtt_extra="stop_flush_s = 0.5")
    done = subprocess.run([sys.executable, "-c", CHILD, str(cfg)], cwd=ROOT, capture_output=True, text=True,
                          timeout=30, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("stopped after "), done.stdout + done.stderr[-3000:]
    assert int(done.stdout.split()[2]) >= 5
