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
    neutral: tuple[str, ...] = ()
    """Regexes removed from the response before matching: phrases whose words would otherwise be
    taken at face value (`NO ERROR`, `ERR=0`, `LAST RUN OK`, `READY TO RUN`)."""

    def classify(self, response: str) -> tuple[str | None, int | None]:
        """Return (verdict, register value) for a response, verdict None when nothing matches."""
        text = response.strip()
        if self.register_bits:
            value = register_value(text.split(",")[0])
            if value is None:
                return None, None
            for verdict in ("fault", "running"):
                mask = self.register_bits.get(verdict, 0)
                if mask and value & mask:
                    return verdict, value
            return "idle", value
        for pattern in self.neutral:
            text = re.sub(pattern, " ", text, flags=re.IGNORECASE)
        for verdict, pattern in self.patterns:
            if re.search(pattern, text, re.IGNORECASE):
                return verdict, None
        return None, None


def register_value(text: str) -> int | None:
    """A register value as instruments send it: `16`, `+0016`, `0016` (IEEE 488.2 NR1), `+1.60000E+01`
    (NR3, which many SCPI instruments use even for registers), `0x10`, `#H10` (488.2 hex)."""
    t = text.strip()
    if t[:2].upper() == "#H":
        t = "0x" + t[2:]
    for base in (10, 0):
        try:
            return int(t, base)
        except ValueError:
            pass
    try:
        f = float(t)
    except ValueError:
        return None
    return int(f) if f.is_integer() and 0 <= f < 2**32 else None


# Phrases that contain a status word but do not mean it (the `line` dialect's `neutral`).
NEUTRAL_PHRASES = (
    r"\bNO\s+(ERRORS?|FAULTS?|ALARMS?)\b",
    r"\b(ERR|ERROR|FAULT|ALARM)S?\s*[=:#]?\s*(0+|NONE|OK|NO)\b",
    r"\b0+\s+(ERRORS?|FAULTS?|ALARMS?)\b",
    r"\bLAST\s+(RUN|MEAS\w*|ACQ\w*)\b",
    r"(?<=READY)\s+(TO|FOR)\s+(RUN|MEAS\w*|ACQ\w*|START)\b",
)

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
        neutral=NEUTRAL_PHRASES,
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
        return DIALECTS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown status dialect {name!r}; known: {sorted(DIALECTS)}") from None
