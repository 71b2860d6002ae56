"""The evaluation's Chinese tables in English on English pages (issue 18; server/web/services/report_text.py).

No database: the tables report.py builds without one, and the phrases it writes with figures in them.
The whole pages in both languages are walked by test_every_page_translated.py."""

from __future__ import annotations

import re
from typing import Any

from server.evaluation import compliance, report
from server.web.services import report_text

CJK = re.compile(r"[\u3400-\u9fff]")


def test_every_label_title_and_note_of_the_tables_has_its_english() -> None:
    cal = compliance.WorkdayCalendar(fallback_years={2031})
    tables = [report.open_rate_table([]), report.utilization_table([]), report.sharing_table([]),
              report.revenue_at_risk_table([]), report.compliance_table([], cal), report.fee_table(None, "ua")]
    rep = {"title": "甲大学 科研设施与仪器开放共享评价（2025）", "summary": {},
           "tables": {t.key: t.as_dict() for t in tables}}
    en = report_text.report(rep, "en")
    texts = [en["title"]] + [x for t in en["tables"].values()
                             for x in [t["title"], *t["notes"], *(c["label"] for c in t["columns"])]]
    assert not [x for x in texts if CJK.search(x.replace("甲大学", ""))]
    assert en["tables"]["utilization"]["columns"][5]["label"] == "Running hours (live-verified)"
    assert report_text.report(rep, "zh") is rep  # Chinese pages: the report as written


def test_phrases_with_figures_and_names() -> None:
    en = report_text.catalog().english
    assert en("多报（依赖可能支持机时）") == "Overclaimed (relies on “may support” hours)"
    assert en("优秀（待专家评分）") == "Excellent (expert scores pending)"
    assert en("2025-01-01 至 2025-12-31（北京时间）") == "2025-01-01 to 2025-12-31 (Beijing time)"
    # the most specific pattern wins; a name stays as written
    assert en("核磁共振波谱仪：共享方式：内部共享，未开放") == "核磁共振波谱仪: sharing mode internal sharing, not open"
    assert en("核磁共振波谱仪：共享方式：外部共享") == "核磁共振波谱仪: sharing mode external sharing"
    assert en("开放率 +0.1；利用率（仅核验数据） -0.05") == "Open rate +0.1; Utilization (verified data only) -0.05"
    # data that only looks like a phrase is left alone; an unknown phrase shows as it is
    assert en("张三 12") == "张三 12"
    assert en("一个新的说明") == "一个新的说明"
    assert report_text.text("zh", "多报") == "多报" and report_text.text("en", "多报") == "Overclaimed"


def test_text_cells_are_translated_numbers_and_names_are_not() -> None:
    rep: dict[str, Any] = {
        "title": "", "summary": {"grade": {"label": "等级", "value": "良好"}, "score": {"label": "评分", "value": 80}},
           "tables": {"t": {"title": "合规检查", "notes": [], "rows": [{"rule": "豁免申请未经审批", "n": "一致",
                                                                        "name": "豁免申请未经审批"}],
                            "columns": [{"key": "rule", "label": "问题", "kind": "text"},
                                        {"key": "n", "label": "天数", "kind": "int"}]}},
           "score_sheet": {"lines": [{"label": "管理体系建设"}]}}
    en = report_text.report(rep, "en")
    assert en["summary"]["grade"] == {"label": "Grade", "value": "Good"} and en["summary"]["score"]["value"] == 80
    row = en["tables"]["t"]["rows"][0]
    assert row["rule"] == "Exemption request not approved"
    assert row["n"] == "一致" and row["name"] == "豁免申请未经审批"  # not a text column of the table
    assert en["score_sheet"]["lines"][0]["label"] == "Management system"
    assert rep["tables"]["t"]["rows"][0]["rule"] == "豁免申请未经审批"  # the report itself is unchanged
