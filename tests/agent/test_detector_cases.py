"""One generic test over every detector plugin: its `cases.toml` (device script in, expected
verdicts out) against third-party-style devices (tests/agent/devices.py), real processes and a
real folder; and its documentation: every config key appears in the plugin's sample.toml (with
its default) and README.md.

A case: `config` (the detector's keys; the device fills in port/path/names), `device` (setup),
then `[[case.step]]`: an action (kind-specific keys below), `expect` (the verdict, reached within
`within_s` and then held for `hold_s`), optional `error` (substring) and `evidence` (subset).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from agent.config import build
from agent.detectors import KINDS, module
from agent.detectors.base import Detector, Observation
from tests.agent.devices import RtuBus, StatusDevice

DETECTORS = Path(__file__).resolve().parents[2] / "agent" / "detectors"


def load_cases() -> Iterator[Any]:
    for kind in sorted(KINDS):
        data = tomllib.loads((DETECTORS / kind / "cases.toml").read_text())
        for case in data["case"]:
            yield pytest.param(kind, case, id=f"{kind}:{case['name']}")


class SerialDriver:
    """Steps: reply (line), raw (bytes as latin-1 text), flood (n bytes, no line end), silent, noise,
    unplug, replug."""

    def __init__(self, tmp: Path, case: dict[str, Any]) -> None:
        eol = case.get("config", {}).get("eol", "\n" if case.get("config", {}).get("dialect") == "scpi" else "\r\n")
        self.dev = StatusDevice(tmp / "ttyStatus", eol.encode())
        self.config = {"port": str(self.dev.port.path), "timeout_s": 0.3, "reopen_s": 0.1}

    def apply(self, step: dict[str, Any]) -> None:
        if "reply" in step:
            self.dev.reply, self.dev.raw = step["reply"], None
        if "raw" in step:
            self.dev.raw = step["raw"].encode("latin-1")
        if "flood" in step:
            self.dev.raw = b"A" * step["flood"]
        if step.get("silent"):
            self.dev.reply, self.dev.raw = None, None
        if "noise" in step:
            self.dev.port.write(step["noise"].encode("latin-1"))
        if step.get("unplug"):
            self.dev.port.unplug()
        if step.get("replug"):
            self.dev.port.replug()

    def close(self) -> None:
        self.dev.close()


class MeterDriver:
    """Device: meter, address (or addresses). Steps: watts (or watts_at = {addr = W}), mode, unplug, replug."""

    def __init__(self, tmp: Path, case: dict[str, Any]) -> None:
        device = case.get("device", {})
        self.meter = device.get("meter", "sdm120")
        self.address = device.get("address", 1)
        self.bus = RtuBus(tmp / "ttyRS485")
        self.bus.set_power(self.address, self.meter, 0)
        self.config = {"port": str(self.bus.port.path), "timeout_s": 0.1, "retries": 0, "reopen_s": 0.1}

    def apply(self, step: dict[str, Any]) -> None:
        if "watts" in step:
            self.bus.set_power(self.address, self.meter, step["watts"])
        for addr, watts in step.get("watts_at", {}).items():
            self.bus.set_power(int(addr), self.meter, watts)
        if "mode" in step:
            self.bus.mode = step["mode"]
        if step.get("unplug"):
            self.bus.port.unplug()
        if step.get("replug"):
            self.bus.port.replug()

    def close(self) -> None:
        self.bus.close()


class ProcessDriver:
    """The control software is a real program under a unique name (a link to `sleep`).
    Steps: start, stop, zombie (a copy that exited and was never reaped by its parent)."""

    def __init__(self, tmp: Path, case: dict[str, Any]) -> None:
        self.name = f"jq{os.getpid() % 100000}{abs(hash(case['name'])) % 1000}"[:15]
        self.exe = tmp / self.name
        self.exe.symlink_to(shutil.which("sleep") or "/bin/sleep")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.config = {"names": [self.name], "rescan_s": 0.05, "active_cpu_permille": 0}

    def apply(self, step: dict[str, Any]) -> None:
        if step.get("start"):
            self.procs.append(subprocess.Popen([str(self.exe), "600"]))
        if step.get("stop"):
            for p in self.procs:
                p.kill()
                p.wait()
            self.procs.clear()
        if step.get("zombie"):
            p = subprocess.Popen([str(self.exe), "0"])
            self.procs.append(p)
            end = time.monotonic() + 5
            while psutil.Process(p.pid).status() != psutil.STATUS_ZOMBIE:
                assert time.monotonic() < end, "the child never became a zombie"
                time.sleep(0.01)

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


class FilesDriver:
    """Steps: write (append to a file in the watched folder), mkdir (create the folder)."""

    def __init__(self, tmp: Path, case: dict[str, Any]) -> None:
        self.folder = tmp / "acq"
        if not case.get("device", {}).get("missing"):
            self.folder.mkdir()
        self.config = {"path": str(self.folder), "retry_s": 0.05}

    def apply(self, step: dict[str, Any]) -> None:
        if step.get("mkdir"):
            self.folder.mkdir()
        if "write" in step:
            with open(self.folder / step["write"], "a") as fh:
                fh.write("data\n")

    def close(self) -> None:
        pass


DRIVERS: dict[str, Any] = {"serial_status": SerialDriver, "power_meter": MeterDriver, "process": ProcessDriver,
                           "data_files": FilesDriver}


def poll_until(det: Detector, expect: str, within_s: float) -> Observation:
    end = time.monotonic() + within_s
    while True:
        o = det.poll(time.monotonic())
        if o.verdict == expect or time.monotonic() >= end:
            return o
        time.sleep(0.03)


@pytest.mark.parametrize(("kind", "case"), list(load_cases()))
def test_detector_case(kind: str, case: dict[str, Any], tmp_path: Path) -> None:
    driver = DRIVERS[kind](tmp_path, case)
    try:
        table = {**driver.config, **case.get("config", {})}
        cfg = build(module(kind).Config, table, f"detectors.{kind}", tmp_path / "cases.toml", tmp_path)
        det: Detector = module(kind).create(kind, cfg)
        try:
            for i, step in enumerate(case["step"]):
                where = f"step {i + 1} {step}"
                driver.apply(step)
                o = poll_until(det, step["expect"], step.get("within_s", 3.0))
                assert o.verdict == step["expect"], f"{where}: {o}"
                end = time.monotonic() + step.get("hold_s", 0.0)
                while time.monotonic() < end:
                    o = det.poll(time.monotonic())
                    assert o.verdict == step["expect"], f"{where}, while holding: {o}"
                    time.sleep(0.03)
                if "error" in step:
                    assert step["error"] in (o.error or ""), f"{where}: {o}"
                elif o.verdict != "unknown":
                    assert o.error is None, f"{where}: {o}"
                for key, value in step.get("evidence", {}).items():
                    assert o.evidence.get(key) == value, f"{where}: evidence {key}: {o}"
        finally:
            det.close()
    finally:
        driver.close()


# ---- documentation: every key in the sample config (with its default) and the README -----------

@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_config_key_is_documented(kind: str, tmp_path: Path) -> None:
    cls = module(kind).Config
    sample_text = (DETECTORS / kind / "sample.toml").read_text()
    readme = (DETECTORS / kind / "README.md").read_text()
    sample = tomllib.loads(sample_text)["detectors"][kind]
    assert sample.pop("kind") == kind
    built = build(cls, sample, f"detectors.{kind}", tmp_path / "sample.toml", tmp_path)
    for f in dataclasses.fields(cls):
        assert re.search(rf"^#?\s*{f.name}\s*=", sample_text, re.M), f"{kind}: {f.name} missing in sample.toml"
        assert f"`{f.name}`" in readme, f"{kind}: {f.name} missing in README.md"
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        example = re.search(rf"^{f.name}\s*=.*#\s*required", sample_text, re.M)  # an example value is fine
        if has_default and f.name in sample and not example:
            factory = f.default_factory
            default = f.default if f.default is not dataclasses.MISSING else factory() if callable(factory) else None
            assert getattr(built, f.name) == default, f"{kind}: sample.toml's {f.name} is not the default"
        elif has_default and not example:  # commented out: only keys whose default is "not set" (None)
            assert f.default is None, f"{kind}: {f.name} is commented out but has a default to show"
