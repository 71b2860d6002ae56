"""`make demo` end to end, small: three instruments and two days of history. The demo starts its
services and agents, answers logins and the live board, its agents publish, Ctrl-C (SIGINT to its
process group, as a terminal sends it) stops every child, and a second run reuses the data."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from sim.devstack import free_port
from sim.model import TZ

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def var() -> Iterator[Path]:
    # Inside a mode-700 directory, like a checkout in root's home: the services' users cannot reach
    # it, so the demo must keep their data where they can, and find it again on the next run.
    home = Path(tempfile.mkdtemp(prefix="jishi-home-"))
    home.chmod(0o700)
    d = home / "checkout" / "var" / "demo"
    d.mkdir(parents=True)
    yield d
    for sub in ("pg", "mqtt"):
        if (d / sub).is_symlink():
            shutil.rmtree((d / sub).resolve(), ignore_errors=True)
    shutil.rmtree(home, ignore_errors=True)


class Demo:
    def __init__(self, var: Path, web_port: int) -> None:
        self.log = var / f"demo-{time.monotonic_ns()}.log"
        since = (datetime.now(TZ) - timedelta(days=2)).date().isoformat()
        env = {k: v for k, v in os.environ.items() if not k.startswith("JISHI_")} | {"PYTHONPATH": str(ROOT)}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sim.demo", "--var", str(var), "--web-port", str(web_port),
                 "--history-from", since, "--instruments", "3"],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if re.search(pattern, self.text()):
                return
            assert self.proc.poll() is None, self.text()
            time.sleep(0.3)
        raise AssertionError(f"no {pattern!r} in:\n{self.text()}")

    def interrupt(self) -> int:
        os.killpg(self.proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        return self.proc.wait(90)


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _login(url: str) -> Any:
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    req = urllib.request.Request(f"{url}/api/v1/auth/login", method="POST",
                                 data=json.dumps({"login": "imu.manager", "password": "jishi-demo"}).encode(),
                                 headers={"Content-Type": "application/json"})
    with opener.open(req, timeout=10) as r:
        assert json.loads(r.read())["account"]["role"] == "unit_manager"
    return opener


def _published(dsn: str) -> dict[str, tuple[int, Any]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT agent_id, watermark, birth_at FROM agent_progress").fetchall()
    return {r[0]: (int(r[1]), r[2]) for r in rows}


@pytest.mark.slow
def test_demo_runs_stops_cleanly_and_reuses_its_data(var: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    demo = Demo(var, port)
    try:
        demo.wait_for("Jishi demo is running", 150)
        assert "backfilling history" in demo.text()
        with urllib.request.urlopen(f"{url}/login", timeout=10) as r:
            assert r.status == 200
        opener = _login(url)
        with opener.open(f"{url}/api/v1/units/imu/live", timeout=10) as r:
            tiles = json.loads(r.read())["tiles"]
        assert {t["id"] for t in tiles} == {"imu-tem", "imu-nmr", "imu-xrd"}
        with opener.open(f"{url}/units/imu/report", timeout=30) as r:  # the page a manager opens first
            assert r.status == 200 and "利用率" in r.read().decode()
        state = json.loads((var / "state.json").read_text())
        dsn = f"postgresql://jishi@127.0.0.1:{state['pg_port']}/jishi"
        history = {a: w for a, (w, _) in _published(dsn).items()}
        # the live agents continue their chains: births seen, records beyond the history stored
        end = time.monotonic() + 60
        while time.monotonic() < end:
            now = _published(dsn)
            if all(b is not None and w > history[a] for a, (w, b) in now.items()):
                break
            time.sleep(1)
        else:
            raise AssertionError(f"agents did not publish: {now} after history {history}")
        children = _descendants(demo.proc.pid)
        assert (var / "pg").is_symlink()  # postgres cannot reach a mode-700 directory: kept elsewhere
        # taken before the stop: PostgreSQL (in the demo's process group) may be gone by the time it returns
        postmaster = psutil.Process(int((var / "pg" / "postmaster.pid").read_text().split()[0]))
        assert len([c for c in children if "agent.cli" in " ".join(c.cmdline())]) == 3
        assert demo.interrupt() == 0  # a clean stop, as asked
        gone, alive = psutil.wait_procs([*children, postmaster], timeout=5)
        assert not alive, [p.cmdline() for p in alive]
        assert "stopped; the data stays" in demo.text() and "Traceback" not in demo.text()

        again = Demo(var, port)
        again.wait_for("Jishi demo is running", 120)
        assert "reusing the data of the previous run" in again.text() and "backfilling" not in again.text()
        before = _published(dsn)
        end = time.monotonic() + 60
        while time.monotonic() < end and not all(w > before[a][0] for a, (w, _) in _published(dsn).items()):
            time.sleep(1)
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM quarantine").fetchone() == (0,)
            assert conn.execute("SELECT count(*) FROM gaps").fetchone() == (0,)
        assert again.interrupt() == 0
    finally:
        for d in (demo, locals().get("again")):
            if isinstance(d, Demo) and d.proc.poll() is None:
                # the broker and the servers run in sessions of their own: kill them one by one
                left = _descendants(d.proc.pid)
                os.killpg(d.proc.pid, signal.SIGKILL)
                for c in left:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        c.kill()
