"""User-facing text, Chinese first (the regulation's terms) with English beside it.

One table for pages and API error messages, so the two never drift. The language is the `lang`
cookie (set by the switch, `?lang=en`), else the first supported Accept-Language, else Chinese.
"""

from __future__ import annotations

from starlette.requests import Request

LANGS = ("zh", "en")

# key -> (Chinese, English). Placeholders use str.format names.
TEXT: dict[str, tuple[str, str]] = {
    # -- errors --
    "err.unauthenticated": ("请先登录。", "Please log in first."),
    "err.session_expired": ("登录已过期，请重新登录。", "Your session has expired; please log in again."),
    "err.bad_token": ("访问令牌无效、已过期或已撤销。", "The access token is invalid, expired or revoked."),
    "err.bad_credentials": ("用户名或密码错误。", "Wrong login name or password."),
    "err.account_disabled": (
        "该账号已停用，请联系平台运营方。",
        "This account is disabled; contact the platform operator.",
    ),
    "err.rate_limited": (
        "登录失败次数过多，请在 {seconds} 秒后再试。",
        "Too many failed logins; try again in {seconds} seconds.",
    ),
    "err.forbidden_role": (
        "您的角色（{role}）无权执行此操作。",
        "Your role ({role}) is not allowed to do this.",
    ),
    "err.other_unit": (
        "您只能访问本单位（{unit}）的数据。",
        "You can only access your own unit's data ({unit}).",
    ),
    "err.not_found": ("未找到{what}“{id}”（或不属于您的单位）。", "{what} '{id}' not found (or not in your unit)."),
    "err.exists": ("{what}“{id}”已存在。", "{what} '{id}' already exists."),
    "err.conflict": ("操作与现有数据冲突：{detail}", "The change conflicts with existing data: {detail}"),
    "err.invalid_reference": ("引用的数据不存在：{detail}", "A referenced record does not exist: {detail}"),
    "err.check_failed": ("数据不符合规则：{detail}", "The data breaks a rule: {detail}"),
    "err.validation": ("请求有误，请检查以下字段：{names}", "The request is invalid; check these fields: {names}"),
    "err.csrf": (
        "请求缺少有效的 CSRF 令牌，请刷新页面后重试。",
        "The request lacks a valid CSRF token; reload the page and try again.",
    ),
    "err.enrolment_token": (
        "注册令牌无效、已使用、已过期或已撤销，请向平台运营方申请新的令牌。",
        "The enrolment token is invalid, used, expired or revoked; ask the platform operator for a new one.",
    ),
    "err.bad_public_key": (
        "公钥无效：需要 Ed25519 公钥的 32 字节，无填充 base64url 编码（43 个字符）。{detail}",
        "Invalid public key: expected the 32 bytes of an Ed25519 public key as unpadded base64url "
        "(43 characters). {detail}",
    ),
    "err.agent_other_instrument": (
        "采集端“{agent}”已登记在仪器“{instrument}”上。",
        "Agent '{agent}' is already registered for instrument '{instrument}'.",
    ),
    "err.agent_revoked": (
        "采集端“{agent}”已被撤销，请使用新的采集端编号。",
        "Agent '{agent}' is revoked; use a new agent id.",
    ),
    "err.key_revoked": ("该公钥已被撤销，不能再次登记。", "This key was revoked and cannot be registered again."),
    "err.bad_period": ("期间格式有误：{detail}", "Invalid period: {detail}"),
    "err.internal": ("服务器内部错误，已记录，请稍后重试。", "Internal server error (logged); please try again later."),
    "err.http": ("{detail}", "{detail}"),
    "what.unit": ("单位", "Unit"),
    "what.instrument": ("仪器", "Instrument"),
    "what.organisation": ("组织", "Organisation"),
    "what.person": ("用户", "User"),
    "what.account": ("账号", "Account"),
    "what.agent": ("采集端", "Agent"),
    "what.key": ("公钥", "Key"),
    "what.token": ("令牌", "Token"),
    "what.price": ("收费项目", "Price item"),
    "what.service_record": ("服务记录", "Service record"),
    "what.identity": ("身份映射", "Identity mapping"),
    # -- roles --
    "role.operator": ("平台运营方", "Platform operator"),
    "role.unit_manager": ("管理单位", "Unit manager"),
    "role.evaluator": ("评价专家", "Evaluator"),
    "role.enrolment": ("采集端注册令牌", "Agent enrolment token"),
    # -- states --
    "state.running": ("运行中", "Running"),
    "state.idle": ("空闲", "Idle"),
    "state.off": ("关机", "Off"),
    "state.fault": ("故障", "Fault"),
    "state.unknown": ("未知", "Unknown"),
    "state.offline": ("采集端离线", "Agent offline"),
    "state.no_agent": ("未接入", "No agent"),
    "free.yes": ("现在空闲", "Free now"),
    "free.no": ("使用中", "In use"),
    "free.off": ("关机", "Switched off"),
    "free.unknown": ("状态未知", "Status unknown"),
    "cov.watching": ("监测中", "Watching"),
    "cov.offline": ("离线", "Offline"),
    "cov.gap": ("数据缺口", "Gap"),
    # -- navigation and pages --
    "app.name": ("机时 · 大型科研仪器共享", "Jishi · verified machine-hours"),
    "nav.board": ("实时看板", "Live board"),
    "nav.registry": ("仪器登记", "Registry"),
    "nav.report": ("单位报告", "Unit report"),
    "nav.overview": ("评价总览", "Evaluation overview"),
    "nav.catalog": ("仪器目录", "Catalog"),
    "nav.audit": ("审计日志", "Audit log"),
    "nav.login": ("登录", "Log in"),
    "nav.logout": ("退出", "Log out"),
    "nav.lang": ("English", "中文"),
    "login.title": ("登录", "Log in"),
    "login.login": ("用户名", "Login name"),
    "login.password": ("密码", "Password"),
    "login.submit": ("登录", "Log in"),
    "board.title": ("{unit} · 实时看板", "{unit} · live board"),
    "board.today": ("今日运行", "Today running"),
    "board.user_org": ("当前用户单位", "Current user's organisation"),
    "board.since": ("自 {time}", "since {time}"),
    "board.live": ("实时连接", "Live"),
    "board.reconnecting": ("正在重连…", "Reconnecting…"),
    "board.unmapped": ("未登记身份", "Unmapped identity"),
    "board.empty": ("本单位尚无仪器。", "This unit has no instruments yet."),
    "inst.timeline": ("运行时间线", "Timeline"),
    "inst.day": ("日", "Day"),
    "inst.week": ("周", "Week"),
    "inst.month": ("月", "Month"),
    "inst.prev": ("上一段", "Earlier"),
    "inst.next": ("下一段", "Later"),
    "inst.states": ("状态", "State"),
    "inst.sessions": ("使用者", "Users"),
    "inst.coverage": ("监测覆盖", "Coverage"),
    "inst.daily_hours": ("每日运行机时", "Running hours per day"),
    "inst.running_hours": ("运行机时", "Running hours"),
    "inst.gaps": ("覆盖缺口", "Coverage gaps"),
    "inst.sessions_list": ("使用记录", "Sessions"),
    "inst.no_data": ("此期间没有数据。", "No data in this period."),
    "inst.from": ("开始", "From"),
    "inst.to": ("结束", "To"),
    "inst.who": ("使用者", "User"),
    "inst.reason": ("原因", "Reason"),
    "inst.status": ("状态", "Status"),
    "inst.prices": ("收费标准", "Price list"),
    "inst.agents": ("采集端", "Agents"),
    "report.title": ("{unit} · {year} 年度评价指标", "{unit} · indicators {year}"),
    "report.open_rate": ("开放率", "Open rate"),
    "report.utilization": ("利用率", "Utilization"),
    "report.utilization_mean": ("利用率（仪器平均）", "Utilization (mean per instrument)"),
    "report.sharing": ("共享率", "Sharing rate"),
    "report.revenue": ("服务收入（元）", "Service revenue (CNY)"),
    "report.cases": ("对外服务案例", "Service cases"),
    "report.verified": ("已验证", "Verified"),
    "report.including": ("含未验证", "Incl. unverified"),
    "report.in_scope": ("纳入评价仪器", "In-scope instruments"),
    "report.evaluated": ("应开放仪器", "Instruments to open"),
    "report.open": ("已开放", "Open"),
    "report.running": ("运行机时", "Running h"),
    "report.rated": ("额定机时", "Rated h"),
    "report.external": ("对外服务机时（测量）", "External h (measured)"),
    "report.claimed": ("对外服务机时（自报）", "External h (self-reported)"),
    "report.per_instrument": ("各仪器指标", "Per instrument"),
    "report.chart_util": ("各仪器利用率（已验证）", "Utilization per instrument (verified)"),
    "report.chart_claims": ("对外服务机时：测量 vs 自报", "External hours: measured vs self-reported"),
    "report.discrepancies": ("核对差异", "Discrepancies"),
    "report.no_discrepancy": ("没有明显差异。", "No notable discrepancies."),
    "report.year": ("评价年度", "Evaluation year"),
    "report.unverified_note": (
        "“已验证”只计采集端签名记录；“含未验证”另计离线与手工登记机时。",
        "'Verified' counts signed agent records only; 'incl. unverified' adds offline and logbook hours.",
    ),
    "overview.title": ("{year} 年度评价总览", "Evaluation overview {year}"),
    "overview.ranking": ("各单位排名（按利用率）", "Units ranked by utilization"),
    "overview.region": ("全区合计", "Region total"),
    "overview.low_use": ("低利用率仪器（< {pct}%）", "Low-use instruments (< {pct}%)"),
    "overview.reassignable": ("可调剂（通用仪器，第二十四条）", "Reassignable (general-purpose, art. 24)"),
    "overview.search": ("查重评议：检索同类仪器", "Duplicate-purchase review: find similar instruments"),
    "overview.search_hint": ("名称或分类代码", "Name or classification code"),
    "overview.chart_units": ("各单位利用率", "Utilization by unit"),
    "col.unit": ("单位", "Unit"),
    "col.instrument": ("仪器", "Instrument"),
    "col.rank": ("名次", "Rank"),
    "col.name": ("名称", "Name"),
    "col.location": ("放置地点", "Location"),
    "col.classification": ("分类代码", "Classification"),
    "col.value": ("原值（元）", "Original value (CNY)"),
    "col.state": ("当前状态", "State now"),
    "col.model": ("型号", "Model"),
    "col.manufacturer": ("生产厂商", "Manufacturer"),
    "col.contact": ("联系方式", "Contact"),
    "col.services": ("服务内容", "Services"),
    "col.specs": ("主要技术指标", "Specifications"),
    "col.functions": ("主要功能", "Main functions"),
    "col.booking": ("预约", "Booking"),
    "col.item": ("项目", "Item"),
    "col.internal_price": ("校内价", "Internal price"),
    "col.external_price": ("校外价", "External price"),
    "col.basis": ("计费方式", "Basis"),
    "col.agent": ("采集端", "Agent"),
    "col.keys": ("公钥", "Keys"),
    "col.actions": ("操作", "Actions"),
    "col.when": ("时间", "When"),
    "col.actor": ("操作人", "Who"),
    "col.action": ("操作", "Action"),
    "col.table": ("数据表", "Table"),
    "col.before": ("修改前", "Before"),
    "col.after": ("修改后", "After"),
    "basis.per_hour": ("按机时", "per hour"),
    "basis.per_sample": ("按样品", "per sample"),
    "basis.per_item": ("按项目", "per item"),
    "catalog.title": ("大型科研仪器开放共享目录", "Catalog of shared research instruments"),
    "catalog.search": ("搜索", "Search"),
    "catalog.q": ("仪器名称、型号或功能", "Name, model or function"),
    "catalog.any_unit": ("全部单位", "All units"),
    "catalog.count": ("共 {n} 台", "{n} instruments"),
    "catalog.none": ("没有符合条件的仪器。", "No instrument matches."),
    "catalog.rules": ("开放规则", "Opening rules"),
    "catalog.rules_text": (
        "本仪器按《内蒙古自治区科研设施与仪器开放共享管理办法》向社会开放，校外用户按校外价收费，预约请联系管理人员。",
        "Open to all under the regional open-sharing measures; outside users pay the external rate. "
        "Contact the staff to book.",
    ),
    "registry.title": ("{unit} · 仪器登记", "{unit} · registry"),
    "registry.all_units": ("全部单位", "All units"),
    "registry.enrol": ("接入采集端", "Enrol agent"),
    "registry.enrol_title": ("采集端注册", "Agent enrolment"),
    "registry.enrol_help": (
        "此令牌仅显示一次、仅可使用一次，有效期至 {expires}。请把下面的配置复制到仪器电脑，并运行注册命令。",
        "This token is shown once, works once and expires at {expires}. Copy the configuration below to "
        "the instrument PC and run the enrolment command.",
    ),
    "registry.revoke_key": ("撤销公钥", "Revoke key"),
    "registry.revoked": ("已撤销", "Revoked"),
    "registry.active": ("有效", "Active"),
    "common.yes": ("是", "Yes"),
    "common.no": ("否", "No"),
    "common.none": ("无", "None"),
    "common.hours": ("{h} 小时", "{h} h"),
    "common.back": ("返回", "Back"),
    "common.all": ("全部", "All"),
    "common.details": ("详情", "Details"),
    "footer.privacy": (
        "依《管理办法》第十七条，用户身份、IP 与科研数据受保护；评价专家只看到稳定的化名。",
        "Under art. 17 user identities, IPs and scientific data are protected; evaluators see stable pseudonyms only.",
    ),
}


def t(lang: str, key: str, **params: object) -> str:
    """The text of `key` in `lang`; an unknown key shows itself, so a gap is visible, not fatal."""
    pair = TEXT.get(key)
    if pair is None:
        return key
    text = pair[1] if lang == "en" else pair[0]
    if params:
        try:
            return text.format(**params)
        except (KeyError, IndexError):
            return text
    return text


def both(key: str, **params: object) -> str:
    """Chinese then English, for logs and places without a request (e.g. the agent's enrolment)."""
    return f"{t('zh', key, **params)} / {t('en', key, **params)}"


def request_lang(request: Request, default: str = "zh") -> str:
    """`?lang=` first (the switch), then the cookie, then (API only) Accept-Language, then the default.

    Pages ignore Accept-Language on purpose: the product is Chinese first, and officials' browsers
    often say English; the switch is one click and sticks.
    """
    q = request.query_params.get("lang")
    if q in LANGS:
        return q
    c = request.cookies.get("lang")
    if c in LANGS:
        return c
    if request.url.path.startswith("/api/"):
        for part in request.headers.get("accept-language", "").lower().split(","):
            tag = part.split(";")[0].strip()
            if tag.startswith("zh"):
                return "zh"
            if tag.startswith("en"):
                return "en"
    return default
