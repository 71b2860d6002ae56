"""The import contracts of pyproject.toml ([tool.importlinter]) hold for the tree as it is.

They keep the graph one way: protocols imports nothing of ours; agent and server import only
protocols; the server's pipeline runs ingest -> derive -> store, evaluation reads the store, exports
and web sit on top, and nothing imports back; web pages never import API routes. `make lint` runs
the same check; `lint-imports` from the repository root prints the report.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([exe, "--no-cache", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_import_contracts_are_kept() -> None:
    proc = _lint_imports()
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_a_broken_contract_is_reported(tmp_path: Path) -> None:
    """The checker sees real imports: web does import the storage layer, so forbidding it must fail."""
    cfg = tmp_path / "contracts.ini"
    cfg.write_text(
        "[importlinter]\nroot_packages =\n    server\n\n"
        "[importlinter:contract:probe]\nname = probe\ntype = forbidden\n"
        "source_modules =\n    server.web\nforbidden_modules =\n    server.store\n"
    )
    proc = _lint_imports("--config", str(cfg))
    assert proc.returncode != 0
    assert "server.web" in proc.stdout and "BROKEN" in proc.stdout


def test_no_private_name_crosses_a_module() -> None:
    """`from x import _name` between our modules means a helper is shared but not owned: make it public
    where it belongs (e.g. server/web/templating.py `need`, services/registry.py `PEOPLE`)."""
    crossing = []
    for path in sorted((ROOT / "server").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("server", "protocols"):
                crossing += [f"{path.relative_to(ROOT)}: {node.module}.{a.name}" for a in node.names
                             if a.name.startswith("_") and not a.name.startswith("__")]
    assert crossing == []


def test_storage_basics_are_defined_once() -> None:
    """`Conn`, `TZ` and conversions between stored instants and datetimes live in server/store only
    (server/clock.py reads the wall clock; it converts nothing)."""
    found = []
    for path in sorted((ROOT / "server").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("server/store/"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, ast.AnnAssign) else []
            found += [f"{rel}: defines {t.id}" for t in targets if isinstance(t, ast.Name) and t.id in ("Conn", "TZ")]
        if rel == "server/clock.py":
            continue
        for sub in ast.walk(tree):
            if isinstance(sub, ast.Attribute) and sub.attr in ("fromtimestamp", "timestamp"):
                found.append(f"{rel}:{sub.lineno}: .{sub.attr}")
    assert found == []
