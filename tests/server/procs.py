"""`jishi-server ingest` as a real child process, configured through a TOML file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from sim.devstack import role_dsn

ROOT = Path(__file__).resolve().parents[2]


def write_config(path: Path, dsn: str, broker: Any, client_id: str, group: str, metrics_port: int = 0,
                 **ingest: Any) -> Path:
    ing = {"resend_after_s": 1.0, "gap_give_up_after_s": 30.0, "gap_check_every_s": 0.5,
           "batch_max_wait_ms": 20, "batch_gap_ms": 20, "retry_initial_s": 0.1, "retry_max_s": 1.0, **ingest}
    lines = [
        f'[database]\ndsn = "{role_dsn(dsn, "jishi_ingest")}"\nowner_dsn = "{dsn}"\n',
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nclient_id = "{client_id}"\nshare_group = "{group}"\n',
        "[ingest]\n" + "".join(f"{k} = {v!r}\n" for k, v in ing.items()),
        f'[metrics]\nport = {metrics_port}\n',
    ]
    path.write_text("\n".join(lines))
    return path


class IngestProc:
    def __init__(self, config: Path) -> None:
        self.config = config
        self.log = config.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> IngestProc:
        env = {k: v for k, v in os.environ.items() if not k.startswith("JISHI_")}
        env["PYTHONPATH"] = str(ROOT)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "server.cli", "--config", str(self.config), "ingest"],
                                         stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
