"""A reproducible sample of instruments for on-site spot checks (art. 20 现场抽查).

Weighted toward large discrepancies, without leaving the rest out: every candidate has a base
weight of 1, plus its proven discrepancy hours (contradicted claims and uncovered external use),
plus its unverified running hours at half weight. Sampling without replacement by Efraimidis-
Spirakis keys u^(1/w) from random.Random(seed): the same seed and data give the same sample.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from server.evaluation.indicators import InstrumentFigures


@dataclass(frozen=True)
class Sampled:
    instrument_id: str
    unit_id: str
    name: str
    weight: float
    discrepancy_hours: float
    unverified_hours: float

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def weight(discrepancy_hours: float, unverified_hours: float) -> float:
    return 1.0 + max(0.0, discrepancy_hours) + 0.5 * max(0.0, unverified_hours)


def sample(
    instruments: Iterable[InstrumentFigures], discrepancies: Mapping[str, float], n: int, seed: int
) -> list[Sampled]:
    """n instruments (all if fewer), in order of selection."""
    pool = sorted((f for f in instruments if f.in_scope), key=lambda f: f.id)
    rng = random.Random(seed)
    keyed = []
    for f in pool:
        d = discrepancies.get(f.id, 0.0)
        w = weight(d, f.running.unverified)
        keyed.append((rng.random() ** (1.0 / w), Sampled(f.id, f.unit_id, f.name, w, d, f.running.unverified)))
    keyed.sort(key=lambda kv: -kv[0])
    return [s for _, s in keyed[:n]]
