"""What the running agent keeps out of its memory although its libraries would load it (issue 17).

Measured by import on the development VM (bench/RESULTS.md, "agentmem", "agentmem4"): paho-mqtt
imports `urllib.request` (with `http.client`, `email`, `tempfile`: 2.6 MB) at module level but reads
it only to look up a proxy when PySocks is installed (`deferred`); pymodbus's client package's
`__init__` imports the TCP, TLS and UDP clients next to the serial one (`package_on_demand`), and its
sync serial client needs only asyncio's base classes, not the event loop (`asyncio_classes_only`).
None of the libraries is patched: the import system is told what this process does without.

`ssl` (and with it OpenSSL) stays loaded whether or not TLS is configured: paho names
`ssl.SSLWantReadError` in the `except` of every socket read, so with `ssl` made unavailable a read
that would block raised AttributeError and dropped the broker connection (CI, 2026-12-03;
tests/agent/test_lean.py).

Only `jishi-agent run` (and the Windows service) call these, as their first step, so a test
process or another command that has already imported these modules is left as it is.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import Any


def deferred(name: str) -> bool:
    """Stand in for module `name` until one of its attributes is read, then import it for real.

    For modules a library imports at module level but whose attributes it reads only on paths the
    agent does not take (paho reads `urllib.request` only to look up a proxy when PySocks is
    installed). The stand-in is a module with a PEP 562 `__getattr__`: `import name` finds it in
    `sys.modules` (`importlib.util.LazyLoader` would not do: the import system's own check of
    `__spec__` runs its module). On first use the real module replaces it in `sys.modules` and its
    namespace is copied into the stand-in, for code that kept a reference. True if `name` is now
    deferred; False if it was already imported or cannot be found.
    """
    if name in sys.modules:
        return False
    spec = importlib.util.find_spec(name)  # imports the parent package
    if spec is None:
        return False
    stub = types.ModuleType(name, f"{name}, imported on first use (agent/lean.py)")
    lock = threading.Lock()

    def __getattr__(attr: str) -> Any:
        with lock:
            if sys.modules.get(name, stub) is stub:
                sys.modules.pop(name, None)
                real = importlib.import_module(name)  # also rebinds the parent package's attribute
                stub.__dict__.update({k: v for k, v in vars(real).items() if k != "__getattr__"})
        return getattr(sys.modules[name], attr)

    stub.__getattr__ = __getattr__  # type: ignore[method-assign]
    stub.__deferred__ = True  # type: ignore[attr-defined]  # for tests/agent/test_import_set.py
    sys.modules[name] = stub
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, stub)
    return True


def package_on_demand(name: str) -> bool:
    """Register package `name` without running its `__init__`, so that one submodule can be imported
    alone; the `__init__` runs when an attribute the package does not have yet is read.

    For a package whose `__init__` imports every sibling (pymodbus.client: the TCP, TLS and UDP
    clients next to the serial one, and with them `ssl`). True if registered; False if `name` is
    already imported or is not a package.
    """
    if name in sys.modules:
        return False
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return False
    loader = spec.loader
    pkg = importlib.util.module_from_spec(spec)
    lock = threading.RLock()
    ran: list[bool] = []

    def __getattr__(attr: str) -> Any:
        with lock:
            if not ran:
                ran.append(True)
                loader.exec_module(pkg)
        if attr in vars(pkg):
            return vars(pkg)[attr]
        raise AttributeError(f"module {name!r} has no attribute {attr!r}")

    pkg.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules[name] = pkg
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, pkg)
    return True


ASYNCIO_CLASSES = ("exceptions", "protocols", "transports")


def asyncio_classes_only() -> bool:
    """Give a library that subclasses asyncio's base classes at import but runs synchronously
    (pymodbus's serial client: `ModbusProtocol(asyncio.BaseProtocol)`, `SerialTransport(asyncio.Transport)`,
    `asyncio.exceptions.TimeoutError` raised by the sync transaction) the package `asyncio` with only
    its import-free submodules `exceptions`, `protocols` and `transports` loaded and their names bound,
    as asyncio's `__init__` binds them (`from .protocols import *`). The rest of asyncio (event loops,
    tasks, streams, subprocess, concurrent.futures, and with TLS its `sslproto`) loads when any other
    attribute is read (`package_on_demand`). True if applied; False once asyncio is imported.
    """
    if not package_on_demand("asyncio"):
        return False
    pkg = sys.modules["asyncio"]
    for sub in ASYNCIO_CLASSES:
        mod = importlib.import_module(f"asyncio.{sub}")
        for attr in mod.__all__:
            setattr(pkg, attr, getattr(mod, attr))
    return True


# Imported at module level on the run path, read only on paths the running agent does not take; each
# runs on the first read of one of its attributes (bench/RESULTS.md "agentmem4", "agentmem5"):
# - `logging` (traceback -> linecache -> tokenize, token; traceback -> textwrap) and `dataclasses`
#   (inspect -> linecache, tokenize, token): read to format a traceback or show a warning's source line,
#   so the first logged exception loads them (~0.45 MB);
# - paho: `urllib.request` (a proxy lookup with PySocks installed);
# - psutil: `subprocess` (its `Popen` and `Process.wait`'s timeout), with `locale` (text-mode pipes);
#   `glob` (sensors and disks, not processes or users);
# - `shutil`: `bz2` and `lzma` (`import bz2; del bz2`: only to note that archives may use them; with them
#   go `_compression`, `_bz2`, `_lzma`, libbz2 and liblzma); `tempfile` (`ctypes.util`'s `_findLib_gcc`,
#   the fallback when `ldconfig -p` does not name a library);
# - the publisher: `random` (the reconnect back-off's jitter, once a connection failed);
# - `encodings.idna` (the broker's host name, through `socket.getaddrinfo`): `stringprep` (nameprep
#   of a label that is not ASCII).
RUN_DEFERRED = ("traceback", "linecache", "tokenize", "token", "textwrap", "urllib.request", "subprocess",
                "locale", "glob", "bz2", "lzma", "tempfile", "random", "stringprep")


def before_imports(argv: list[str]) -> None:
    """For `jishi-agent run` (argv without the program name): `for_run()`, called by agent/cli.py before
    its own imports, since `logging` and the config's `dataclasses` are what import the first ones."""
    if argv[:1] == ["run"]:
        for_run()


def for_run() -> None:
    """The modules of RUN_DEFERRED deferred (those already imported stay as they are)."""
    for name in RUN_DEFERRED:
        deferred(name)
