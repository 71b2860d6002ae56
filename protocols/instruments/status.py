"""Serial status dialects: what to ask an instrument and how to read its answer.

A dialect is a query, a line ending and an ordered list of (verdict, regex) pairs: the first
pattern that matches the response decides. `scpi` instead reads the SCPI Operation Status
condition register (`STATus:OPERation:CONDition?`), whose bits say what the instrument is doing.
Every field can be overridden per instrument in the agent's config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

VERDICTS = ("off", "idle", "running", "fault")


@dataclass(frozen=True)
class Dialect:
    name: str
    query: str
    eol: str
    patterns: tuple[tuple[str, str], ...] = ()
    """(verdict, regex) in order of precedence; searched case-insensitively in the response."""
    register_bits: dict[str, int] = field(default_factory=dict)
    """For register dialects: verdict -> bit mask; the response is an integer."""

    def classify(self, response: str) -> tuple[str | None, int | None]:
        """Return (verdict, register value) for a response, verdict None when nothing matches."""
        text = response.strip()
        if self.register_bits:
            try:
                value = int(text.split(",")[0].strip(), 0)
            except ValueError:
                return None, None
            for verdict in ("fault", "running"):
                mask = self.register_bits.get(verdict, 0)
                if mask and value & mask:
                    return verdict, value
            return "idle", value
        for verdict, pattern in self.patterns:
            if re.search(pattern, text, re.IGNORECASE):
                return verdict, None
        return None, None


# SCPI-99 vol. 1, 9.1: Operation Status register bits. CALibrating (0), SETTling (1),
# RANGing (2), SWEeping (3), MEASuring (4), waiting for TRIGger (5), waiting for ARM (6),
# CORRecting (7). Measuring, sweeping or calibrating count as running.
SCPI_OPERATION_RUNNING = (1 << 0) | (1 << 3) | (1 << 4)

DIALECTS: dict[str, Dialect] = {
    "line": Dialect(
        name="line",
        query="STATUS?",
        eol="\r\n",
        patterns=(
            ("fault", r"\b(ERR|ERROR|FAULT|ALARM)\b"),
            ("running", r"\b(RUN|RUNNING|BUSY|MEAS|MEASURING|ACQ|ACQUIRING|WARMUP|POST)\b"),
            ("idle", r"\b(IDLE|READY|STANDBY|STBY)\b"),
            ("off", r"\b(OFF|SLEEP|SHUTDOWN)\b"),
        ),
    ),
    "scpi": Dialect(
        name="scpi",
        query="STAT:OPER:COND?",
        eol="\n",
        register_bits={"running": SCPI_OPERATION_RUNNING},
    ),
}


def get(name: str) -> Dialect:
    try:
        return DIALECTS[name]
    except KeyError:
        raise ValueError(f"unknown status dialect {name!r}; known: {sorted(DIALECTS)}") from None
