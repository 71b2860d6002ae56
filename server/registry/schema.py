"""The registry's fields, each declared once: type, allowed values, nullability, Chinese and English
labels, who may change it, and whether a unit manager's change is only a proposal (it moves the
figures the unit is graded on, so the operator decides: issue 13).

The API models (`api_model`), the browser forms (server/web/forms.py), the ledger import's columns
(server/registry/import_ledger.py) and the export listings (queries.LISTINGS) are generated from
here; tests/evaluation/test_registry_schema.py compares the enums with the database CHECKs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from server.registry.urls import http_url

Kind = Literal["id", "short", "url", "text", "money", "hours", "service_hours", "date", "datetime", "bool", "enum",
               "int_enum", "count", "score"]
Who = Literal["operator", "unit"]

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


@dataclass(frozen=True)
class F:
    """One registry field.

    `nullable`: the column takes NULL (a PATCH may clear it); `default`: what a create without it
    stores (None: the field is required); `who`: "operator" when only the operator may change it;
    `proposal`: a unit manager's change waits for the operator's acceptance; `input`: the form's
    widget when not the type's; `headers`: the column names the spreadsheet import recognises."""

    name: str
    kind: Kind
    zh: str
    en: str
    enum: tuple[Any, ...] = ()
    enum_labels: tuple[str, ...] = ()  # shown in forms beside the stored value, same order as enum
    enum_labels_en: tuple[str, ...] = ()  # the same in English
    nullable: bool = False
    default: Any = None
    required: bool = False
    who: Who = "unit"
    proposal: bool = False
    create_only: bool = False
    input: str = ""
    headers: tuple[str, ...] = ()
    min_length: int = 0
    example: Any = None
    description: str = ""


@dataclass(frozen=True)
class Table:
    name: str  # the database table
    fields: tuple[F, ...]

    def field(self, name: str) -> F:
        return next(f for f in self.fields if f.name == name)

    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def proposal_fields(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields if f.proposal)

    def nullable(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields if f.nullable)


CATEGORY = ("通用", "专用")
SOURCE = ("购置", "研制", "赠送", "其他")
RUNNING_STATUS = ("正常", "偶有故障", "故障频繁", "待修", "待报废")
SHARING_MODE = ("内部共享", "外部共享", "不共享")
FUNDING = ("中央财政", "地方财政", "单位自有", "其他")
ORG_KIND = ("university", "institute", "enterprise", "startup", "hospital", "individual", "other")
IDENTITY_METHOD = ("os", "checkin", "card", "booking", "login")  # login: `<provider>:<subject>` (issue 19)
PRICE_BASIS = ("per_hour", "per_sample", "per_item")
WAY = ("占用", "技术", "委托", "远程", "其他")
USER_TYPE = (120, 130)
DIRECTION = (135, 136, 137, 138)
CASE_KIND = ("论文", "专利", "企业成果", "标准", "其他")

ORGANISATION = Table("organisations", (
    F("id", "id", "组织编号", "Organisation id", required=True, create_only=True, example="imu"),
    F("name", "short", "名称", "Name", required=True, min_length=1, example="内蒙古大学"),
    F("kind", "enum", "类型", "Kind", enum=ORG_KIND, default="other", who="operator"),
))

UNIT = Table("units", (
    F("id", "id", "单位编号", "Unit id", required=True, create_only=True, example="imu"),
    F("org_id", "id", "所属组织", "Organisation", required=True, create_only=True, who="operator", example="imu"),
    F("name", "short", "单位名称", "Name", required=True, min_length=1, who="operator", example="内蒙古大学"),
    F("region", "short", "地区", "Region", default="", who="operator", example="呼和浩特市"),
))

