"""Power calibration: propose an instrument's off / standby / running levels from readings.

Fixed thresholds fail where an instrument draws LESS while running than in standby (domain
notes), so levels are learnt per instrument. Best: record each state on purpose
(`jishi-agent calibrate --label standby --seconds 300`, then running, then off) and let
`propose_labelled` place boundaries in the gaps between the labelled distributions, in whatever
order the medians fall. Without labels, `propose_unlabelled` finds clusters of readings and
assumes the highest is running: it says so, and asks for labels when that may be wrong.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

LABEL_STATE = {"off": "off", "standby": "idle", "idle": "idle", "running": "running"}


@dataclass(frozen=True)
class Band:
    label: str
    n: int
    lo_w: float  # 5th percentile
    median_w: float
    hi_w: float  # 95th percentile


@dataclass
class Proposal:
    bands: list[Band]
    levels: list[tuple[str, float | None]]  # (state, below_w); last below_w None
    hysteresis_w: float
    warnings: list[str] = field(default_factory=list)

    def toml(self, detector: str) -> str:
        items = []
        for state, below in self.levels:
            items.append(f'{{ state = "{state}", below_w = {below:.1f} }}' if below is not None
                         else f'{{ state = "{state}" }}')
        lines = [f"# proposed by jishi-agent calibrate for [detectors.{detector}]"]
        lines += [f"# {b.label}: n={b.n}, p5={b.lo_w:.1f} W, median={b.median_w:.1f} W, p95={b.hi_w:.1f} W"
                  for b in self.bands]
        lines += [f"# WARNING: {w}" for w in self.warnings]
        lines.append("levels = [\n  " + ",\n  ".join(items) + ",\n]")
        lines.append(f"hysteresis_w = {self.hysteresis_w:.1f}")
        return "\n".join(lines)


def _pct(sorted_w: Sequence[float], p: float) -> float:
    if not sorted_w:
        raise ValueError("no readings")
    idx = min(len(sorted_w) - 1, max(0, round(p / 100 * (len(sorted_w) - 1))))
    return sorted_w[idx]


def band(label: str, watts: Sequence[float]) -> Band:
    s = sorted(watts)
    return Band(label, len(s), _pct(s, 5), statistics.median(s), _pct(s, 95))


def _levels(bands: list[Band], warnings: list[str]) -> Proposal:
    bands = sorted(bands, key=lambda b: b.median_w)
    levels: list[tuple[str, float | None]] = []
    gaps: list[float] = []
    for lower, upper in itertools.pairwise(bands):
        if lower.hi_w < upper.lo_w:
            boundary = (lower.hi_w + upper.lo_w) / 2
            gaps.append(upper.lo_w - lower.hi_w)
        else:
            boundary = (lower.median_w + upper.median_w) / 2
            warnings.append(f"{lower.label} ({lower.lo_w:.1f}-{lower.hi_w:.1f} W) and {upper.label} "
                            f"({upper.lo_w:.1f}-{upper.hi_w:.1f} W) overlap: power alone cannot separate them; "
                            "combine the power meter with another detector in the state rule")
            gaps.append(max(0.0, upper.median_w - lower.median_w) / 2)
        levels.append((LABEL_STATE.get(lower.label, "idle"), round(boundary, 1)))
    levels.append((LABEL_STATE.get(bands[-1].label, "running"), None))
    states = [s for s, _ in levels]
    if "running" in states and "idle" in states and states.index("running") < states.index("idle"):
        warnings.append("running draw is BELOW standby draw for this instrument: the levels say so explicitly")
    hysteresis = max(0.1, round(min(gaps) / 4, 1)) if gaps else 1.0
    return Proposal(bands=bands, levels=levels, hysteresis_w=hysteresis, warnings=warnings)


def propose_labelled(readings_w: Mapping[str, Sequence[float]]) -> Proposal:
    """Levels from readings recorded while the instrument was known to be in each state."""
    bad = [k for k in readings_w if k not in LABEL_STATE]
    if bad:
        raise ValueError(f"unknown labels {bad}; use off, standby, running")
    bands = [band(label, w) for label, w in readings_w.items() if w]
    if len(bands) < 2:
        raise ValueError("record at least two states (e.g. standby and running)")
    return _levels(bands, [])


def clusters(watts: Sequence[float], max_k: int = 4) -> list[list[float]]:
    """1-D clusters: split the sorted readings at gaps much wider than the readings' own noise."""
    s = sorted(watts)
    if len(s) < 10:
        raise ValueError("at least 10 readings are needed")
    diffs = [b - a for a, b in itertools.pairwise(s)]
    noise = statistics.median(diffs) or 0.01
    spread = s[-1] - s[0]
    threshold = max(1.0, 50 * noise, 0.05 * spread)
    cuts = sorted(range(len(diffs)), key=lambda i: diffs[i], reverse=True)[: max_k - 1]
    cuts = sorted(i for i in cuts if diffs[i] > threshold)
    out: list[list[float]] = []
    start = 0
    for i in cuts:
        out.append(s[start:i + 1])
        start = i + 1
    out.append(s[start:])
    small = max(3, len(s) // 100)
    return [c for c in out if len(c) >= small] or [s]


def propose_unlabelled(watts: Sequence[float]) -> Proposal:
    cl = clusters(watts)
    if len(cl) < 2:
        raise ValueError("the readings form one cluster: record while the instrument changes state, or use --label")
    warnings = ["readings were not labelled: assumed the lowest cluster is off (or standby when above 5 W) and "
                "the highest is running; if this instrument draws less while running than in standby, record "
                "each state with --label instead"]
    labels: list[str] = []
    for i, c in enumerate(cl):
        if i == len(cl) - 1:
            labels.append("running")
        elif i == 0 and statistics.median(c) < 5:
            labels.append("off")
        else:
            labels.append("standby")
    bands = [band(f"{label}#{i}" if labels.count(label) > 1 else label, c) for i, (label, c) in
             enumerate(zip(labels, cl, strict=True))]
    prop = _levels(bands, warnings)
    prop.levels = [(LABEL_STATE.get(label.split("#")[0], "idle"), below) for (_, below), label in
                   zip(prop.levels, [b.label for b in prop.bands], strict=True)]
    return prop
