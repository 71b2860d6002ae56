"""Meter register maps as data: one TOML file per meter model in `maps/` beside this module.

A file names its source (the manufacturer's register table, or where it was taken from), the power
register and, when the meter has one, the energy counter. Units become integer scales at once:
power to milliwatts, energy to watt-hours (records never carry floats). Pure Python and tomllib:
loading a map costs no device library.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from protocols.instruments.meters import Register

MAPS_DIR = Path(__file__).parent / "maps"
POWER_UNITS = {"W": 1000.0, "kW": 1_000_000.0, "0.1W": 100.0, "0.01kW": 10_000_000.0}
"""raw value x this = milliwatts"""
ENERGY_UNITS = {"Wh": 1.0, "kWh": 1000.0, "0.01kWh": 10.0, "0.1kWh": 100.0}
"""raw value x this = watt-hours"""
FORMATS = ("float32", "int16", "uint16", "int32", "uint32")


@dataclass(frozen=True)
class MeterModel:
    name: str
    description: str
    source: str
    power: Register  # mw_per_unit: raw x this = mW
    energy: Register | None  # mw_per_unit: raw x this = Wh (the same decoding, another unit)
    energy_resolution_wh: int = 10


def _register(table: Any, units: dict[str, float], where: str) -> Register:
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table")
    fn, addr, fmt, unit = table.get("function"), table.get("address"), table.get("format"), table.get("unit")
    if fn not in (3, 4):
        raise ValueError(f"{where}.function must be 3 or 4")
    if not isinstance(addr, int) or not 0 <= addr <= 0xFFFF:
        raise ValueError(f"{where}.address must be 0..65535")
    if fmt not in FORMATS:
        raise ValueError(f"{where}.format must be one of {FORMATS}")
    if unit not in units:
        raise ValueError(f"{where}.unit must be one of {sorted(units)}")
    return Register(function=fn, address=addr, format=fmt, mw_per_unit=units[unit],
                    word_swap=bool(table.get("word_swap", False)))


def parse(text: str, where: str) -> MeterModel:
    """A MeterModel from a map file's text; ValueError naming the file and key otherwise."""
    data = tomllib.loads(text)
    for key in ("name", "description", "source"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise ValueError(f"{where}: {key} is required (a map names its source)")
    energy = data.get("energy")
    return MeterModel(
        name=data["name"], description=data["description"], source=" ".join(data["source"].split()),
        power=_register(data.get("power"), POWER_UNITS, f"{where}: power"),
        energy=None if energy is None else _register(energy, ENERGY_UNITS, f"{where}: energy"),
        energy_resolution_wh=int(energy.get("resolution_wh", 10)) if isinstance(energy, dict) else 10,
    )


def names() -> list[str]:
    return sorted(p.stem for p in MAPS_DIR.glob("*.toml"))


@cache
def get(name: str) -> MeterModel:
    """The map called `name` (case-insensitive); ValueError listing the known maps otherwise."""
    key = name.lower()
    path = MAPS_DIR / f"{key}.toml"
    if not key.replace("_", "").isalnum() or not path.is_file():
        raise ValueError(f"unknown meter map {name!r}; known: {names()}")
    model = parse(path.read_text(encoding="utf-8"), path.name)
    if model.name != key:
        raise ValueError(f"{path.name}: name {model.name!r} does not match the file name")
    return model
