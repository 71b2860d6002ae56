"""Charts for the pages, drawn in the browser by Plotly.js.

The library's bundle comes from the installed `plotly` package (server/web/vendor.py serves it);
nothing of it is copied into the repo and there is no JavaScript build step. This module only
builds each figure's data and layout as JSON, so what a chart shows is testable as data. Each
chart is a `<figure>` with a caption and its numbers as a table under a fold: readable without
script, by a screen reader, and copyable. Times are Asia/Shanghai wall time (Plotly's date axes
have no zone). static/charts.js draws every figure and follows a clicked bar's link.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from markupsafe import Markup, escape

from server.store.times import TZ
from server.web.i18n import t

# the colours of static/app.css, which Plotly cannot read from classes
COLOURS = {
    "st-running": "#1f9d55", "st-idle": "#e0a800", "st-off": "#8a94a3", "st-fault": "#d64545",
    "st-unknown": "#b8c0cc", "session": "#0b5cad", "cov-watching": "#cfe3d6", "cov-offline": "#6b4fbb",
    "cov-gap": "#d64545", "bar-a": "#0b5cad", "bar-b": "#f0a64a", "bar-u": "#b9c7dc", "ref": "#d64545",
    "band": "rgba(185,199,220,.6)", "grid": "#dde2ea", "text": "#5b6573",
}
TABLE_ROWS = 300  # rows of a chart's data table; the figure itself keeps every point
_CONFIG = {"displayModeBar": False, "responsive": True, "scrollZoom": False}
_FONT = {"family": "system-ui, -apple-system, 'PingFang SC', 'Microsoft YaHei', 'Noto Sans CJK SC', sans-serif",
         "size": 11, "color": COLOURS["text"]}


def _fmt(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".") if abs(v) < 1000 else f"{v:,.0f}"


def _local(t: datetime) -> str:
    """A date axis value: wall time in Asia/Shanghai, to the millisecond."""
    return t.astimezone(TZ).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _layout(height: int, *, left: int = 40, legend: bool = False, **extra: Any) -> dict[str, Any]:
    return {"height": height, "margin": {"l": left, "r": 12, "t": 26 if legend else 8, "b": 28},
            "font": _FONT, "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
            "showlegend": legend,
            "legend": {"orientation": "h", "x": 0, "y": 1.0, "yanchor": "bottom", "traceorder": "normal"},
            "hovermode": "closest", "dragmode": False, "barmode": "overlay", **extra}


def _axis(**extra: Any) -> dict[str, Any]:
    return {"gridcolor": COLOURS["grid"], "zeroline": False, "fixedrange": True, "automargin": True, **extra}


@dataclass(frozen=True)
class Chart:
    """One figure: Plotly's data and layout, and the same numbers as table rows."""

    kind: str  # a class on the figure (e.g. "timeline", "trend-chart")
    title: str
    data: list[dict[str, Any]]
    layout: dict[str, Any]
    head: tuple[str, ...]
    rows: list[tuple[Markup | str, ...]]
    lang: str = "zh"

    def spec(self) -> dict[str, Any]:
        return {"data": self.data, "layout": self.layout, "config": _CONFIG}

    def __html__(self) -> str:
        spec = orjson.dumps(self.spec()).decode()
        # the drawing is one image to a screen reader; the table under it stays readable
        out = [f'<figure class="chart {escape(self.kind)}" aria-label="{escape(self.title)}"'
               f' data-plotly="{escape(spec)}">',
               f'<figcaption class="chart-title">{escape(self.title)}</figcaption>',
               f'<div class="plot" role="img" aria-label="{escape(self.title)}"'
               f' style="min-height:{int(self.layout["height"])}px"></div>',
               f'<details class="chart-data"><summary>{escape(t(self.lang, "chart.data"))}</summary>'
               '<div class="scroll"><table><tr>', *(f"<th>{escape(h)}</th>" for h in self.head), "</tr>"]
        for row in self.rows[:TABLE_ROWS]:
            out.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>")
        if len(self.rows) > TABLE_ROWS:
            out.append(f'<tr><td colspan="{len(self.head)}">'
                       f'{escape(t(self.lang, "chart.more", n=len(self.rows) - TABLE_ROWS))}</td></tr>')
        out.append("</table></div></details></figure>")
        return "".join(out)


