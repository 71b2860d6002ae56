"""Read the chart figures of a page: their caption and the Plotly spec the browser will draw."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import orjson


class _Figures(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, dict[str, Any]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "figure" and "chart" in (a.get("class") or "").split() and a.get("data-plotly"):
            spec = orjson.loads(a["data-plotly"] or "{}")
            spec["class"] = a.get("class")
            self.found[a.get("aria-label") or ""] = spec


def figures(html: str) -> dict[str, dict[str, Any]]:
    """Title -> {"data", "layout", "config", "class"} for every chart figure in `html`."""
    p = _Figures()
    p.feed(html)
    return p.found
