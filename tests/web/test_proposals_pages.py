"""Proposals in the browser: a unit manager's figure change waits on the proposals page; the
operator accepts it there, the other unit's manager does not see it, evaluators see it without
the buttons (issue 13 item 3)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.web import test_browser
from tests.web.conftest import Web
from tests.web.livehelp import serve
from tests.web.test_browser import browser

__all__ = ["browser"]


def _propose(web: Web) -> None:
    r = web.as_("mgr-a").patch("/api/v1/instruments/ua-xrd", json={"rated_hours": "1", "category": "专用"})
    assert r.status_code == 200 and set(r.json()["proposed"]) == {"rated_hours", "category"}


def test_proposals_page_by_role(web: Web) -> None:
    _propose(web)
    mgr_page = web.as_("mgr-a").get("/registry/proposals").text
    assert "额定机时（h/年）" in mgr_page and "ua-xrd" in mgr_page and "api-call accept" not in mgr_page
    assert "ua-xrd" not in web.as_("mgr-b").get("/registry/proposals").text
    assert web.as_("mgr-b").get("/registry/proposals", params={"unit": "ua"}).status_code == 404
    eva_page = web.as_("eva").get("/registry/proposals").text
    assert "ua-xrd" in eva_page and "api-call accept" not in eva_page
    ops_page = web.as_("ops").get("/registry/proposals", params={"lang": "en"}).text
    assert "Rated hours (h/year)" in ops_page and ops_page.count("api-call accept") == 2
    assert "/registry/proposals" in web.as_("ops").get("/registry").text


def test_browser_operator_accepts_and_declines(browser: Any, make_web: Callable[..., Web]) -> None:
    web = make_web()
    _propose(web)
    ids = {f: i for f, i in web.sql("SELECT field, id FROM registry_proposals")}
    with serve(web.dsn) as base:
        with test_browser.logged_in(browser, base, "ops") as page:
            page.goto(base + "/registry/proposals")
            page.click(f'#proposals tr[data-id="{ids["rated_hours"]}"] button.accept')
            page.wait_for_selector(f'#proposals tr[data-id="{ids["rated_hours"]}"]', state="detached")
            assert web.sql("SELECT rated_hours::text FROM instruments WHERE id = 'ua-xrd'") == [("1.0",)]
            page.click(f'#proposals tr[data-id="{ids["category"]}"] button.decline')
            page.wait_for_selector(f'#proposals tr[data-id="{ids["category"]}"]', state="detached")
            assert web.sql("SELECT category FROM instruments WHERE id = 'ua-xrd'") == [("通用",)]
            page.goto(base + "/registry/proposals?status=accepted")
            page.wait_for_selector("#proposals:has-text('account:mgr-a')")
            page.screenshot(path=str(test_browser.ARTIFACTS / "registry-proposals.png"), full_page=True)
    assert web.sql("SELECT field, status, decided_by FROM registry_proposals ORDER BY field") == [
        ("category", "declined", "account:ops"), ("rated_hours", "accepted", "account:ops")]


def test_edit_forms_mark_the_fields_a_manager_only_proposes(web: Web) -> None:
    _propose(web)
    page = web.as_("mgr-a").get("/registry/instruments/ua-xrd/edit").text
    # value, category, accepted / registered / retired dates, rated hours, open, sharing mode
    assert page.count('class="proposal-note"') == 8
    assert "待审：1" in page and "待审：专用" in page
    assert 'class="proposal-note"' not in web.as_("ops").get("/registry/instruments/ua-xrd/edit").text
    person = web.as_("mgr-a").get("/registry/people/p-zhang/edit").text
    assert person.count('class="proposal-note"') == 1
