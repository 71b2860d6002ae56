"""Modbus power-meter register maps: where a meter keeps its active power and how it is encoded.

The agent reads with pymodbus; its meter models are data (agent/detectors/power_meter/maps/*.toml).
The maps here are the ones `sim/modbus_meter.py` serves (a test keeps them equal to the TOML maps).
Values are converted to integer milliwatts at once: records never carry floats.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

Format = Literal["float32", "int16", "uint16", "int32", "uint32"]


@dataclass(frozen=True)
class Register:
    """One quantity: Modbus function code, register address, encoding, scale to milliwatts."""

    function: int  # 3 holding registers, 4 input registers
    address: int
    format: Format
    mw_per_unit: float  # raw value x this = milliwatts (1000 for a value in W, 100 for 0.1 W)
    word_swap: bool = False

    @property
    def count(self) -> int:
        return 2 if self.format in ("float32", "int32", "uint32") else 1


@dataclass(frozen=True)
class MeterMap:
    name: str
    power: Register
    description: str


METERS: dict[str, MeterMap] = {
    # Eastron SDM120-Modbus / SDM230: input register 30013 (0x000C), IEEE-754 float, watts.
    "sdm120": MeterMap("sdm120", Register(4, 0x000C, "float32", 1000.0), "Eastron SDM120/SDM230, single phase"),
    # Eastron SDM630: total system power at input register 30053 (0x0034), float, watts.
    "sdm630": MeterMap("sdm630", Register(4, 0x0034, "float32", 1000.0), "Eastron SDM630, three phase total"),
    # Not a meter model: a generic layout (int32, 0.1 W, holding register 0) the simulator serves. The
    # CHINT DDSU666 is a float meter: agent/detectors/power_meter/maps/ddsu666.toml.
    "int32_decawatt": MeterMap(
        "int32_decawatt", Register(3, 0x0000, "int32", 100.0), "generic: holding 0x0000, int32, 0.1 W"
    ),
}


def get(name: str) -> MeterMap:
    try:
        return METERS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown meter map {name!r}; known: {sorted(METERS)}") from None


def encode(reg: Register, watts: float) -> list[int]:
    """16-bit register words holding `watts` as this register encodes it (used by the simulator)."""
    raw = watts * 1000.0 / reg.mw_per_unit
    if reg.format == "float32":
        data = struct.pack(">f", raw)
    elif reg.format == "int32":
        data = struct.pack(">i", round(raw))
    elif reg.format == "uint32":
        data = struct.pack(">I", round(raw))
    elif reg.format == "int16":
        data = struct.pack(">h", round(raw))
    else:
        data = struct.pack(">H", round(raw))
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    return list(reversed(words)) if reg.word_swap else words


def decode(reg: Register, words: list[int]) -> int:
    """Milliwatts (int) from the register words; raises ValueError on a wrong count or NaN."""
    if len(words) != reg.count:
        raise ValueError(f"expected {reg.count} registers, got {len(words)}")
    if reg.word_swap:
        words = list(reversed(words))
    data = b"".join(w.to_bytes(2, "big") for w in words)
    fmt = {"float32": ">f", "int32": ">i", "uint32": ">I", "int16": ">h", "uint16": ">H"}[reg.format]
    value: float = struct.unpack(fmt, data)[0]
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("meter returned NaN or infinity")
    return round(value * reg.mw_per_unit)


def crc16(data: bytes) -> int:
    """Modbus RTU CRC-16 (poly 0xA001, init 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc
