"""Detector error episodes -> `lifecycle`/`detector_error` records: one when an episode starts and
one when it ends, for every episode (a new fault a few seconds after the last one is recorded too).

An episode ends after `recover_polls` healthy polls in a row, so a line that drops one reply in
three is one long episode rather than a record per poll; the recovery record says how many polls
failed.
"""

from __future__ import annotations

from dataclasses import dataclass

RECOVER_POLLS = 3


@dataclass
class _Episode:
    error: str
    failed: int = 1
    healthy: int = 0


class ErrorEpisodes:
    def __init__(self, recover_polls: int = RECOVER_POLLS) -> None:
        self.recover_polls = recover_polls
        self.open: dict[str, _Episode] = {}

    def update(self, name: str, error: str | None) -> dict[str, int | str | bool] | None:
        """Feed one poll's result; returns the detail of a record to write now, or None."""
        ep = self.open.get(name)
        if error is not None:
            if ep is None:
                self.open[name] = _Episode(error)
                return {"detector": name, "error": error}
            ep.failed += 1
            ep.healthy = 0
            return None
        if ep is None:
            return None
        ep.healthy += 1
        if ep.healthy < self.recover_polls:
            return None
        del self.open[name]
        return {"detector": name, "recovered": True, "failed": ep.failed}
