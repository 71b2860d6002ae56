"""Issue 13 item 8: URLs stored in the registry are http(s) only — through the API (and so the
forms), the spreadsheet import, and any other writer (a CHECK in the database); one stored before
the rule is not linked on the public catalog."""

from __future__ import annotations

import csv
import io

import psycopg
import pytest
from psycopg import errors

from server.registry import importer
from server.registry.urls import http_url, is_http_url
from tests.web.conftest import Web

HOSTILE = ["javascript:alert(1)", "JavaScript:alert(document.cookie)", " javascript:alert(1)",
           "java\tscript:alert(1)", "data:text/html,<script>alert(1)</script>", "vbscript:msgbox(1)",
           "//evil.example/x", "http://", "https:/nohost", "file:///etc/passwd", "http://a b.example/"]


@pytest.mark.parametrize("url", HOSTILE)
def test_the_validator_refuses_anything_but_http(url: str) -> None:
    with pytest.raises(ValueError):
        http_url(url)
    assert not is_http_url(url)


def test_the_validator_keeps_http_urls() -> None:
    assert http_url(" https://book.example.cn/xrd?id=1 ") == "https://book.example.cn/xrd?id=1"
    assert http_url("HTTP://Book.Example/") == "HTTP://Book.Example/" and http_url("") == ""


def test_api_refuses_a_javascript_booking_url(web: Web) -> None:
    mgr = web.as_("mgr-a")
    r = mgr.patch("/api/v1/instruments/ua-xrd", json={"booking_url": "javascript:alert(1)"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation"
    assert r.json()["error"]["fields"][0]["field"] == "booking_url"
    r = mgr.post("/api/v1/instruments", json={"id": "ua-new", "unit_id": "ua", "name": "新仪器",
                                              "original_value": "500000.00", "booking_url": "data:text/html,x"})
    assert r.status_code == 422
    assert web.sql("SELECT booking_url FROM instruments WHERE id = 'ua-xrd'") == [("",)]
    r = mgr.patch("/api/v1/instruments/ua-xrd", json={"booking_url": "https://book.example.cn/xrd"})
    assert r.status_code == 200 and r.json()["booking_url"] == "https://book.example.cn/xrd"


def test_import_refuses_a_javascript_booking_url(web: Web) -> None:
    buf = io.StringIO()
    csv.writer(buf).writerows([["所在单位仪器编号", "仪器名称", "原值", "预约服务网址"],
                                 ["N-1", "衍射仪", "1000000", "javascript:alert(1)"]])
    with psycopg.connect(web.dsn) as conn:
        conn.execute("SELECT audit_as('test-import', true)")
        report = importer.run_import(conn, "instruments", "ua", buf.getvalue().encode(), "ledger.csv")
    assert report.status == "rejected" and report.rejected == 1
    assert "预约服务网址" in report.text() and "http" in report.text()


def test_the_database_refuses_it_from_any_writer(web: Web) -> None:
    with psycopg.connect(web.dsn, autocommit=True) as conn, pytest.raises(errors.CheckViolation):
        conn.execute("UPDATE instruments SET booking_url = 'javascript:alert(1)' WHERE id = 'ua-xrd'")


def test_a_url_stored_before_the_rule_is_not_linked(web: Web) -> None:
    with psycopg.connect(web.dsn, autocommit=True) as conn:  # as if stored before migration 021
        conn.execute("ALTER TABLE instruments DROP CONSTRAINT instruments_booking_url_http")
        conn.execute("UPDATE instruments SET booking_url = 'javascript:alert(1)', is_open = true,"
                     " sharing_mode = '外部共享' WHERE id = 'ua-xrd'")
    page = web.client().get("/catalog/ua-xrd")
    assert page.status_code == 200 and "javascript:" not in page.text
    assert "javascript:" not in web.client().get("/api/v1/public/instruments", params={"q": "衍射"}).text