def _link(text: str, href: str, cls: str = "") -> Markup:
    c = f' class="{escape(cls)}"' if cls else ""
    return Markup(f'<a{c} href="{escape(href)}">{escape(text)}</a>') if href else Markup(escape(text))


# -- horizontal bars ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    label: str
    value: float | None
    second: float | None = None  # a second series beside the first (e.g. self-reported)
    href: str = ""


def hbars(bars: Sequence[Bar], *, title: str, unit: str = "", percent: bool = False,
          legend: tuple[str, str] | None = None, reference: float | None = None, lang: str = "zh") -> Chart:
    """Horizontal bars, one row per item (readable on a phone however long the labels are), an
    optional second series, and a dashed line at `reference` (e.g. the low-use threshold)."""
    two = any(b.second is not None for b in bars)
    ys = list(range(len(bars)))

    def shown(v: float | None) -> str:
        return "—" if v is None else (f"{v * 100:.1f}%" if percent else _fmt(v) + unit)

    vmax = max([b.value or 0 for b in bars] + [b.second or 0 for b in bars] + [reference or 0, 1e-9])
    if percent:
        vmax = max(vmax, 1.0)
    series = [("value", legend[0] if legend else title, COLOURS["bar-a"])]
    if two:
        series.append(("second", legend[1] if legend else "", COLOURS["bar-b"]))
    data = []
    for attr, name, colour in series:
        values = [getattr(b, attr) for b in bars]
        data.append({"type": "bar", "orientation": "h", "name": name, "y": ys, "x": [v or 0 for v in values],
                     "marker": {"color": colour}, "text": [shown(v) for v in values], "textposition": "outside",
                     "cliponaxis": False,
                     "hovertext": [f"{b.label}: {shown(v)}" for b, v in zip(bars, values, strict=True)],
                     "hovertemplate": "%{hovertext}<extra></extra>",
                     "customdata": [b.href for b in bars]})
    layout = _layout(max((52 if two else 34) * len(bars), 60) + 40 + (20 if legend else 0), left=10,
                     legend=bool(legend), barmode="group" if two else "overlay", bargap=0.25)
    counts = all(v is None or float(v).is_integer() for b in bars for v in (b.value, b.second))
    layout["xaxis"] = _axis(range=[0, vmax * 1.18], tickformat=".0%" if percent else None,
                            dtick=max(1, math.ceil(vmax / 5)) if counts and not percent else None)
    layout["yaxis"] = _axis(tickvals=ys, ticktext=[b.label if len(b.label) <= 12 else b.label[:11] + "…"
                                                   for b in bars],
                            range=[len(bars) - 0.5, -0.5], showgrid=False)
    if reference is not None:
        layout["shapes"] = [{"type": "line", "xref": "x", "yref": "paper", "x0": reference, "x1": reference,
                             "y0": 0, "y1": 1, "line": {"color": COLOURS["ref"], "dash": "dash", "width": 1}}]
    head = (t(lang, "chart.item"), legend[0] if legend else t(lang, "chart.value"),
            *((legend[1] if legend else "",) if two else ()))
    rows = [(_link(b.label, b.href), shown(b.value), *((shown(b.second),) if two else ())) for b in bars]
    return Chart("bars", title, data, layout, head, rows, lang)


# -- stacked columns per day -------------------------------------------------------------------------


def columns(days: Sequence[tuple[str, float, float]], *, title: str, legend: tuple[str, str],
            lang: str = "zh") -> Chart:
    """Stacked columns per day (YYYY-MM-DD): verified hours, then unverified on top."""
    x = [d for d, _, _ in days]
    data = [{"type": "bar", "name": name, "x": x, "y": [row[i] for row in days], "marker": {"color": COLOURS[c]},
             "hovertemplate": f"%{{x|%Y-%m-%d}} {escape(name)}: %{{y:.2f}} h<extra></extra>"}
            for i, name, c in ((1, legend[0], "bar-a"), (2, legend[1], "bar-u"))]
    layout = _layout(200, legend=True, barmode="stack")
    layout["xaxis"] = _axis(type="date", tickformat="%m-%d", showgrid=False)
    layout["yaxis"] = _axis(rangemode="tozero", ticksuffix=" h")
    rows: list[tuple[Markup | str, ...]] = [(d, _fmt(a), _fmt(b)) for d, a, b in days]
    return Chart("columns", title, data, layout, (t(lang, "chart.day"), *legend), rows, lang)


