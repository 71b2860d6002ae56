"""The university login in headless Chromium at a phone viewport (issue 19): through the real
OIDC provider's login form, an unknown person registers, is shown as pending (待确认), the unit
manager confirms on the registrations page, and the person is then confirmed."""

from __future__ import annotations

from typing import Any

from tests.web.conftest import Web
from tests.web.livehelp import serve
from tests.web.ssohelp import PROVIDER_PASSWORD, Idp
from tests.web.test_browser import ARTIFACTS, browser, logged_in  # noqa: F401

PHONE = {"width": 390, "height": 844}


def test_phone_logs_in_registers_and_is_confirmed(web: Web, oidc_idp: Idp, browser: Any) -> None:  # noqa: F811
    with serve(web.dsn, port=oidc_idp.browser_port, login_providers=[oidc_idp.provider()]) as base:
        ctx = browser.new_context(locale="zh-CN", viewport=PHONE, is_mobile=True)
        try:
            page = ctx.new_page()
            page.goto(base + "/login?next=/me")
            page.click("#sso-uni")  # 统一身份认证登录
            page.wait_for_selector("#login")  # the provider's own form
            page.fill("#login", "newbie")
            page.fill("#password", PROVIDER_PASSWORD)
            page.click("#submit")
            page.wait_for_url(base + "/register")
            assert page.input_value("#reg-name") == "李四"  # the provider's name claim
            page.fill("#reg-phone", "13800000000")
            page.select_option("#reg-org", "org-b")
            page.screenshot(path=str(ARTIFACTS / "login-register-phone.png"), full_page=True)
            page.click("#reg-submit")
            page.wait_for_url(base + "/me")
            assert page.text_content("#person-status") == "待确认"
            assert page.text_content("#person-org") == "乙研究所"
            with logged_in(browser, base, "mgr-b") as mgr:
                mgr.goto(base + "/registry/registrations")
                mgr.click("#registrations button.confirm")
                mgr.wait_for_selector("#no-registrations")
            page.reload()
            assert page.text_content("#person-status") == "已确认"
            page.screenshot(path=str(ARTIFACTS / "login-confirmed-phone.png"), full_page=True)
        finally:
            ctx.close()