INSTRUMENT = Table("instruments", (
    F("id", "id", "仪器编号", "Instrument id", required=True, create_only=True, example="XRD-01",
      headers=("平台仪器编号", "平台编号", "仪器id", "id")),
    F("unit_id", "id", "单位", "Unit", required=True, create_only=True, who="operator", input="select",
      example="imu", description="moving an instrument: operator only"),
    F("name", "short", "仪器名称", "Name", required=True, min_length=1, example="X射线衍射仪",
      headers=("仪器名称", "中文名称", "设备名称", "名称")),
    F("name_en", "short", "英文名称", "English name", default="", example="X-ray diffractometer",
      headers=("英文名称",)),
    F("internal_no", "short", "单位内部编号", "Internal number", default="",
      headers=("所在单位仪器编号", "单位内部编号", "资产编号", "仪器编号", "内部编号", "编号")),
    F("classification_code", "short", "分类代码", "Classification code", default="", example="03040702",
      headers=("分类编码", "分类代码", "分类号")),
    F("location", "short", "放置地点", "Location", default="", example="化学楼 201",
      headers=("安放地址", "存放地点", "安放地点", "所在地")),
    F("original_value", "money", "原值（元）", "Original value (CNY)", default=Decimal(0), proposal=True,
      example="1250000.00", headers=("原值", "原值(元)", "原值(万元)", "仪器原值", "价格")),
    F("category", "enum", "类别", "Category", enum=CATEGORY, default="通用", proposal=True,
      headers=("仪器类别", "类别", "通用/专用")),
    F("accepted_on", "date", "验收日期", "Accepted on", nullable=True, proposal=True,
      headers=("验收日期", "安装验收日期", "启用日期")),
    F("registered_on", "date", "纳入平台日期", "On the platform since", nullable=True, proposal=True,
      headers=("纳入平台日期", "上线日期", "入网日期")),
    F("retired_on", "date", "报废日期", "Retired on", nullable=True, proposal=True, headers=("报废日期",)),
    F("rated_hours", "hours", "额定机时（h/年）", "Rated hours (h/year)", nullable=True, proposal=True,
      headers=("额定机时",)),
    F("is_open", "bool", "是否开放", "Open", default=True, proposal=True, headers=("是否开放", "对外开放")),
    F("source", "enum", "来源", "Source", enum=SOURCE, default="购置", headers=("仪器来源", "来源")),
    F("running_status", "enum", "运行状态", "Running status", enum=RUNNING_STATUS, default="正常",
      headers=("运行状态",)),
    F("sharing_mode", "enum", "共享方式", "Sharing", enum=SHARING_MODE, default="外部共享", proposal=True,
      headers=("共享模式", "共享方式")),
    F("model", "short", "型号", "Model", default="", headers=("规格型号", "型号")),
    F("manufacturer", "short", "生产厂商", "Manufacturer", default="",
      headers=("生产制造商", "制造商", "生产厂家", "厂家")),
    F("country", "short", "产地国别", "Country", default="", headers=("产地国别", "产地", "国别")),
    F("booked_on", "date", "建账日期", "Booked on", nullable=True, headers=("建账日期", "入账日期")),
    F("funding_source", "enum", "主要经费来源", "Funding", enum=FUNDING, default="其他",
      headers=("主要购置经费来源", "经费来源")),
    F("fee_standard", "text", "收费标准", "Fee standard", default="", headers=("参考收费标准", "收费标准")),
    F("service_content", "text", "服务内容", "Services", default="", headers=("服务内容",)),
    F("main_functions", "text", "主要功能", "Main functions", default="", headers=("主要功能",)),
    F("specs", "text", "主要技术指标", "Specifications", default="", headers=("主要技术指标", "技术指标")),
    F("booking_url", "url", "预约网址", "Booking URL", default="", headers=("预约服务网址", "预约网址")),
    F("contact_name", "short", "联系人", "Contact", default="", headers=("联系人",)),
    F("contact_phone", "short", "联系电话", "Phone", default="", headers=("联系电话", "电话")),
    F("contact_email", "short", "电子邮箱", "E-mail", default="", headers=("电子邮箱", "邮箱", "email")),
))

PERSON = Table("platform_users", (
    F("id", "id", "用户编号", "User id", required=True, create_only=True, example="p-0001"),
    F("name", "short", "姓名", "Name", required=True, min_length=1, example="张三"),
    # Who is external decides the sharing rate: a unit's change of organisation is a proposal.
    F("org_id", "id", "所属组织", "Organisation", required=True, input="select", proposal=True, example="imu"),
))

IDENTITY = Table("identity_map", (
    F("method", "enum", "身份类型", "Identity kind", enum=IDENTITY_METHOD, required=True, example="os",
      enum_labels=("os 系统账号", "checkin 签到", "card 门卡（hmac-sha256:…）", "booking 预约",
                   "login 统一身份认证（登录方式:账号）"),
      enum_labels_en=("os: computer account", "checkin: check-in", "card: door card (hmac-sha256:…)",
                      "booking: booking", "login: university login (provider:account)")),
    F("identifier", "short", "采集端看到的身份", "Identity the agent sees", required=True, min_length=1,
      example="LAB\\zhangsan"),
))

