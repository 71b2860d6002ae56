"""Browser tests in Debian's headless Chromium driven by Playwright (never `playwright install`).

The live board must change within a second of a state being stored; login and role redirects
must work; every page is screenshotted into tests/artifacts/ for a reviewer to look at.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.web.conftest import PASSWORD, Web
from tests.web.livehelp import serve, store_live

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    if not CHROMIUM.exists():
        proc = subprocess.run(["bash", str(REPO / "deploy" / "install-browser.sh")], capture_output=True, text=True,
                              timeout=600, check=False)
        if proc.returncode != 0 or not CHROMIUM.exists():
            pytest.skip(f"Debian's chromium could not be installed: {proc.stderr.strip()[-300:]}")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _login(page: Any, base: str, login: str) -> None:
    page.goto(base + "/login")
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")


def test_login_and_role_redirects(browser: Any, make_web: Callable[..., Web]) -> None:
    web = make_web()
    with serve(web.dsn) as base:
        ctx = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 800})
        page = ctx.new_page()
        page.goto(base + "/units/ua/board")
        assert page.url == base + "/login?next=/units/ua/board"
        page.screenshot(path=str(ARTIFACTS / "login.png"))
        page.fill("input[name=login]", "mgr-a")
        page.fill("input[name=password]", "wrong")
        page.click("button[type=submit]")
        assert "用户名或密码错误" in page.inner_text("#login-error")
        page.screenshot(path=str(ARTIFACTS / "login-error.png"))
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(base + "/units/ua/board")
        page.goto(base + "/overview")
        assert "403" in page.inner_text("h1")
        ctx.close()
        for login, home in (("eva", "/overview"), ("ops", "/registry")):
            ctx = browser.new_context(locale="zh-CN")
            page = ctx.new_page()
            _login(page, base, login)
            page.wait_for_url(base + home)
            ctx.close()


def test_live_board_changes_within_a_second(browser: Any, make_web: Callable[..., Web]) -> None:
    web = make_web()
    store_live(web.dsn, "ua-xrd", "ua", "ua-xrd-a1", "idle")
    with serve(web.dsn) as base:
        ctx = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 800})
        page = ctx.new_page()
        _login(page, base, "mgr-a")
        page.wait_for_url(base + "/units/ua/board")
        page.wait_for_selector("#live-status.ok", timeout=5000)
        assert page.get_attribute("#tile-ua-xrd .tile-state", "data-status") == "idle"
        page.screenshot(path=str(ARTIFACTS / "board-before.png"))
        t0 = time.monotonic()
        store_live(web.dsn, "ua-xrd", "ua", "ua-xrd-a1", "running", identifier="LAB\\zhang",
                   org_name="丙科技有限公司", today_running_s=3600)
        page.wait_for_selector('#tile-ua-xrd .tile-state[data-status="running"]', timeout=3000)
        elapsed = time.monotonic() - t0
        assert "丙科技有限公司" in page.inner_text("#tile-ua-xrd")
        assert "1.0" in page.inner_text("#tile-ua-xrd .tile-today")
        page.screenshot(path=str(ARTIFACTS / "board-after.png"))
        assert elapsed < 1.0, f"the board took {elapsed:.2f} s"
        store_live(web.dsn, "ua-xrd", "ua", "ua-xrd-a1", "running", online=False)
        page.wait_for_selector('#tile-ua-xrd .tile-state[data-status="offline"]', timeout=3000)
        assert "采集端离线" in page.inner_text("#tile-ua-xrd")
        ctx.close()
        # on a phone, in English
        phone = browser.new_context(locale="en-US", viewport={"width": 390, "height": 844}, is_mobile=True,
                                    device_scale_factor=2)
        page = phone.new_page()
        _login(page, base, "mgr-a")
        page.goto(base + "/units/ua/board?lang=en")
        page.wait_for_selector("#live-status.ok", timeout=5000)
        assert "Agent offline" in page.inner_text("#tile-ua-xrd")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the board scrolls sideways on a phone ({width} px)"
        page.screenshot(path=str(ARTIFACTS / "board-phone-en.png"), full_page=True)
        phone.close()


def test_screenshots_of_every_page(browser: Any, make_web: Callable[..., Web]) -> None:
    web = make_web()
    store_live(web.dsn, "ua-xrd", "ua", "ua-xrd-a1", "running", identifier="LAB\\zhang", org_name="丙科技有限公司")
    shots = {
        "ops": [("registry", "/registry"), ("audit", "/audit"), ("overview-operator", "/overview?year=2025")],
        "mgr-a": [("instrument-day", "/instruments/ua-xrd?span=day&start=2025-03-03"),
                  ("instrument-week", "/instruments/ua-xrd?span=week&start=2025-03-01"),
                  ("report", "/units/ua/report?year=2025")],
        "eva": [("overview", "/overview?year=2025&code=03040702"), ("report-evaluator", "/units/ua/report?year=2025"),
                ("instrument-evaluator", "/instruments/ua-xrd?span=day&start=2025-03-03")],
    }
    with serve(web.dsn) as base:
        ctx = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 800})
        page = ctx.new_page()
        page.goto(base + "/catalog")
        assert "使用中" in page.inner_text("#cat-ua-xrd")
        page.screenshot(path=str(ARTIFACTS / "catalog.png"), full_page=True)
        page.goto(base + "/catalog/ua-xrd")
        page.screenshot(path=str(ARTIFACTS / "catalog-item.png"), full_page=True)
        ctx.close()
        for login, pages in shots.items():
            ctx = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 800})
            page = ctx.new_page()
            _login(page, base, login)
            for name, path in pages:
                page.goto(base + path)
                assert page.locator("main").count() == 1
                if login == "eva":
                    assert "张三" not in page.content()
                page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
            if login == "ops":
                page.goto(base + "/registry?unit=ua")
                page.click('button.enrol[data-instrument="ua-nmr"]')
                page.wait_for_selector("#enrol-dialog[open]")
                assert 'instrument = "ua-nmr"' in page.inner_text("#enrol-config")
                page.screenshot(path=str(ARTIFACTS / "enrol-dialog.png"))
            ctx.close()
    assert web.sql("SELECT count(*) FROM enrolment_tokens") == [(1,)]
