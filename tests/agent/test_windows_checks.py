"""Static checks of the agent as Windows sees it: mypy with --platform win32 over agent/ and
protocols/ (Windows-only branches, pywin32's service framework through its stubs)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.agent.helpers import ROOT


@pytest.mark.slow
def test_mypy_platform_win32_over_agent_and_protocols() -> None:
    out = subprocess.run([sys.executable, "-m", "mypy", "--platform", "win32", "agent", "protocols"],
                         capture_output=True, text=True, cwd=ROOT, check=False, timeout=600,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(ROOT)})
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "Success" in out.stdout


@pytest.mark.parametrize("script", ["install.ps1", "uninstall.ps1"])
def test_install_scripts_parse_as_powershell(script: str) -> None:
    """No PowerShell here: tree-sitter's PowerShell grammar catches syntax errors (unbalanced
    blocks, broken strings), not what the commands do on Windows."""
    import tree_sitter
    import tree_sitter_powershell

    parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))
    src = (ROOT / "deploy" / "windows" / script).read_bytes()
    bad: list[str] = []

    def walk(node: tree_sitter.Node) -> None:
        if node.type == "ERROR" or node.is_missing:
            bad.append(f"line {node.start_point[0] + 1}: {src[node.start_byte:node.end_byte][:80]!r}")
        for child in node.children:
            walk(child)

    tree = parser.parse(src)
    walk(tree.root_node)
    assert not tree.root_node.has_error and not bad, bad
    assert parser.parse(src.replace(b"}", b"", 1)).root_node.has_error  # the check can fail