PRICE = Table("price_list", (
    F("item", "short", "收费项目", "Item", required=True, min_length=1, example="物相分析"),
    F("basis", "enum", "计费方式", "Basis", enum=PRICE_BASIS, default="per_sample",
      enum_labels=("按机时", "按样品", "按项目"), enum_labels_en=("per hour", "per sample", "per item")),
    F("internal_price", "money", "校内价（元）", "Internal price (CNY)", nullable=True, example="80.00"),
    F("external_price", "money", "校外价（元）", "External price (CNY)", nullable=True, example="150.00"),
    F("valid_from", "date", "生效日期", "Valid from", required=True, example="2025-01-01"),
    F("valid_to", "date", "失效日期", "Valid to", nullable=True),
    F("published_on", "date", "公布日期", "Published on", nullable=True),
    F("note", "short", "备注", "Note", default=""),
))

SERVICE_RECORD = Table("service_records", (
    F("instrument_id", "id", "仪器", "Instrument", required=True, input="select"),
    F("record_no", "short", "服务记录编号", "Record number", required=True, min_length=1, example="2025-0001",
      headers=("服务记录编号", "记录编号", "流水号")),
    F("start_at", "datetime", "开始时间", "Start", required=True, example="2025-03-01T09:00:00+08:00",
      headers=("服务开始时间", "开始时间", "起始时间")),
    F("end_at", "datetime", "结束时间", "End", required=True, example="2025-03-01T12:00:00+08:00",
      headers=("服务结束时间", "结束时间", "终止时间")),
    F("service_hours", "service_hours", "服务机时（h）", "Service hours", required=True, example="3.0",
      headers=("服务机时", "机时", "服务机时(小时)")),
    F("amount", "money", "金额（元）", "Amount (CNY)", default=Decimal("0"), example="450.00",
      headers=("服务金额(元)", "服务金额", "金额", "收费金额", "收费(元)")),
    F("way", "enum", "服务方式", "Way", enum=WAY, default="其他", headers=("服务方式",)),
    F("user_type", "int_enum", "用户类型", "User type", enum=USER_TYPE, required=True, example=130,
      enum_labels=("120 校内", "130 校外"), enum_labels_en=("120 internal", "130 external"),
      description="120 internal, 130 external", headers=("用户类型", "用户类别")),
    F("direction", "int_enum", "服务方向", "Direction", enum=DIRECTION, default=135,
      enum_labels=("135 科研", "136 开发", "137 教学", "138 其他"),
      enum_labels_en=("135 research", "136 development", "137 teaching", "138 other"),
      headers=("服务方向", "服务领域")),
    F("applicant_user_id", "id", "申请人编号", "Applicant id", nullable=True, input="none"),
    F("applicant_name", "short", "申请人", "Applicant", default="", headers=("申请人", "用户", "用户姓名", "服务对象")),
    F("applicant_org_id", "id", "申请人单位编号", "Applicant's organisation id", nullable=True, input="none"),
    F("applicant_org_name", "short", "申请人单位", "Applicant's organisation", default="",
      headers=("申请人所在单位", "申请人单位", "用户单位", "委托单位")),
    F("satisfaction", "score", "满意度（1–5）", "Satisfaction (1–5)", nullable=True, headers=("用户满意度", "满意度")),
    F("sample_count", "count", "样品数", "Samples", nullable=True, example=12,
      description="samples or items, for prices per sample / per item (fee check)",
      headers=("样品数", "样品数量", "测试样品数", "样本数", "样品数(个)")),
    F("content", "text", "服务内容", "Content", default="", headers=("服务内容",)),
    F("contract_no", "short", "合同编号", "Contract number", default="", headers=("合同编号",)),
))

