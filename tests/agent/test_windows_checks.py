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
