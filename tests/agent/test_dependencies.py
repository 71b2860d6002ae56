"""The agent ships without pydantic: not in its dependencies, and no agent module imports it."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from tests.agent.helpers import ROOT

# Imports every agent module with pydantic made unimportable: any import of it, direct or through
# protocols/, fails loudly instead of passing because pydantic happens to be installed here.
BLOCKED = r"""
import importlib, pkgutil, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "pydantic" or name.startswith("pydantic.") or name.startswith("pydantic_"):
            raise ImportError(f"pydantic imported: {name}")
        return None
sys.meta_path.insert(0, Block())
import agent
names = [m.name for m in pkgutil.walk_packages(agent.__path__, "agent.")]
for name in names:
    importlib.import_module(name)
print(len(names), "modules")
"""


def test_no_agent_module_imports_pydantic() -> None:
    out = subprocess.run([sys.executable, "-c", BLOCKED], capture_output=True, text=True, cwd=ROOT, check=False,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[0]) >= 15  # the walk really found the agent's modules


def test_pydantic_is_a_server_dependency_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    agent_side = [*project["dependencies"], *project["optional-dependencies"]["agent"]]
    assert not any(d.lower().startswith("pydantic") for d in agent_side), agent_side
    assert any(d.startswith("pydantic>=") for d in project["optional-dependencies"]["server"])