EXEMPTION = Table("instrument_exemptions", (
    F("instrument_id", "id", "仪器", "Instrument", required=True, input="select"),
    F("reason", "text", "不开放理由", "Reason", required=True, min_length=1),
    F("requested_on", "date", "申请日期", "Requested on", nullable=True),
    F("approved_by", "short", "审批部门", "Approved by", default=""),
    F("approval_ref", "short", "批准文号", "Approval document", default=""),
    F("approved_on", "date", "批准日期", "Approved on", nullable=True),
    F("filed_on", "date", "备案日期", "Filed on", nullable=True),
    F("valid_from", "date", "有效期起", "Valid from", nullable=True),
    F("valid_to", "date", "有效期至", "Valid to", nullable=True),
    F("revoked_on", "date", "撤销日期", "Revoked on", nullable=True),
))

CASE = Table("service_cases", (
    F("occurred_on", "date", "日期", "Date", required=True),
    F("title", "short", "案例名称", "Title", required=True, min_length=1),
    F("kind", "enum", "成果类型", "Kind", enum=CASE_KIND, default="其他"),
    F("instrument_id", "id", "仪器", "Instrument", nullable=True, input="select"),
    F("beneficiary", "short", "服务对象", "Beneficiary", default=""),
    F("evidence", "text", "佐证材料（DOI、专利号、报告编号等）", "Evidence (DOI, patent number, report ...)",
      required=True, min_length=1),
    F("description", "text", "说明", "Description", default=""),
))

TABLES = (ORGANISATION, UNIT, INSTRUMENT, PERSON, IDENTITY, PRICE, SERVICE_RECORD, EXEMPTION, CASE)


# -- API models -------------------------------------------------------------------------------------


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


Money = Annotated[Decimal, Field(ge=0, le=Decimal("999999999999.99"), decimal_places=2)]


def value_type(f: F) -> Any:
    """The pydantic type of a field's value (never None)."""
    if f.kind == "id":
        return Annotated[str, Field(pattern=ID_PATTERN)]
    if f.kind == "short":
        return Annotated[str, Field(max_length=200, min_length=f.min_length)]
    if f.kind == "text":
        return Annotated[str, Field(max_length=2000, min_length=f.min_length)]
    if f.kind == "url":  # http(s) only (issue 13): a stored javascript: URL would be a link on the catalog
        return Annotated[str, Field(max_length=200), AfterValidator(http_url)]
    if f.kind == "money":
        return Money
    if f.kind == "hours":
        return Annotated[Decimal, Field(gt=0, le=8784, decimal_places=1)]
    if f.kind == "service_hours":
        return Annotated[Decimal, Field(ge=0, le=999999, decimal_places=1)]
    if f.kind == "date":
        return date
    if f.kind == "datetime":
        return datetime
    if f.kind == "bool":
        return bool
    if f.kind in ("enum", "int_enum"):
        return Literal[f.enum]
    if f.kind == "count":
        return Annotated[int, Field(ge=0, le=10_000_000)]
    if f.kind == "score":
        return Annotated[int, Field(ge=1, le=5)]
    raise AssertionError(f.kind)


def _info(f: F, default: Any) -> Any:
    kw: dict[str, Any] = {"default": default}
    if f.example is not None:
        kw["examples"] = [f.example]
    if f.description:
        kw["description"] = f.description
    return Field(**kw)


def api_model(name: str, table: Table, mode: Literal["create", "patch"], *, skip: tuple[str, ...] = (),
              base: type[BaseModel] = Model, **extra: Any) -> type[BaseModel]:
    """The request model of a table: `create` requires the required fields and fills defaults;
    `patch` makes every changeable field optional (None: unchanged, or cleared when nullable)."""
    fields: dict[str, Any] = {}
    for f in table.fields:
        if f.name in skip or (mode == "patch" and f.create_only and f.name != "unit_id"):
            continue
        t = value_type(f)
        if mode == "patch" or f.nullable or (not f.required and f.default is None):
            fields[f.name] = (t | None, _info(f, None))
        elif f.required:
            fields[f.name] = (t, _info(f, ...))
        else:
            fields[f.name] = (t, _info(f, f.default))
    fields.update(extra)
    return create_model(name, __base__=base, **fields)


def with_changes(table: Table, body: BaseModel) -> dict[str, Any]:
    """The fields a PATCH sent; a null clears only nullable columns, elsewhere it is ignored."""
    nullable = table.nullable()
    return {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None or k in nullable}


def only(table: Table, *names: str) -> Table:
    """A table restricted to some fields (a form or a listing that shows fewer)."""
    return replace(table, fields=tuple(table.field(n) for n in names))
