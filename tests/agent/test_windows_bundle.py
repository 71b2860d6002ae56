"""The offline Windows bundle, built here on Linux from PyPI's win_amd64 wheels.

python.org is not reachable here, so the CPython embeddable zip is a stand-in with the files of
python-3.11.x-embed-amd64.zip (python.exe, python311.dll, python311._pth, python311.zip) whose
content is not a real interpreter: the test checks what the build does with it (unpacked, the
._pth extended), not CPython itself. Skipped only when PyPI cannot be reached.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from agent.config import Config, load_any
from tests.agent.helpers import ROOT

SCRIPT = ROOT / "deploy" / "windows" / "build_bundle.py"
ORIGINAL_PTH = "python311.zip\r\n.\r\n\r\n# Uncomment to run site.main() automatically\r\n#import site\r\n"


def fake_embed(path: Path, drop: str = "") -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in {"python.exe": b"MZ stand-in", "python311.dll": b"MZ stand-in",
                           "python311._pth": ORIGINAL_PTH.encode(), "python311.zip": b"PK\x05\x06" + bytes(18),
                           "LICENSE.txt": b"PSF"}.items():
            if name != drop:
                z.writestr(name, data)
    return path


def build(embed: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), "--python-embed", str(embed), "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, check=False, timeout=900)


def pypi_reachable() -> bool:
    try:
        with urllib.request.urlopen("https://pypi.org/simple/pywin32/", timeout=15) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def test_a_wrong_embeddable_zip_is_refused_before_any_download(tmp_path: Path) -> None:
    out = build(fake_embed(tmp_path / "embed.zip", drop="python311._pth"), tmp_path / "dist")
    assert out.returncode == 1 and "not a CPython 3.11 embeddable zip" in out.stderr and "python311._pth" in out.stderr
    out = build(tmp_path / "missing.zip", tmp_path / "dist")
    assert out.returncode == 1 and "python.org" in out.stderr
    assert not (tmp_path / "dist").exists() or not any((tmp_path / "dist").rglob("*.whl"))


@pytest.mark.slow
@pytest.mark.skipif(not pypi_reachable(), reason="PyPI is unreachable: the win_amd64 wheels cannot be fetched")
def test_bundle_builds_on_linux_with_windows_wheels(tmp_path: Path) -> None:
    embed = fake_embed(tmp_path / "python-3.11.9-embed-amd64.zip")
    out = build(embed, tmp_path / "dist")
    assert out.returncode == 0, out.stderr[-4000:]
    archive = Path(out.stdout.strip().splitlines()[-1])
    assert archive.name == "jishi-agent-0.1.0-win_amd64.zip" and archive.exists()
    root = archive.with_suffix("")
    names = {n.split("/", 1)[1] for n in zipfile.ZipFile(archive).namelist()}
    assert {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} == names

    for f in ("install.ps1", "uninstall.ps1", "jishi-agent.cmd", "WINDOWS.md", "MANIFEST.json", "python/python.exe",
              "config/mass-spectrometer-windows.toml.example", "config/gateway-example.toml.example"):
        assert f in names, f
    pth = (root / "python" / "python311._pth").read_text()
    assert "Lib\\site-packages" in pth.splitlines() and "import site" in pth.splitlines()

    site = "python/Lib/site-packages/"
    for f in ("agent/winservice.py", "agent/cli.py", "agent/runner.py", "agent/signer.py", "protocols/signing.py",
              "cryptography/hazmat/bindings/_rust.pyd", "nacl/_sodium.pyd", "psutil/_psutil_windows.pyd",
              "win32/servicemanager.pyd",
              "win32/lib/win32serviceutil.py", "pywin32_system32/pywintypes311.dll", "pywin32.pth",
              "serial/serialwin32.py", "paho/mqtt/client.py", "pymodbus/client/serial.py",
              "agent/detectors/power_meter/maps/sdm120.toml",
              "watchdog/observers/read_directory_changes.py"):
        assert site + f in names, f
    assert any(n.startswith(site + "orjson/") and n.endswith("win_amd64.pyd") for n in names)
    assert not [n for n in names if n.endswith(".so") or ".cpython-" in n], "a Linux binary in the bundle"
    tops = {n[len(site):].split("/")[0] for n in names if n.startswith(site)}
    assert not {"server", "sim", "tests", "pydantic", "pydantic_core"} & tops, tops
    # the program is this tree's, not a stale build
    for mod in ("agent/cli.py", "agent/winservice.py", "protocols/signing.py"):
        assert (root / site / mod).read_bytes() == (ROOT / mod).read_bytes(), mod

    manifest = json.loads((root / "MANIFEST.json").read_text())
    assert manifest["python"]["sha256"] == hashlib.sha256(embed.read_bytes()).hexdigest()
    assert not any(r.lower().startswith("pydantic") for r in manifest["requirements"])
    assert any(r.startswith("pywin32") for r in manifest["requirements"])
    wheels = {p.name for p in (root / "wheels").glob("*.whl")}
    assert wheels == set(manifest["wheels"])
    for w, digest in manifest["wheels"].items():
        assert hashlib.sha256((root / "wheels" / w).read_bytes()).hexdigest() == digest
        assert w.endswith(("-win_amd64.whl", "-any.whl")), w
    assert any(w.startswith("jishi-0.1.0-") for w in wheels)
    for ex in (root / "config").glob("*.example"):  # the shipped examples are valid configs
        loaded = load_any(ex, environ={})
        assert isinstance(loaded, Config) or loaded.instruments
