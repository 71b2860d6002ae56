"""The hand-off between ingest's open thread and its database thread (server/ingest/batching.py):
the database thread takes everything opened so far, in arrival order, within the batch limits;
the open thread is held back while the database is behind."""

from __future__ import annotations

import threading

from server.ingest.batching import Handoff, Opened
from server.ingest.verify import Incoming, Refused


def item(n: int, size: int = 10) -> Opened:
    m = Incoming(f"jishi/v1/u/i{n}/rec", b"x" * size, float(n), mid=n)
    return m, Refused(m, "rec", "schema", f"message {n}")


def mids(items: list[Opened]) -> list[int]:
    return [m.mid for m, _ in items]


def test_take_returns_everything_waiting_in_arrival_order_up_to_the_message_limit() -> None:
    h = Handoff(max_messages=3, max_bytes=10_000, capacity_messages=100, capacity_bytes=10**6)
    stop = threading.Event()
    for n in range(5):
        assert h.put(item(n), stop)
    assert mids(h.take(0)) == [0, 1, 2]
    assert mids(h.take(0)) == [3, 4]
    assert h.take(0.01) == []


def test_a_lone_message_is_a_batch_of_its_own() -> None:
    h = Handoff(max_messages=500, max_bytes=10_000, capacity_messages=1000, capacity_bytes=10**6)
    stop = threading.Event()
    got: list[list[Opened]] = []
    taker = threading.Thread(target=lambda: got.append(h.take(30)))
    taker.start()
    h.put(item(7), stop)
    taker.join(30)
    assert [mids(b) for b in got] == [[7]]


def test_the_byte_limit_ends_a_batch_but_never_leaves_it_empty() -> None:
    h = Handoff(max_messages=100, max_bytes=25, capacity_messages=100, capacity_bytes=10**6)
    stop = threading.Event()
    h.put(item(0, 40), stop)  # larger than a batch on its own
    h.put(item(1, 10), stop)
    h.put(item(2, 10), stop)
    h.put(item(3, 10), stop)
    assert mids(h.take(0)) == [0]
    assert mids(h.take(0)) == [1, 2]
    assert mids(h.take(0)) == [3]


def test_put_waits_for_room_and_gives_up_on_stop() -> None:
    h = Handoff(max_messages=10, max_bytes=10_000, capacity_messages=2, capacity_bytes=10**6)
    stop = threading.Event()
    assert h.put(item(0), stop) and h.put(item(1), stop)
    done = threading.Event()
    result: list[bool] = []

    def third() -> None:
        result.append(h.put(item(2), stop))
        done.set()

    t = threading.Thread(target=third)
    t.start()
    assert not done.wait(0.3)  # full: the open thread is held back
    assert mids(h.take(0)) == [0, 1]
    assert done.wait(30) and result == [True]
    t.join(30)
    assert h.put(item(3), stop)  # 2 waiting again: full
    stop.set()
    assert h.put(item(4), stop) is False
    assert mids(h.take(0)) == [2, 3]


def test_byte_capacity_holds_the_open_thread_back() -> None:
    h = Handoff(max_messages=10, max_bytes=10_000, capacity_messages=100, capacity_bytes=50)
    stop = threading.Event()
    assert h.put(item(0, 40), stop)
    stop.set()
    assert h.put(item(1, 20), stop) is False  # 60 bytes would exceed the capacity
    assert mids(h.take(0)) == [0]
    assert h.put(item(2, 200), stop)  # nothing waiting: an oversized message still gets in
    assert mids(h.take(0)) == [2]


def test_a_batch_waits_for_messages_still_arriving() -> None:
    """Messages sent together (here: a generous gap, and the batch ends when full) are one batch,
    so they are judged together, sorted by seq, as when they all waited for the batch to fill."""
    h = Handoff(max_messages=3, max_bytes=10_000, capacity_messages=100, capacity_bytes=10**6)
    stop = threading.Event()
    got: list[list[Opened]] = []
    taker = threading.Thread(target=lambda: got.append(h.take(30, linger_s=30, gap_s=30)))
    taker.start()
    for n in range(4):
        h.put(item(n), stop)
    taker.join(60)
    assert [mids(b) for b in got] == [[0, 1, 2]]
    assert mids(h.take(0)) == [3]
