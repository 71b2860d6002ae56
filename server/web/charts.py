"""Charts drawn as SVG on the server.

Why not a JavaScript chart library: the project may not copy third-party code into the repo, and
no maintained chart library ships its browser assets in a Python package we already install; an
npm build step would add a toolchain to every deployment for three simple chart kinds. Server-side
SVG needs no script, prints, works on phones, and is testable as text. Colours come from classes
styled in static/app.css.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from markupsafe import Markup, escape

from server.evaluation.period import TZ


def _fmt(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".") if abs(v) < 1000 else f"{v:,.0f}"


def _legend_header(cls: str, width: int, height: int, left: int, title: str, legend: tuple[str, str]) -> list[str]:
    """The opening of a two-series chart: the svg element, its title and the verified / all legend."""
    return [f'<svg class="{cls}" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}"'
            f' xmlns="http://www.w3.org/2000/svg">',
            f'<text class="chart-title" x="0" y="14">{escape(title)}</text>',
            f'<rect class="bar-a" x="{left}" y="22" width="10" height="10"/>'
            f'<text class="chart-label" x="{left + 14}" y="31">{escape(legend[0])}</text>'
            f'<rect class="bar-u" x="{left + 140}" y="22" width="10" height="10"/>'
            f'<text class="chart-label" x="{left + 154}" y="31">{escape(legend[1])}</text>']


@dataclass(frozen=True)
class Bar:
    label: str
    value: float | None
    second: float | None = None  # a second series drawn under the first (e.g. self-reported)
    href: str = ""


def hbars(bars: Sequence[Bar], *, title: str, unit: str = "", percent: bool = False,
          legend: tuple[str, str] | None = None, reference: float | None = None) -> Markup:
    """Horizontal bars: one row per item, readable on a phone however long the labels are."""
    row_h = 30 if any(b.second is not None for b in bars) else 22
    label_w, width, top = 150, 560, 28 + (18 if legend else 0)
    plot_w = width - label_w - 60
    vmax = max([b.value or 0 for b in bars] + [b.second or 0 for b in bars] + [reference or 0, 1e-9])
    if percent:
        vmax = max(vmax, 1.0)
    height = top + row_h * max(len(bars), 1) + 8
    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}"'
           f' xmlns="http://www.w3.org/2000/svg">',
           f'<text class="chart-title" x="0" y="16">{escape(title)}</text>']
    if legend:
        out.append(f'<rect class="bar-a" x="{label_w}" y="24" width="10" height="10"/>'
                   f'<text class="chart-label" x="{label_w + 14}" y="33">{escape(legend[0])}</text>'
                   f'<rect class="bar-b" x="{label_w + 160}" y="24" width="10" height="10"/>'
                   f'<text class="chart-label" x="{label_w + 174}" y="33">{escape(legend[1])}</text>')
    for i, b in enumerate(bars):
        y = top + i * row_h
        label = b.label if len(b.label) <= 12 else b.label[:11] + "…"
        text = f'<text class="chart-label" x="{label_w - 6}" y="{y + 14}" text-anchor="end">{escape(label)}</text>'
        if b.href:
            text = f'<a href="{escape(b.href)}">{text}</a>'
        out.append(f"<g><title>{escape(b.label)}</title>{text}")
        for j, (v, cls) in enumerate(((b.value, "bar-a"), (b.second, "bar-b"))):
            if j == 1 and b.second is None:
                continue
            h = 10 if row_h == 30 else 16
            yy = y + 2 + j * 12
            w = 0.0 if v is None else plot_w * max(v, 0) / vmax
            shown = "—" if v is None else (f"{v * 100:.1f}%" if percent else _fmt(v) + unit)
            out.append(f'<rect class="{cls}" x="{label_w}" y="{yy}" width="{w:.1f}" height="{h}"/>'
                       f'<text class="chart-value" x="{label_w + w + 4:.1f}" y="{yy + h - 1}">{escape(shown)}</text>')
        out.append("</g>")
    if reference is not None:
        x = label_w + plot_w * reference / vmax
        out.append(f'<line class="chart-ref" x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height - 4}"/>')
    out.append("</svg>")
    return Markup("".join(out))


def columns(days: Sequence[tuple[str, float, float]], *, title: str, legend: tuple[str, str]) -> Markup:
    """Stacked columns per day: verified hours, then unverified on top."""
    n = max(len(days), 1)
    width, height, left, top, bottom = 560, 180, 34, 40, 22
    plot_w, plot_h = width - left - 6, height - top - bottom
    vmax = max([a + b for _, a, b in days] + [1.0])
    step = plot_w / n
    out = [*_legend_header("chart", width, height, left, title, legend),
           f'<text class="chart-label" x="{left - 4}" y="{top + 8}" text-anchor="end">{_fmt(vmax)}</text>',
           f'<line class="chart-axis" x1="{left}" y1="{top + plot_h}" x2="{width - 6}" y2="{top + plot_h}"/>']
    label_every = max(1, n // 10)
    for i, (label, a, b) in enumerate(days):
        x = left + i * step + step * 0.15
        w = step * 0.7
        ha, hb = plot_h * a / vmax, plot_h * b / vmax
        base = top + plot_h
        out.append(f'<g><title>{escape(label)}: {_fmt(a)} h + {_fmt(b)} h</title>'
                   f'<rect class="bar-a" x="{x:.1f}" y="{base - ha:.1f}" width="{w:.1f}" height="{ha:.1f}"/>'
                   f'<rect class="bar-u" x="{x:.1f}" y="{base - ha - hb:.1f}" width="{w:.1f}" height="{hb:.1f}"/></g>')
        if i % label_every == 0:
            out.append(f'<text class="chart-label" x="{x + w / 2:.1f}" y="{height - 6}" text-anchor="middle">'
                       f'{escape(label[5:] if len(label) == 10 else label)}</text>')
    out.append("</svg>")
    return Markup("".join(out))


@dataclass(frozen=True)
class Span:
    start: datetime
    end: datetime
    cls: str
    title: str
    label: str = ""
    href: str = ""  # a link (e.g. to the interval's evidence)


def timeline(t0: datetime, t1: datetime, lanes: Sequence[tuple[str, Sequence[Span]]], *, title: str) -> Markup:
    """Lanes of intervals over [t0, t1): states, sessions, coverage. Time without data stays empty,
    so a gap shows as a gap."""
    width, left, lane_h, top = 560, 70, 26, 24
    plot_w = width - left - 6
    total = (t1 - t0).total_seconds()
    height = top + lane_h * len(lanes) + 24

    def x(t: datetime) -> float:
        return left + plot_w * max(0.0, min(total, (t - t0).total_seconds())) / total

    out = [f'<svg class="chart timeline" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}"'
           f' xmlns="http://www.w3.org/2000/svg">',
           f'<text class="chart-title" x="0" y="14">{escape(title)}</text>']
    for i, (name, spans) in enumerate(lanes):
        y = top + i * lane_h
        out.append(f'<text class="chart-label" x="{left - 6}" y="{y + 16}" text-anchor="end">{escape(name)}</text>'
                   f'<rect class="lane" x="{left}" y="{y + 2}" width="{plot_w}" height="{lane_h - 6}"/>')
        for s in spans:
            x0, x1 = x(s.start), x(s.end)
            rect = (f'<rect class="{escape(s.cls)}" x="{x0:.2f}" y="{y + 2}" width="{max(x1 - x0, 0.8):.2f}"'
                    f' height="{lane_h - 6}"><title>{escape(s.title)}</title></rect>')
            if s.href:
                rect = f'<a class="span-link" href="{escape(s.href)}">{rect}</a>'
            out.append(rect)
            if s.label and x1 - x0 > 40:
                out.append(f'<text class="span-label" x="{x0 + 3:.1f}" y="{y + 15}">{escape(s.label[:20])}</text>')
    # ticks: hours for a day, days otherwise
    days = total / 86400
    tick = timedelta(hours=3) if days <= 1.01 else timedelta(days=1 if days <= 8 else 7)
    t = t0
    base = top + lane_h * len(lanes)
    while t <= t1:
        xx = x(t)
        local = t.astimezone(TZ)
        label = local.strftime("%H:%M") if tick < timedelta(days=1) else local.strftime("%m-%d")
        out.append(f'<line class="chart-axis" x1="{xx:.1f}" y1="{top}" x2="{xx:.1f}" y2="{base}"/>'
                   f'<text class="chart-label" x="{xx:.1f}" y="{base + 14}" text-anchor="middle">{label}</text>')
        t += tick
    out.append("</svg>")
    return Markup("".join(out))


@dataclass(frozen=True)
class Point:
    t: datetime
    value: float
    low: float | None = None  # a band under the line (e.g. a heartbeat's minimum and maximum)
    high: float | None = None


def line(t0: datetime, t1: datetime, points: Sequence[Point], *, title: str, unit: str,
         marks: Sequence[tuple[datetime, str]] = (), empty: str = "") -> Markup:
    """A curve over [t0, t1] (e.g. power in W), with an optional min–max band and vertical marks
    (e.g. state changes). Without points it says `empty` instead of drawing a flat line."""
    width, height, left, top, bottom = 560, 200, 62, 24, 22
    plot_w, plot_h = width - left - 8, height - top - bottom
    total = max((t1 - t0).total_seconds(), 1e-9)
    vmax = max([p.high if p.high is not None else p.value for p in points] + [1e-9]) * 1.1

    def x(t: datetime) -> float:
        return left + plot_w * max(0.0, min(total, (t - t0).total_seconds())) / total

    def y(v: float) -> float:
        return top + plot_h - plot_h * max(v, 0.0) / vmax

    out = [f'<svg class="chart line-chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}"'
           f' xmlns="http://www.w3.org/2000/svg">',
           f'<text class="chart-title" x="0" y="14">{escape(title)}</text>',
           f'<line class="chart-axis" x1="{left}" y1="{top + plot_h}" x2="{width - 8}" y2="{top + plot_h}"/>',
           f'<line class="chart-axis" x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}"/>']
    if not points:
        out.append(f'<text class="chart-label" x="{left + plot_w / 2:.1f}" y="{top + plot_h / 2:.1f}"'
                   f' text-anchor="middle">{escape(empty)}</text>')
    else:
        out.append(f'<text class="chart-label" x="{left - 4}" y="{top + 8}" text-anchor="end">'
                   f'{_fmt(vmax / 1.1)} {escape(unit)}</text>'
                   f'<text class="chart-label" x="{left - 4}" y="{top + plot_h}" text-anchor="end">0</text>')
        band = [p for p in points if p.low is not None and p.high is not None]
        if band:
            upper = " ".join(f"{x(p.t):.1f},{y(p.high or 0):.1f}" for p in band)
            lower = " ".join(f"{x(p.t):.1f},{y(p.low or 0):.1f}" for p in reversed(band))
            out.append(f'<polygon class="power-band" points="{upper} {lower}"/>')
        path = " ".join(f"{x(p.t):.1f},{y(p.value):.1f}" for p in points)
        out.append(f'<polyline class="power-line" points="{path}"/>')
        if len(points) <= 80:
            for p in points:
                local = p.t.astimezone(TZ).strftime("%m-%d %H:%M:%S")
                out.append(f'<circle class="power-dot" cx="{x(p.t):.1f}" cy="{y(p.value):.1f}" r="2.2">'
                           f'<title>{local} {_fmt(p.value)} {escape(unit)}</title></circle>')
    for t, label in marks:
        xx = x(t)
        out.append(f'<line class="chart-mark" x1="{xx:.1f}" y1="{top}" x2="{xx:.1f}" y2="{top + plot_h}">'
                   f'<title>{escape(label)}</title></line>')
    for i in range(5):
        t = t0 + (t1 - t0) * i / 4
        fmt = "%H:%M" if total <= 86400 * 1.01 else "%m-%d %H:%M"
        anchor = "start" if i == 0 else ("end" if i == 4 else "middle")
        out.append(f'<text class="chart-label" x="{x(t):.1f}" y="{height - 6}" text-anchor="{anchor}">'
                   f'{t.astimezone(TZ).strftime(fmt)}</text>')
    out.append("</svg>")
    return Markup("".join(out))


def trend(items: Sequence[tuple[str, float | None, float | None]], *, title: str, legend: tuple[str, str],
          reference: float | None = None) -> Markup:
    """Columns of a ratio per period (e.g. utilization per month): the verified part, and on top the
    part that is not verified; a dashed line at `reference` (e.g. the low-use threshold)."""
    n = max(len(items), 1)
    width, height, left, top, bottom = 560, 190, 40, 40, 22
    plot_w, plot_h = width - left - 6, height - top - bottom
    vmax = max([(b if b is not None else a or 0.0) for _, a, b in items] + [reference or 0.0, 0.1]) * 1.1
    step = plot_w / n
    base = top + plot_h
    out = [*_legend_header("chart trend-chart", width, height, left, title, legend),
           f'<text class="chart-label" x="{left - 4}" y="{top + 8}" text-anchor="end">{vmax / 1.1 * 100:.0f}%</text>',
           f'<line class="chart-axis" x1="{left}" y1="{base}" x2="{width - 6}" y2="{base}"/>']
    label_every = max(1, n // 12)
    for i, (label, a, b) in enumerate(items):
        xx = left + i * step + step * 0.15
        w = step * 0.7
        va, vb = a or 0.0, max((b or 0.0) - (a or 0.0), 0.0)
        ha, hb = plot_h * va / vmax, plot_h * vb / vmax
        shown = "—" if a is None else f"{a * 100:.1f}%"
        shown_b = "—" if b is None else f"{b * 100:.1f}%"
        out.append(f'<g class="trend-col" data-label="{escape(label)}"><title>{escape(label)}: {shown}'
                   f' ({escape(legend[1])} {shown_b})</title>'
                   f'<rect class="bar-a" x="{xx:.1f}" y="{base - ha:.1f}" width="{w:.1f}" height="{ha:.1f}"/>'
                   f'<rect class="bar-u" x="{xx:.1f}" y="{base - ha - hb:.1f}" width="{w:.1f}" height="{hb:.1f}"/></g>')
        if i % label_every == 0:
            out.append(f'<text class="chart-label" x="{xx + w / 2:.1f}" y="{height - 6}" text-anchor="middle">'
                       f'{escape(label[2:] if len(label) == 7 else label[5:])}</text>')
    if reference is not None:
        yy = base - plot_h * reference / vmax
        out.append(f'<line class="chart-ref" x1="{left}" y1="{yy:.1f}" x2="{width - 6}" y2="{yy:.1f}"/>')
    out.append("</svg>")
    return Markup("".join(out))
