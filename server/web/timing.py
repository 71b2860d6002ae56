"""Where a request's time goes, by phase, for the `Server-Timing` header (bench/web_load.py reads it
to say which phase of which page is slow under load, rather than guessing from the total).

The middleware (server/web/middleware.py) opens one `Phases` per request in a context variable; the
page threads get a copy of the context, so they add to the same object. Phases (milliseconds):

- `db`: executing SQL (every query of the request, those of an evaluation included);
- `pool`: waiting for a pooled connection (under load: too few connections, or too many threads);
- `queue`: waiting for one of the worker's evaluation slots (services/results.py);
- `eval`: computing an evaluation result that was not kept (its queries are also in `db`);
- `shared`: reading or storing a result in the cache shared by the workers (services/results.py);
- `render`: the Jinja2 template;
- `gzip`: compressing the response body.

Only the time is recorded: no SQL text, no parameters, nothing about who asked.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import psycopg

PHASES = ("db", "pool", "queue", "eval", "shared", "render", "gzip")


class Phases:
    """The seconds spent in each phase by one request (threads add to it; a float add under the
    GIL is enough for a figure that is only reported)."""

    __slots__ = ("app_done", "spent")

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        self.app_done: float | None = None
        """perf_counter when the app (inside the compressor) emitted its response head"""

    def add(self, name: str, seconds: float) -> None:
        self.spent[name] = self.spent.get(name, 0.0) + seconds

    def header(self, total_s: float) -> str:
        parts = [f"app;dur={total_s * 1000:.1f}"]
        parts += [f"{k};dur={self.spent[k] * 1000:.1f}" for k in PHASES if k in self.spent]
        return ", ".join(parts)


current: ContextVar[Phases | None] = ContextVar("jishi_phases", default=None)


def add(name: str, seconds: float) -> None:
    got = current.get()
    if got is not None:
        got.add(name, seconds)


@contextmanager
def phase(name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        add(name, time.perf_counter() - started)


class TimedCursor(psycopg.Cursor[Any]):
    """The pools' cursor class: adds the time of each statement to the request's `db` phase."""

    def execute(self, query: Any, params: Any = None, *, prepare: bool | None = None,
                binary: bool | None = None) -> TimedCursor:
        started = time.perf_counter()
        try:
            super().execute(query, params, prepare=prepare, binary=binary)
        finally:
            add("db", time.perf_counter() - started)
        return self

    def executemany(self, query: Any, params_seq: Any, *, returning: bool = False) -> None:
        started = time.perf_counter()
        try:
            super().executemany(query, params_seq, returning=returning)
        finally:
            add("db", time.perf_counter() - started)

