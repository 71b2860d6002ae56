"""Registry edit forms: which fields each form shows, with labels (Chinese, English) and input kinds.

The forms post JSON to the same API routes scripts use (static/forms.js), so validation, scope
checks and the audit log are the API's; a 422 names the fields at fault and the form marks them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from server.store.times import TZ


@dataclass(frozen=True)
class F:
    name: str
    zh: str
    en: str
    kind: str = "text"  # text, number, date, datetime, select, bool, textarea, hidden
    dtype: str = "str"  # what JSON type the API wants: str, int, bool
    options: tuple[tuple[str, str], ...] = ()
    required: bool = False
    create_only: bool = False  # ids: set once


def _opts(*values: str) -> tuple[tuple[str, str], ...]:
    return tuple((v, v) for v in values)


INSTRUMENT = [
    F("id", "仪器编号", "Instrument id", required=True, create_only=True),
    F("unit_id", "单位", "Unit", "select", required=True, create_only=True),
    F("name", "仪器名称", "Name", required=True),
    F("name_en", "英文名称", "English name"),
    F("internal_no", "单位内部编号", "Internal number"),
    F("classification_code", "分类代码", "Classification code"),
    F("location", "放置地点", "Location"),
    F("original_value", "原值（元）", "Original value (CNY)", "number"),
    F("category", "类别", "Category", "select", options=_opts("通用", "专用")),
    F("accepted_on", "验收日期", "Accepted on", "date"),
    F("registered_on", "上平台日期", "On the platform since", "date"),
    F("retired_on", "报废日期", "Retired on", "date"),
    F("rated_hours", "额定机时（h/年）", "Rated hours (h/year)", "number"),
    F("is_open", "对外开放", "Open", "bool", "bool"),
    F("source", "来源", "Source", "select", options=_opts("购置", "研制", "赠送", "其他")),
    F("running_status", "运行状态", "Running status", "select",
      options=_opts("正常", "偶有故障", "故障频繁", "待修", "待报废")),
    F("sharing_mode", "共享方式", "Sharing", "select", options=_opts("内部共享", "外部共享", "不共享")),
    F("model", "型号", "Model"),
    F("manufacturer", "生产厂商", "Manufacturer"),
    F("country", "产地国别", "Country"),
    F("booked_on", "建账日期", "Booked on", "date"),
    F("funding_source", "主要经费来源", "Funding", "select", options=_opts("中央财政", "地方财政", "单位自有", "其他")),
    F("fee_standard", "收费标准", "Fee standard", "textarea"),
    F("service_content", "服务内容", "Services", "textarea"),
    F("main_functions", "主要功能", "Main functions", "textarea"),
    F("specs", "主要技术指标", "Specifications", "textarea"),
    F("booking_url", "预约网址", "Booking URL"),
    F("contact_name", "联系人", "Contact"),
    F("contact_phone", "联系电话", "Phone"),
    F("contact_email", "电子邮箱", "E-mail"),
]

PERSON = [
    F("id", "用户编号", "User id", required=True, create_only=True),
    F("name", "姓名", "Name", required=True),
    F("org_id", "所属组织", "Organisation", "select", required=True),
    F("unit_id", "登记身份的单位", "Unit of the identity", "select", create_only=True),
    F("identities.0.method", "身份类型", "Identity kind", "select", create_only=True,
      options=(("os", "os 系统账号"), ("checkin", "checkin 签到"), ("card", "card 门卡"), ("booking", "booking 预约"))),
    F("identities.0.identifier", "采集端看到的身份", "Identity the agent sees", create_only=True),
]

# A mapping added to an existing person (PUT /api/v1/units/{unit_id}/identities; the unit is in the path).
IDENTITY = [
    F("unit_id", "单位", "Unit", "select", required=True),
    F("method", "身份类型", "Identity kind", "select", required=True,
      options=(("os", "os 系统账号"), ("checkin", "checkin 签到"), ("card", "card 门卡（hmac-sha256:…）"),
               ("booking", "booking 预约"))),
    F("identifier", "采集端看到的身份", "Identity the agent sees", required=True),
]

# One exemption (art. 13) or service case of a unit (POST /api/v1/units/{unit}/exemptions | cases).
EXEMPTION = [
    F("instrument_id", "仪器", "Instrument", "select", required=True),
    F("reason", "不开放理由", "Reason", "textarea", required=True),
    F("requested_on", "申请日期", "Requested on", "date"),
    F("approved_by", "审批部门", "Approved by"),
    F("approval_ref", "批准文号", "Approval document"),
    F("approved_on", "批准日期", "Approved on", "date"),
    F("filed_on", "备案日期", "Filed on", "date"),
    F("valid_from", "有效期起", "Valid from", "date"),
    F("valid_to", "有效期至", "Valid to", "date"),
    F("revoked_on", "撤销日期", "Revoked on", "date"),
]

CASE = [
    F("occurred_on", "日期", "Date", "date", required=True),
    F("title", "案例名称", "Title", required=True),
    F("kind", "成果类型", "Kind", "select", options=_opts("论文", "专利", "企业成果", "标准", "其他")),
    F("instrument_id", "仪器", "Instrument", "select"),
    F("beneficiary", "服务对象", "Beneficiary"),
    F("evidence", "佐证材料（DOI、专利号、报告编号等）", "Evidence (DOI, patent number, report ...)", "textarea",
      required=True),
    F("description", "说明", "Description", "textarea"),
]

PRICE = [
    F("item", "收费项目", "Item", required=True),
    F("basis", "计费方式", "Basis", "select", options=(("per_sample", "按样品"), ("per_hour", "按机时"),
                                                       ("per_item", "按项目"))),
    F("internal_price", "校内价（元）", "Internal price (CNY)", "number"),
    F("external_price", "校外价（元）", "External price (CNY)", "number"),
    F("valid_from", "生效日期", "Valid from", "date", required=True),
    F("valid_to", "失效日期", "Valid to", "date"),
    F("published_on", "公布日期", "Published on", "date"),
    F("note", "备注", "Note"),
]

SERVICE = [
    F("instrument_id", "仪器", "Instrument", "select", required=True),
    F("record_no", "服务记录编号", "Record number", required=True),
    F("start_at", "开始时间", "Start", "datetime", required=True),
    F("end_at", "结束时间", "End", "datetime", required=True),
    F("service_hours", "服务机时（h）", "Service hours", "number", required=True),
    F("amount", "金额（元）", "Amount (CNY)", "number"),
    F("way", "服务方式", "Way", "select", options=_opts("占用", "技术", "委托", "远程", "其他")),
    F("user_type", "用户类型", "User type", "select", "int", options=(("130", "130 校外"), ("120", "120 校内")),
      required=True),
    F("direction", "服务方向", "Direction", "select", "int",
      options=(("135", "135 科研"), ("136", "136 开发"), ("137", "137 教学"), ("138", "138 其他"))),
    F("applicant_name", "申请人", "Applicant"),
    F("applicant_org_name", "申请人单位", "Applicant's organisation"),
    F("satisfaction", "满意度（1–5）", "Satisfaction (1–5)", "number", "int"),
    F("sample_count", "样品数", "Samples", "number", "int"),
    F("content", "服务内容", "Content", "textarea"),
    F("contract_no", "合同编号", "Contract number"),
]


@dataclass
class Shown:
    """A field as the template draws it."""

    name: str
    label: str
    kind: str
    dtype: str
    options: list[tuple[str, str]] = field(default_factory=list)
    required: bool = False
    value: str = ""
    checked: bool = False


def _text(v: Any, kind: str) -> str:
    if v is None:
        return ""
    if kind == "datetime" and isinstance(v, datetime):
        return v.astimezone(TZ).strftime("%Y-%m-%dT%H:%M")
    if isinstance(v, date | datetime):
        return v.isoformat()
    if isinstance(v, Decimal):
        return format(v.normalize(), "f") if v == v.to_integral() else str(v)
    return str(v)


def shown(fields: list[F], lang: str, values: dict[str, Any] | None, *, editing: bool,
          options: dict[str, list[tuple[str, str]]] | None = None) -> list[Shown]:
    values = values or {}
    out = []
    for f in fields:
        if editing and f.create_only:
            continue
        opts = list((options or {}).get(f.name, f.options))
        v = values.get(f.name)
        out.append(Shown(f.name, f.en if lang == "en" else f.zh, f.kind, f.dtype, opts, f.required,
                         _text(v, f.kind), bool(v)))
    return out
