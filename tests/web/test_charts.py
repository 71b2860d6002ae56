"""Charts: what each figure will draw (checked as data), its table for readers without script, and
the Plotly bundle served from the installed package, never from the repo."""

from __future__ import annotations

import subprocess
from datetime import datetime, timedelta
from importlib import metadata
from pathlib import Path

from server.store.times import TZ
from server.web import vendor
from server.web.services import charts
from tests.web.charthelp import figures
from tests.web.conftest import Web

T0 = datetime(2025, 3, 4, tzinfo=TZ)
REPO = Path(__file__).resolve().parents[2]


def test_timeline_keeps_gaps_links_and_marks_unwatched_time() -> None:
    h = timedelta(hours=1)
    chart = charts.timeline(T0, T0 + 24 * h, [
        ("状态", [charts.Span(T0 + 9 * h, T0 + 10 * h, "st-running", "运行 09:00–10:00", href="?ev_from=a"),
                  charts.Span(T0 + 12 * h, T0 + 13 * h, "st-running unwatched", "运行 12:00–13:00"),
                  charts.Span(T0 + 10 * h, T0 + 11 * h, "st-idle", "空闲")]),
        ("使用者", [charts.Span(T0 + 9 * h, T0 + 11 * h, "session", "张三", "张三", href="/x")]),
    ], title="运行时间线")
    spec = figures(str(chart.__html__()))["运行时间线"]
    running = next(tr for tr in spec["data"] if tr["name"] == "st-running")
    # 09–10 and 12–13: the 10–12 gap stays empty in the running trace
    assert running["base"] == ["2025-03-04 09:00:00.000", "2025-03-04 12:00:00.000"]
    assert running["x"] == [3_600_000.0, 3_600_000.0] and running["y"] == [0, 0]
    assert running["marker"]["opacity"] == [1.0, 0.45] and running["customdata"] == ["?ev_from=a", ""]
    session = next(tr for tr in spec["data"] if tr["name"] == "session")
    assert session["y"] == [1] and session["x"] == [7_200_000.0] and session["text"] == ["张三"]
    assert spec["layout"]["yaxis"]["ticktext"] == ["状态", "使用者"]
    assert spec["layout"]["xaxis"]["range"] == ["2025-03-04 00:00:00.000", "2025-03-05 00:00:00.000"]
    # the same intervals as a table, the evidence link keyboard-reachable
    assert '<a class="span-link" href="?ev_from=a">运行 09:00–10:00</a>' in chart.__html__()


def test_a_hostile_label_stays_text() -> None:
    label = '</figure><script>alert(1)</script>"\'<img src=x onerror=alert(2)>'
    html = str(charts.hbars([charts.Bar(label, 0.5, href="/instruments/a")], title="T", percent=True).__html__())
    assert "<script>" not in html and "<img" not in html
    spec = figures(html)["T"]
    assert spec["data"][0]["hovertext"] == [f"{label}: 50.0%"]


def test_bars_reference_line_percent_and_whole_counts() -> None:
    util = figures(charts.hbars([charts.Bar("甲", 0.05), charts.Bar("乙", None)], title="U", percent=True,
                                reference=0.2).__html__())["U"]
    assert util["data"][0]["x"] == [0.05, 0] and util["data"][0]["text"] == ["5.0%", "—"]
    assert util["layout"]["shapes"][0]["x0"] == 0.2 and util["layout"]["xaxis"]["tickformat"] == ".0%"
    grades = figures(charts.hbars([charts.Bar(g, n) for g, n in (("优秀", 0.0), ("合格", 12.0))],
                                  title="G").__html__())["G"]
    assert grades["layout"]["xaxis"]["dtick"] == 3 and grades["layout"]["yaxis"]["ticktext"] == ["优秀", "合格"]
    pair = figures(charts.hbars([charts.Bar("X", 2.0, 3.5)], title="P", unit=" h", legend=("测量", "自报"))
                   .__html__())["P"]
    assert [(tr["name"], tr["x"]) for tr in pair["data"]] == [("测量", [2.0]), ("自报", [3.5])]
    assert pair["layout"]["barmode"] == "group"


def test_power_curve_band_marks_and_empty() -> None:
    m = timedelta(minutes=1)
    pts = [charts.Point(T0 + i * m, 100.0 + i, 90.0, 120.0 + i) for i in range(3)]
    spec = figures(charts.line(T0, T0 + 3 * m, pts, title="功率曲线", unit="W",
                               marks=[(T0 + m, "空闲 → 运行中")]).__html__())["功率曲线"]
    high, low, curve, marks = spec["data"]
    assert high["y"] == [120.0, 121.0, 122.0] and low["y"] == [90.0] * 3 and low["fill"] == "tonexty"
    assert curve["y"] == [100.0, 101.0, 102.0] and curve["mode"] == "lines+markers"
    assert marks["hovertext"] == ["空闲 → 运行中"] and spec["layout"]["shapes"][0]["x0"] == "2025-03-04 00:01:00.000"
    empty = figures(charts.line(T0, T0 + m, [], title="E", unit="W", empty="无功率读数").__html__())["E"]
    assert empty["data"] == [] and empty["layout"]["annotations"][0]["text"] == "无功率读数"


def test_trend_stacks_the_unverified_part_and_never_below_zero() -> None:
    chart = charts.trend([("2025-01", 0.1, 0.25), ("2025-02", 0.2, 0.1), ("2025-03", None, None)],
                         title="利用率趋势", legend=("已验证", "含未验证"), reference=0.2)
    spec = figures(chart.__html__())["利用率趋势"]
    verified, extra = spec["data"]
    assert verified["y"] == [0.1, 0.2, 0.0]
    assert [round(v, 6) for v in extra["y"]] == [0.15, 0.0, 0.0]
    assert spec["layout"]["xaxis"]["ticktext"] == ["25-01", "25-02", "25-03"]
    assert spec["layout"]["shapes"][0]["y0"] == 0.2


def test_long_tables_are_cut_but_the_figure_keeps_every_point() -> None:
    days = [((T0 + timedelta(days=i)).date().isoformat(), 1.0, 0.5) for i in range(charts.TABLE_ROWS + 5)]
    chart = charts.columns(days, title="C", legend=("已验证", "含未验证"), lang="en")
    html = str(chart.__html__())
    assert len(figures(html)["C"]["data"][0]["x"]) == charts.TABLE_ROWS + 5
    assert html.count("<tr>") == charts.TABLE_ROWS + 2 and "5 more rows not listed" in html


def test_plotly_is_served_from_the_installed_package(web: Web) -> None:
    c = web.client()
    raw = vendor.plotly_path().read_bytes()
    url = vendor.plotly_url()
    assert url == f"/vendor/plotly-{metadata.version('plotly')}.min.js"
    r = c.get(url, headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    assert r.content == raw  # httpx decodes: the bytes of site-packages' bundle
    assert "immutable" in r.headers["cache-control"] and r.headers["content-type"].startswith("text/javascript")
    assert c.get(url, headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    plain = c.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == raw and raw.startswith(b"/**\n* plotly.js")
    missing = c.get("/vendor/plotly-0.0.1.min.js")
    assert missing.status_code == 404
    # the pages load it by that URL; the repo holds no copy of it
    page = web.as_("mgr-a").get("/instruments/ua-nmr").text
    charts_js = vendor.static_url("charts.js")
    assert f'<script src="{url}" defer></script>' in page and f'<script src="{charts_js}" defer>' in page
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert not [f for f in tracked.splitlines() if "plotly" in f.lower() and f.endswith(".js")]
