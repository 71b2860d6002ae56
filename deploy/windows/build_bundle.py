"""Build the offline Windows bundle of the Jishi agent on any machine with pip (Linux CI included).

    python deploy/windows/build_bundle.py --python-embed python-3.11.9-embed-amd64.zip [--out dist]

The bundle needs nothing installed on the instrument PC and nothing downloaded there:
  python/                 the CPython embeddable distribution (from --python-embed), its
                          python311._pth extended with Lib\\site-packages and `import site`
  python/Lib/site-packages/  the agent's dependencies as win_amd64 / pure wheels, installed, plus
                          the agent and protocols packages (from the project's wheel; not server/)
  wheels/                 the exact wheels used (pip download --platform win_amd64 --only-binary=:all:
                          --python-version 3.11) and the project's wheel, with their SHA-256 in MANIFEST.json
  install.ps1, uninstall.ps1, jishi-agent.cmd, config/*.toml.example, WINDOWS.md, MANIFEST.json

The CPython embeddable zip comes from python.org (e.g. python-3.11.9-embed-amd64.zip, with its
published SHA-256 checked by whoever fetches it): it is an INPUT because the build machines here
cannot reach python.org. Only 3.11 (the wheels' --python-version) is accepted.

Output: <out>/jishi-agent-<version>-win_amd64/ and <out>/jishi-agent-<version>-win_amd64.zip.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PY_TAG = "311"
PIP_TARGET = ["--platform", "win_amd64", "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp"]
# Markers evaluated as on the target (pip download --platform does not change sys_platform).
WINDOWS_ENV = {"sys_platform": "win32", "platform_system": "Windows", "os_name": "nt", "platform_machine": "AMD64",
               "python_version": "3.11", "python_full_version": "3.11.9", "implementation_name": "cpython",
               "platform_python_implementation": "CPython"}
APP_PACKAGES = ("agent", "protocols")  # what the instrument PC runs; server/ and sim/ stay out
EXAMPLES = ("mass-spectrometer-windows.toml", "power-meter-only.toml", "serial-status-instrument.toml",
            "gateway-example.toml")


class BuildError(RuntimeError):
    pass


def requirements() -> list[str]:
    """The agent's dependencies from pyproject.toml (core + agent extra), markers decided for Windows."""
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out = []
    for text in [*project["dependencies"], *project["optional-dependencies"]["agent"]]:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate(WINDOWS_ENV):
            continue
        req.marker = None
        out.append(str(req))
    return out


def check_embed(path: Path) -> str:
    """The embeddable zip's Python version tag; BuildError unless it is a 64-bit CPython 3.11 embed zip."""
    if not path.is_file():
        raise BuildError(f"--python-embed {path}: no such file (download python-3.11.x-embed-amd64.zip from "
                         "python.org on a machine that reaches it, check its SHA-256, and pass its path)")
    try:
        names = set(zipfile.ZipFile(path).namelist())
    except zipfile.BadZipFile:
        raise BuildError(f"--python-embed {path}: not a zip file") from None
    need = {"python.exe", f"python{PY_TAG}.dll", f"python{PY_TAG}._pth", f"python{PY_TAG}.zip"}
    missing = sorted(need - names)
    if missing:
        raise BuildError(f"--python-embed {path}: not a CPython 3.11 embeddable zip (missing {missing})")
    return PY_TAG


def pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(embed: Path, out: Path) -> Path:
    from agent import __version__

    check_embed(embed)
    name = f"jishi-agent-{__version__}-win_amd64"
    bundle = out / name
    if bundle.exists():
        shutil.rmtree(bundle)
    wheels, python = bundle / "wheels", bundle / "python"
    site = python / "Lib" / "site-packages"
    wheels.mkdir(parents=True)
    reqs = requirements()
    pip("download", "--disable-pip-version-check", *PIP_TARGET, "--dest", str(wheels), *reqs)
    with tempfile.TemporaryDirectory() as tmp:  # build from a copy: no build/ or egg-info in the tree
        src = Path(tmp) / "src"
        src.mkdir()
        for f in ("pyproject.toml", "README.md"):
            shutil.copy2(ROOT / f, src / f)
        for pkg in APP_PACKAGES:
            shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        pip("wheel", "--disable-pip-version-check", "--no-deps", "--wheel-dir", str(wheels), str(src))
    project = sorted(wheels.glob("jishi-*.whl"))
    if len(project) != 1:
        raise BuildError(f"expected one project wheel, found {[p.name for p in project]}")
    deps = sorted(w for w in wheels.glob("*.whl") if w not in project)
    for w in deps:  # every binary is for this target: no Linux or macOS wheel slipped in
        tags = w.name[:-4].split("-")[-3:]
        if tags[2] not in ("win_amd64", "any") or not (tags[0] in (f"cp{PY_TAG}", "py3", "py2.py3")
                                                      or tags[1] == "abi3"):
            raise BuildError(f"{w.name} is not a CPython 3.11 win_amd64 or pure wheel")

    with zipfile.ZipFile(embed) as z:
        z.extractall(python)
    pth = python / f"python{PY_TAG}._pth"
    pth.write_text(f"python{PY_TAG}.zip\r\n.\r\nLib\\site-packages\r\n\r\n# site: .pth files (pywin32)\r\n"
                   "import site\r\n", encoding="ascii")
    pip("install", "--disable-pip-version-check", "--no-index", "--no-deps", "--no-compile", *PIP_TARGET,
        "--target", str(site), *[str(w) for w in deps])
    with zipfile.ZipFile(project[0]) as z:
        members = [m for m in z.namelist() if m.split("/")[0] in APP_PACKAGES and "__pycache__" not in m]
        z.extractall(site, members)

    here = Path(__file__).resolve().parent
    for script in ("install.ps1", "uninstall.ps1"):
        shutil.copy2(here / script, bundle / script)
    (bundle / "jishi-agent.cmd").write_text('@"%~dp0python\\python.exe" -m agent.cli %*\r\n', encoding="ascii")
    shutil.copy2(ROOT / "deploy" / "agent" / "WINDOWS.md", bundle / "WINDOWS.md")
    (bundle / "config").mkdir()
    for ex in EXAMPLES:
        shutil.copy2(ROOT / "deploy" / "agent" / ex, bundle / "config" / f"{Path(ex).stem}.toml.example")
    manifest = {
        "name": name, "agent": __version__, "python": {"embed": embed.name, "sha256": sha256(embed)},
        "requirements": reqs,
        "wheels": {w.name: sha256(w) for w in [*deps, *project]},
        "packages": list(APP_PACKAGES),
    }
    (bundle / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    archive = out / f"{name}.zip"
    archive.unlink(missing_ok=True)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(bundle.rglob("*")):
            if f.is_file():
                z.write(f, f"{name}/{f.relative_to(bundle).as_posix()}")
    return archive


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Build the offline Windows bundle of the Jishi agent")
    ap.add_argument("--python-embed", required=True, type=Path,
                    help="path to python-3.11.x-embed-amd64.zip (from python.org; not fetched by this script)")
    ap.add_argument("--out", type=Path, default=ROOT / "dist", help="output folder (default: dist/)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    try:
        archive = build(args.python_embed, args.out)
    except BuildError as exc:
        print(f"build_bundle: {exc}", file=sys.stderr)
        return 1
    print(archive)
    return 0


if __name__ == "__main__":
    sys.exit(main())
