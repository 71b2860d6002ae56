"""From an empty database to a unit report with hours, in the browser, as docs/operations.md "From
empty to first report" tells it (issue 18): the first operator is made with `jishi account`, logs
in, creates an organisation and a unit, types an instrument, issues an enrolment token on the
instrument's page; a real agent (its own process, a simulated power meter) takes the page's
configuration and its one command, enrols over HTTP, sends its records through the real broker
to the real ingest, and the unit report shows the instrument's verified running hours."""

from __future__ import annotations

import io
import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import psycopg
import pytest

from server import clock
from server.admin import main as jishi
from sim.devstack import role_dsn
from sim.modbus_meter import ModbusMeter
from tests.agent.helpers import AgentProc, cli, meter_toml, wait_until
from tests.server.procs import IngestProc
from tests.server.procs import write_config as ingest_config
from tests.web.browser_first_run_help import fill_form
from tests.web.conftest import PASSWORD
from tests.web.livehelp import serve
from tests.web.test_browser import ARTIFACTS, browser, logged_in

__all__ = ["browser"]  # the module-scoped Chromium fixture

RUN_S = 21.0  # long enough to show in the report's two decimals: 0.01 h = 36 s, and >= 18 s rounds up to it


def _sql(dsn: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query.encode(), params).fetchall()


def _agent_config(downloaded: str, meter: ModbusMeter) -> str:
    """The downloaded agent.toml with its detector set to the instrument's power meter, as the
    operator edits it at the PC (the page's template names a control-software process)."""
    head = downloaded.split("[state]", 1)[0]
    head = head.replace("[agent]\n", "[agent]\nsample_period_s = 0.1\nheartbeat_s = 1.0\n", 1)
    return (head + '[state]\nrunning = "power"\nconfirm_s = 0\npost_run_s = 0\n\n'
            "[identity]\nos_session = false\n" + meter_toml(meter))


