"""Detector plugins. Each module defines `Config` (a frozen dataclass, its config section) and
`create(name, config) -> Detector`; modules are imported only when configured (memory)."""

from __future__ import annotations

import importlib
from types import ModuleType

KINDS: dict[str, str] = {
    "process": "agent.detectors.process",
    "serial_status": "agent.detectors.serial_status",
    "power_meter": "agent.detectors.power_meter",
    "data_files": "agent.detectors.data_files",
}


def module(kind: str) -> ModuleType:
    """The module implementing detector `kind`; ValueError naming the known kinds otherwise."""
    try:
        return importlib.import_module(KINDS[kind])
    except KeyError:
        raise ValueError(f"unknown detector kind {kind!r}; known: {sorted(KINDS)}") from None