# -- timeline ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    start: datetime
    end: datetime
    cls: str  # a colour of COLOURS, optionally followed by " unwatched"
    title: str
    label: str = ""
    href: str = ""  # a link (e.g. to the interval's evidence)


def timeline(t0: datetime, t1: datetime, lanes: Sequence[tuple[str, Sequence[Span]]], *, title: str,
             lang: str = "zh") -> Chart:
    """Lanes of intervals over [t0, t1): states, sessions, coverage. Time without data stays empty,
    so a gap shows as a gap. One bar trace per colour; a bar's link is its `customdata`."""
    groups: dict[str, list[tuple[int, Span]]] = {}
    for lane, (_, spans) in enumerate(lanes):
        for s in spans:
            groups.setdefault(s.cls.split()[0], []).append((lane, s))
    wide = (t1 - t0) * 0.07  # a label only where it fits
    data = []
    for cls, items in groups.items():
        data.append({
            "type": "bar", "orientation": "h", "name": cls, "y": [lane for lane, _ in items],
            "base": [_local(s.start) for _, s in items],
            "x": [max((s.end - s.start).total_seconds() * 1000, 0.0) for _, s in items],
            "marker": {"color": COLOURS.get(cls, COLOURS["st-unknown"]),
                       "opacity": [0.45 if "unwatched" in s.cls.split() else 1.0 for _, s in items]},
            "hovertext": [s.title for _, s in items], "hovertemplate": "%{hovertext}<extra></extra>",
            "text": [s.label[:20] if (s.end - s.start) >= wide else "" for _, s in items], "textangle": 0,
            "textposition": "inside", "insidetextanchor": "start",
            "customdata": [s.href for _, s in items], "width": 0.7,
        })
    days = (t1 - t0).total_seconds() / 86400
    layout = _layout(34 * len(lanes) + 44, left=10)
    layout["xaxis"] = _axis(type="date", range=[_local(t0), _local(t1)],
                            tickformat="%H:%M" if days <= 1.01 else "%m-%d",
                            dtick=3 * 3600_000 if days <= 1.01 else 86400_000 * (1 if days <= 8 else 7))
    layout["yaxis"] = _axis(tickvals=list(range(len(lanes))), ticktext=[name for name, _ in lanes],
                            range=[len(lanes) - 0.5, -0.5], showgrid=False)
    rows: list[tuple[Markup | str, ...]] = []
    for name, spans in lanes:
        for s in spans:
            rows.append((name, _link(s.title, s.href, "span-link"), _local(s.start)[:16], _local(s.end)[:16]))
    head = (t(lang, "chart.lane"), t(lang, "chart.interval"), t(lang, "chart.from"), t(lang, "chart.to"))
    return Chart("timeline", title, data, layout, head, rows, lang)


# -- a curve over time ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    t: datetime
    value: float
    low: float | None = None  # a band under the line (e.g. a heartbeat's minimum and maximum)
    high: float | None = None


