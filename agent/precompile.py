"""Write the bytecode the production agent loads: `python -m agent.precompile` (issue 17).

The agent runs with `PYTHONOPTIMIZE=2` (no docstrings, no asserts: -1.2 MB resident) and
`PYTHONPYCACHEPREFIX` set to a folder it may write (deploy/agent/*.service, the Windows service's
environment). Distributions ship no `.opt-2.pyc` files, so without this step the first start
compiles the standard library and every library from source, which leaves the process ~5 MB
larger for its whole life. The systemd units run it before each start (`ExecStartPre`): when the
cache is current it only compares timestamps (about a second). Run it with the same environment as
the agent, so the files land where the agent looks (`sys.pycache_prefix`, `sys.flags.optimize`).

Exit status 0 even when a file does not compile (the standard library has test data that does not).
"""

from __future__ import annotations

import compileall
import importlib.util
import re
import sys
import sysconfig
from pathlib import Path

# The top-level packages `jishi-agent run` can import besides the standard library.
PACKAGES = ("agent", "protocols", "paho", "pymodbus", "serial", "watchdog", "psutil", "nacl", "orjson", "win32",
            "win32com")
# Standard library parts the agent never imports (and test data that does not compile).
SKIP_STDLIB = re.compile(r"[\\/](test|tests|idlelib|tkinter|turtledemo|lib2to3|ensurepip|pydoc_data|distutils|"
                         r"site-packages|dist-packages|config-[^\\/]*)[\\/]")
SKIP_PACKAGE = re.compile(r"[\\/](test|tests)[\\/]")


def folders() -> list[tuple[Path, re.Pattern[str]]]:
    """The standard library and the agent's packages as installed for this interpreter, each with
    the paths to leave out."""
    out = [(Path(sysconfig.get_paths()["stdlib"]), SKIP_STDLIB)]
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            out.extend((Path(p), SKIP_PACKAGE) for p in spec.submodule_search_locations)
    return out


def main() -> int:
    for folder, skip in folders():
        compileall.compile_dir(folder, quiet=2, rx=skip, workers=1)
    print(f"agent.precompile: optimize={sys.flags.optimize} prefix={sys.pycache_prefix}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
