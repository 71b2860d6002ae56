"""Charts: what a page pays for Plotly. Prints the bundle's size as served (raw, gzipped, time to
gzip once), and for a busy month's timeline (--spans state intervals, a tenth as many sessions) the
time to build the figure on the server, its HTML size, and the time Debian's Chromium takes to
draw it with the installed plotly.min.js.

    .venv/bin/python bench/web_charts.py [--spans 2000]
"""

from __future__ import annotations

import argparse
import gzip
import random
import time
from datetime import datetime, timedelta
from pathlib import Path

from server.store.times import TZ
from server.web import vendor
from server.web.services import charts

CHROMIUM = Path("/usr/bin/chromium")
STATES = ("st-running", "st-idle", "st-off", "st-fault")


def month(n: int, seed: int = 1) -> charts.Chart:
    rnd = random.Random(seed)
    t0 = datetime(2025, 3, 1, tzinfo=TZ)
    t1 = t0 + timedelta(days=31)
    step = (t1 - t0) / n
    states = [charts.Span(t0 + i * step, t0 + (i + 1) * step, rnd.choice(STATES), f"interval {i}",
                          href=f"?ev_from={i}") for i in range(n)]
    sessions = [charts.Span(t0 + i * 10 * step, t0 + (i * 10 + 6) * step, "session", f"U-{i:04x}", f"U-{i:04x}",
                            href=f"?ev_from=s{i}") for i in range(n // 10)]
    return charts.timeline(t0, t1, [("状态", states), ("使用者", sessions), ("监测覆盖", [])], title="运行时间线")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--spans", type=int, default=2000)
    args = ap.parse_args()
    raw = vendor.plotly_path().read_bytes()
    t = time.perf_counter()
    gz = gzip.compress(raw, 6, mtime=0)
    print(f"plotly {vendor.plotly_version()} bundle: {len(raw):,} B, gzipped {len(gz):,} B "
          f"(gzip once: {time.perf_counter() - t:.2f} s)")
    t = time.perf_counter()
    html = month(args.spans).__html__()
    built = time.perf_counter() - t
    print(f"month timeline, {args.spans:,} intervals + {args.spans // 10:,} sessions: built in {built * 1000:.0f} ms,"
          f" {len(html.encode()):,} B of HTML ({len(gzip.compress(html.encode())):,} B gzipped)")
    if not CHROMIUM.exists():
        print("chromium not installed: draw time not measured")
        return
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                               args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = b.new_page(viewport={"width": 1280, "height": 800})
        page.set_content(f"<!doctype html><meta charset=utf-8><body>{html}</body>")
        page.add_script_tag(content=raw.decode())
        draws = []
        for _ in range(5):
            draws.append(page.evaluate("""() => {
                const fig = document.querySelector('figure.chart'), el = fig.querySelector('.plot');
                const spec = JSON.parse(fig.dataset.plotly);
                Plotly.purge(el);
                const t = performance.now();
                return Plotly.newPlot(el, spec.data, spec.layout, spec.config).then(() => performance.now() - t);
            }"""))
        b.close()
    print(f"draw in Chromium (headless, 5 runs): median {sorted(draws)[2]:.0f} ms, max {max(draws):.0f} ms")


if __name__ == "__main__":
    main()