def line(t0: datetime, t1: datetime, points: Sequence[Point], *, title: str, unit: str,
         marks: Sequence[tuple[datetime, str]] = (), empty: str = "", lang: str = "zh") -> Chart:
    """A curve over [t0, t1] (e.g. power in W), with an optional min–max band and vertical marks
    (e.g. state changes). Without points it says `empty` instead of drawing a flat line."""
    vmax = max([p.high if p.high is not None else p.value for p in points] + [1e-9]) * 1.1
    data: list[dict[str, Any]] = []
    band = [p for p in points if p.low is not None and p.high is not None]
    if band:
        data.append({"type": "scatter", "mode": "lines", "x": [_local(p.t) for p in band],
                     "y": [p.high for p in band], "line": {"width": 0}, "hoverinfo": "skip", "showlegend": False})
        data.append({"type": "scatter", "mode": "lines", "x": [_local(p.t) for p in band],
                     "y": [p.low for p in band], "line": {"width": 0}, "fill": "tonexty",
                     "fillcolor": COLOURS["band"], "hoverinfo": "skip", "showlegend": False})
    if points:
        data.append({"type": "scatter", "mode": "lines+markers" if len(points) <= 80 else "lines",
                     "name": title, "x": [_local(p.t) for p in points], "y": [p.value for p in points],
                     "line": {"color": COLOURS["bar-a"], "width": 1.6}, "marker": {"size": 5},
                     "hovertemplate": f"%{{x|%m-%d %H:%M:%S}} %{{y:.1f}} {escape(unit)}<extra></extra>"})
    if marks:
        data.append({"type": "scatter", "mode": "markers", "name": "marks", "x": [_local(m) for m, _ in marks],
                     "y": [vmax / 1.1 * 1.05] * len(marks), "hovertext": [label for _, label in marks],
                     "marker": {"symbol": "triangle-down", "size": 9, "color": COLOURS["ref"]},
                     "hovertemplate": "%{x|%H:%M:%S} %{hovertext}<extra></extra>"})
    total = (t1 - t0).total_seconds()
    layout = _layout(220, left=50)
    layout["xaxis"] = _axis(type="date", range=[_local(t0), _local(t1)],
                            tickformat="%H:%M" if total <= 86400 * 1.01 else "%m-%d %H:%M")
    layout["yaxis"] = _axis(range=[0, vmax], ticksuffix=f" {unit}", rangemode="tozero")
    layout["shapes"] = [{"type": "line", "xref": "x", "yref": "paper", "x0": _local(m), "x1": _local(m), "y0": 0,
                         "y1": 1, "line": {"color": COLOURS["ref"], "dash": "dot", "width": 1}} for m, _ in marks]
    if not points:
        layout["annotations"] = [{"text": empty, "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5,
                                  "showarrow": False, "font": {"size": 13}}]
    rows: list[tuple[Markup | str, ...]] = [
        (_local(p.t)[5:19], _fmt(p.value), "" if p.low is None else _fmt(p.low), "" if p.high is None else _fmt(p.high))
        for p in points]
    rows += [(_local(m)[5:19], label, "", "") for m, label in marks]
    rows.sort(key=lambda r: str(r[0]))
    head = (t(lang, "chart.time"), f"{t(lang, 'chart.value')} ({unit})", t(lang, "chart.min"), t(lang, "chart.max"))
    return Chart("line-chart", title, data, layout, head, rows, lang)


# -- a ratio per period ----------------------------------------------------------------------------------


def trend(items: Sequence[tuple[str, float | None, float | None]], *, title: str, legend: tuple[str, str],
          reference: float | None = None, lang: str = "zh") -> Chart:
    """Columns of a ratio per period (e.g. utilization per month, label YYYY-MM or YYYY-MM-DD): the
    verified part, on top the part that is not verified; a dashed line at `reference`."""

    def pct(v: float | None) -> str:
        return "—" if v is None else f"{v * 100:.1f}%"

    x = [label for label, _, _ in items]
    verified = [a or 0.0 for _, a, _ in items]
    extra = [max((b or 0.0) - (a or 0.0), 0.0) for _, a, b in items]
    data = [
        {"type": "bar", "name": legend[0], "x": x, "y": verified, "marker": {"color": COLOURS["bar-a"]},
         "hovertext": [f"{label}: {pct(a)}" for label, a, _ in items], "hovertemplate": "%{hovertext}<extra></extra>"},
        {"type": "bar", "name": legend[1], "x": x, "y": extra, "marker": {"color": COLOURS["bar-u"]},
         "hovertext": [f"{label}: {legend[1]} {pct(b)}" for label, _, b in items],
         "hovertemplate": "%{hovertext}<extra></extra>"},
    ]
    vmax = max([(b if b is not None else a or 0.0) for _, a, b in items] + [reference or 0.0, 0.1]) * 1.1
    layout = _layout(210, legend=True, barmode="stack")
    layout["xaxis"] = _axis(type="category", tickvals=x,
                            ticktext=[label[2:] if len(label) == 7 else label[5:] for label in x], showgrid=False)
    layout["yaxis"] = _axis(range=[0, vmax], tickformat=".0%")
    if reference is not None:
        layout["shapes"] = [{"type": "line", "xref": "paper", "yref": "y", "x0": 0, "x1": 1, "y0": reference,
                             "y1": reference, "line": {"color": COLOURS["ref"], "dash": "dash", "width": 1}}]
    rows: list[tuple[Markup | str, ...]] = [(label, pct(a), pct(b)) for label, a, b in items]
    return Chart("trend-chart", title, data, layout, (t(lang, "chart.period"), *legend), rows, lang)
