"""What the running agent keeps out of its memory although its libraries would load it (issue 17).

Measured by import on the development VM (bench/RESULTS.md, "agentmem"): the system OpenSSL behind
`hashlib` 3.5 MB resident, `ssl` 1.6 MB, `urllib.request` (with `http.client`, `email`, `tempfile`)
2.6 MB. paho-mqtt imports all three at module level, but uses `ssl` only when TLS is configured,
`urllib.request` only when PySocks is installed (proxy detection), and `hashlib` only for
WebSockets. pymodbus's transport module runs `import ssl` but reads it only for TLS, and its client
package's `__init__` imports the TCP and TLS clients (which use `ssl` at import): a serial meter
imports `pymodbus.client.serial` alone (`package_on_demand`) with `ssl` stood in for during that import
(`ssl_for_import_only`), which keeps libssl and libcrypto out (-4.7 MB measured by import). None of
the libraries is patched: the import system is told what this process does without, and the
libraries take their own documented fallbacks.

Only `jishi-agent run` (and the Windows service) call these, as their first step, so a test
process or another command that has already imported these modules is left as it is.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.config import Config

def builtin_hashes() -> bool:
    """Make `hashlib` use CPython's built-in SHA-2/SHA-1/MD5 instead of loading OpenSSL.

    `hashlib` falls back to the built-in implementations when `_hashlib` cannot be imported; the
    digests are the same bytes. The cost is speed: SHA-256 of a data file runs at about a quarter
    of OpenSSL's rate (once per finished file, in the data-files thread), which is why `for_run`
    undoes this when `ssl` loads OpenSSL anyway. True if applied; a no-op once `hashlib` or
    `_hashlib` is imported.
    """
    if "hashlib" in sys.modules or "_hashlib" in sys.modules:
        return False
    sys.modules["_hashlib"] = None  # type: ignore[assignment]  # None in sys.modules: ImportError
    return True


def openssl_hashes() -> bool:
    """Undo `builtin_hashes` once `ssl` will load OpenSSL anyway: then OpenSSL's faster SHA-256 costs
    no memory. `hashlib` (imported since by the config loader only) is run again to bind OpenSSL's
    constructors. True if undone."""
    if "_hashlib" not in sys.modules or sys.modules["_hashlib"] is not None:
        return False
    del sys.modules["_hashlib"]
    if "hashlib" in sys.modules:
        importlib.reload(sys.modules["hashlib"])
    return True


def no_ssl() -> bool:
    """Make `ssl` unavailable to a process whose broker connections are all without TLS.

    paho-mqtt, `http.client` and `urllib.request` import `ssl` inside `try ... except ImportError`
    and run without it; `_ssl` would map the system libssl and libcrypto. True if applied.
    """
    if "ssl" in sys.modules:
        return False
    sys.modules["ssl"] = None  # type: ignore[assignment]
    return True


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
            if sys.modules.get(name, stub) in (stub, None):  # None: made unavailable since (ssl_for_import_only)
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


@contextmanager
def ssl_for_import_only() -> Iterator[None]:
    """Let a library `import ssl` that reads it only on paths this process does not take (pymodbus's
    transport module: only for TLS), while `no_ssl` keeps it out of the process.

    Within the block `ssl` is a `deferred` stand-in (on first attribute read it loads the real
    module); afterwards `ssl` is unavailable again for everything else. asyncio is imported first,
    while `ssl` is unavailable: it takes its own fallback (`ssl = None`) instead of reading the
    stand-in's attributes at import. A no-op unless `no_ssl` applies.
    """
    blocked: object = sys.modules.get("ssl", "absent")  # object: mypy types sys.modules' values as never None
    if blocked is not None:
        yield
        return
    import asyncio  # noqa: F401  # binds its `ssl = None` now (asyncio.sslproto reads ssl at import);
    # a no-op after asyncio_classes_only: a later full asyncio finds `ssl` unavailable and takes the fallback

    del sys.modules["ssl"]
    deferred("ssl")
    try:
        yield
    finally:
        if "__deferred__" in vars(sys.modules.get("ssl") or types.ModuleType("-")):
            sys.modules["ssl"] = None  # type: ignore[assignment]


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


def needs_ssl(configs: Iterable[Config]) -> bool:
    """An instrument's broker connection uses TLS, or one of its detectors' libraries reads `ssl` at
    import (a detector config says so with `imports_ssl`: a network power meter, pymodbus's TCP client)."""
    return any(c.mqtt.tls or any(getattr(d.config, "imports_ssl", False) for d in c.detectors) for c in configs)


def for_run(configs: Iterable[Config]) -> None:
    """What applies once the config is known, before the publisher imports paho: no `ssl` unless
    `needs_ssl` (and then OpenSSL's hashes, since OpenSSL is loaded anyway), and a deferred
    `urllib.request` always."""
    if needs_ssl(configs):
        openssl_hashes()
    else:
        no_ssl()
    deferred("urllib.request")
