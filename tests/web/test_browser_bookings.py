"""Bookings and alert settings in Debian's headless Chromium: a visitor books from the catalog and
lands on their booking page with the code; the unit manager approves it on /bookings, adds an
e-mail alert channel and switches a rule off through the forms (static/bookings.js, forms.js)."""

from __future__ import annotations

import re
from typing import Any

from tests.web.conftest import Web
from tests.web.livehelp import serve
from tests.web.test_browser import ARTIFACTS, browser, logged_in  # noqa: F401


def watch(page: Any) -> list[str]:
    """Script and console errors, except the browser's own request for /favicon.ico (there is none)."""
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(f"{m.text} {m.location.get('url', '')}")
            if m.type == "error" and not m.location.get("url", "").endswith("/favicon.ico") else None)
    return errors


def test_booking_and_alert_forms_in_the_browser(web: Web, browser: Any) -> None:  # noqa: F811
    with serve(web.dsn) as base:
        ctx = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
        try:
            page = ctx.new_page()
            errors = watch(page)
            page.goto(base + "/catalog/ua-xrd")
            page.click("#book-online")
            page.fill("input[name=applicant_name]", "李四")
            page.select_option("select[name=applicant_org_id]", "ext-co")
            page.click("#booking-form button[type=submit]")
            page.wait_for_url(re.compile(r"/booking/[A-Z2-9]{10}$"))
            code = page.url.rsplit("/", 1)[1]
            assert "待审批" in (page.text_content("#booking-status") or "")
            page.screenshot(path=str(ARTIFACTS / "booking-requested.png"), full_page=True)
            assert errors == [], "\n".join(errors)
        finally:
            ctx.close()

        with logged_in(browser, base, "mgr-a") as page:
            errors = watch(page)
            page.goto(base + "/bookings")
            page.click("tr[data-status=requested] button[data-api$='/approve']")
            page.wait_for_selector("tr[data-status=approved]")
            page.screenshot(path=str(ARTIFACTS / "bookings.png"), full_page=True)

            page.goto(base + "/alerts/channels/new")
            page.select_option("select[name=kind]", "email")
            page.fill("input[name='recipients.0']", "lab-a@example.edu.cn")
            page.click("#form-submit")
            page.wait_for_url(base + "/alerts")
            assert "lab-a@example.edu.cn" in (page.text_content("#alert-channels") or "")

            page.goto(base + "/alerts/settings/ua")
            page.fill("input[name=offline_minutes]", "")
            page.fill("input[name=unused_days]", "14")
            page.click("#form-submit")
            page.wait_for_url(base + "/alerts")
            page.screenshot(path=str(ARTIFACTS / "alerts.png"), full_page=True)
            assert errors == []
    assert web.sql("SELECT status FROM bookings WHERE code = %s", (code,)) == [("approved",)]
    assert web.sql("SELECT kind, recipients FROM alert_channels") == [("email", ["lab-a@example.edu.cn"])]
    assert web.sql("SELECT offline_minutes, unused_days, fault FROM alert_settings WHERE unit_id = 'ua'") == [
        (None, 14, True)]
