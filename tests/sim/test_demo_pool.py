"""The demo's history worker (sim.demo.history_pool) must die on SIGTERM although the demo's own
SIGTERM handler only sets a flag: a worker that inherited that handler survived `Pool.terminate`,
and the pool's join kept the demo's first run waiting forever after the backfill was published
(CI, 2026-12-03)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import psutil
import pytest

from sim.demo import history_pool


@pytest.fixture
def flag_only_sigterm() -> Iterator[list[int]]:
    """This process handles SIGTERM the way the demo does: by noting it."""
    seen: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        seen.append(signum)

    old = signal.signal(signal.SIGTERM, note)
    yield seen
    signal.signal(signal.SIGTERM, old)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_the_worker_dies_on_sigterm_and_leaves_ctrl_c_to_the_demo(flag_only_sigterm: list[int]) -> None:
    with history_pool() as pool:
        assert pool.apply(signal.getsignal, (signal.SIGTERM,)) == signal.SIG_DFL
        assert pool.apply(signal.getsignal, (signal.SIGINT,)) == signal.SIG_IGN
    assert flag_only_sigterm == []


@pytest.mark.parametrize("fails", [False, True], ids=["ends", "raises"])
def test_the_pool_ends_with_its_worker(flag_only_sigterm: list[int], fails: bool) -> None:
    """Run in a thread so that a pool that never ends fails the test instead of hanging it."""
    pids: list[int] = []

    def run() -> None:
        try:
            with history_pool() as pool:
                pids.append(pool.apply(os.getpid))
                if fails:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            pids.append(-1)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "the pool's join never returned"
    assert pids[1:] == ([-1] if fails else [])
    assert _gone(pids[0])