def test_from_an_empty_database_to_a_unit_report(browser: Any, fresh_db: str, mqtt_broker: Any, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    dsn = fresh_db
    assert _sql(dsn, "SELECT count(*) FROM units") == [(0,)]
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert jishi(["--dsn", role_dsn(dsn, "jishi_admin"), "account", "root", "--role", "operator",
                  "--password-stdin"]) == 0
    ingest = IngestProc(ingest_config(tmp_path / "ingest.toml", dsn, mqtt_broker, "ing-first-run", "g-first-run"))
    ingest.start()
    agent: AgentProc | None = None
    try:
        with serve(dsn, mqtt_host=mqtt_broker.host, mqtt_port=mqtt_broker.port) as base, \
                logged_in(browser, base, "root") as page, ModbusMeter(watts=40.0) as meter:
            page.wait_for_url(base + "/registry")
            page.click("#setup-link")
            page.wait_for_url(base + "/setup")
            page.click("#new-organisation")
            fill_form(page, {"id": "imu", "name": "内蒙古大学"}, {"kind": "university"})
            page.wait_for_url(base + "/setup")
            page.click("#new-unit")
            fill_form(page, {"id": "imu", "name": "内蒙古大学", "region": "呼和浩特市"}, {"org_id": "imu"})
            page.wait_for_url(base + "/setup")
            assert page.get_attribute("#gap-units_without_manager .gap-count", "data-count") == "1"
            page.click("#gap-units_without_manager a.new-manager")
            fill_form(page, {"login": "mgr.imu", "display_name": "王老师", "password": PASSWORD}, {})
            page.wait_for_url(base + "/setup")
            assert page.get_attribute("#gap-units_without_manager .gap-count", "data-count") == "0"
            page.click("#setup-new-instrument")
            fill_form(page, {"id": "imu-xrd", "name": "X射线衍射仪", "original_value": "1250000",
                             "accepted_on": "2020-01-01", "registered_on": "2020-01-01"},
                      {"unit_id": "imu", "sharing_mode": "外部共享"})
            page.wait_for_url(base + "/instruments/imu-xrd")
            page.click("#enrol-link")
            page.wait_for_url(base + "/instruments/imu-xrd/enrol")
            page.click("#enrol-issue-button")
            page.wait_for_selector("#enrol-result", state="visible", timeout=10000)
            command = page.inner_text("#enrol-command").strip()
            href = page.get_attribute("#enrol-download", "href") or ""
            assert href.startswith("data:application/toml;charset=utf-8,")
            downloaded = unquote(href.split(",", 1)[1])
            assert downloaded == page.inner_text("#enrol-config").strip() + "\n"
            assert (page.get_attribute("#enrol-qr", "src") or "").startswith("data:image/svg+xml;base64,")
            assert page.evaluate("document.getElementById('enrol-qr').naturalWidth") > 0  # the QR is drawn
            page.screenshot(path=str(ARTIFACTS / "first-run-enrol.png"), full_page=True)

            # at the PC: save agent.toml, run the one command, start the agent
            cfg = tmp_path / "pc" / "agent.toml"
            cfg.parent.mkdir()
            cfg.write_text(_agent_config(downloaded, meter), encoding="utf-8")
            for part in command.split(" && "):
                args = part.split()
                assert args[0] == "jishi-agent"
                done = cli(*[str(cfg) if a == "agent.toml" else a for a in args[1:]])
                assert done.returncode == 0, done.stdout + done.stderr
            assert _sql(dsn, "SELECT agent_id FROM agent_keys") == [("imu-xrd-a1",)]
            agent = AgentProc(cfg).start()
            wait_until(lambda: bool(_sql(dsn, "SELECT 1 FROM usage_segments WHERE instrument_id = 'imu-xrd'")),
                       30, "the agent's first records stored and derived")
            meter.watts = 900.0
            wait_until(lambda: bool(_sql(dsn, "SELECT 1 FROM usage_segments WHERE instrument_id = 'imu-xrd'"
                                              " AND state = 'running'")), 20, "the run derived")
            time.sleep(RUN_S)  # the instrument runs this long: the hours the report must show
            meter.watts = 40.0
            wait_until(lambda: bool(_sql(dsn, "SELECT 1 FROM usage_segments WHERE instrument_id = 'imu-xrd'"
                                              " AND state = 'idle' AND start_at > (SELECT max(start_at)"
                                              " FROM usage_segments WHERE state = 'running')")),
                       20, "the end of the run derived")
            assert agent.stop() == 0
            agent = None
            (running_s,), = _sql(dsn, "SELECT COALESCE(sum(extract(epoch FROM end_at - start_at)), 0)::float"
                                      " FROM usage_segments WHERE instrument_id = 'imu-xrd' AND state = 'running'"
                                      " AND watched")
            assert running_s >= RUN_S - 1, running_s

            today = clock.today()
            period = f"{today - timedelta(days=1)}..{today + timedelta(days=2)}"
            page.goto(f"{base}/units/imu/report?period={period}")
            cells = page.evaluate("""() => {
                const t = document.querySelector('#table-utilization table');
                const head = [...t.querySelectorAll('tr')[0].children].map(c => c.textContent.trim());
                const row = [...t.querySelectorAll('tr')].find(r => r.textContent.includes('imu-xrd'));
                return row ? Object.fromEntries(head.map((h, i) => [h, row.children[i].textContent.trim()])) : null;
            }""")
            assert cells is not None, "the instrument is not in the report"
            shown = next(v for k, v in cells.items() if k.startswith("运行机时") and "核验合计" in k)
            assert re.fullmatch(r"\d+\.\d\d", shown) and float(shown) == pytest.approx(running_s / 3600, abs=0.006)
            assert float(shown) > 0
            page.screenshot(path=str(ARTIFACTS / "first-run-report.png"), full_page=True)
            page.goto(base + "/setup")
            assert page.get_attribute("#gap-instruments_without_agent .gap-count", "data-count") == "0"
        assert _sql(dsn, "SELECT role, unit_id FROM web_accounts WHERE login = 'mgr.imu'") == [("unit_manager", "imu")]
    finally:
        if agent is not None and agent.alive():
            agent.kill()
        ingest.stop()
