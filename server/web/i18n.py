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
    "err.too_large": ("上传文件过大：最多 {limit_mb} MB。", "The upload is too large: at most {limit_mb} MB."),
    "err.length_required": (
        "上传须声明长度（Content-Length）。", "An upload must declare its length (Content-Length)."),
    "err.unsupported_media": (
        "请以 multipart/form-data 上传文件。", "Upload the file as multipart/form-data."),
    "err.file_changed": (
        "文件与试运行时的不一致，请重新试运行。",
        "The file differs from the one the dry run checked; run the dry run again.",
    ),
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
    "what.page": ("页面", "Page"),
    "what.identity": ("身份映射", "Identity mapping"),
    "what.proposal": ("变更申请", "Proposal"),
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
    "nav.quarantine": ("拒收消息", "Refused messages"),
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
    "chart.data": ("查看数据表", "Show the data"),
    "chart.more": ("另有 {n} 行未列出（图中完整）", "{n} more rows not listed (all are in the chart)"),
    "chart.item": ("项目", "Item"),
    "chart.value": ("数值", "Value"),
    "chart.day": ("日期", "Day"),
    "chart.period": ("期间", "Period"),
    "chart.lane": ("类别", "Lane"),
    "chart.interval": ("区间", "Interval"),
    "chart.from": ("开始", "From"),
    "chart.to": ("结束", "To"),
    "chart.time": ("时间", "Time"),
    "chart.min": ("最小", "Min"),
    "chart.max": ("最大", "Max"),
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
    "report.expert_score": ("专家评分", "Expert score"),
    "report.expert_score_help": (
        "专家可为任一评分项打分（覆盖按指标计算的分数），须写明理由；历史保留，以最新一次为准。",
        "Experts may score any criterion (overriding the computed points) with a note saying why; the history is"
        " kept and the latest score counts.",
    ),
    "report.criterion": ("评分项", "Criterion"),
    "report.points": ("得分", "Points"),
    "report.expert_note": ("理由", "Note"),
    "report.period": ("评价期（年度，或 起始日..截止日）", "Period (a year, or start..end)"),
    "overview.grades": ("等级分布", "Grade distribution"),
    "overview.sample": ("抽查样本数", "Spot-check sample size"),
    "overview.seed": ("随机种子", "Seed"),
    "overview.specs": ("主要技术指标", "Key specifications"),
    "overview.location": ("地点", "Location"),
    "report.unverified_note": (
        "“已验证”只计采集端签名记录；“含未验证”另计离线与手工登记机时。",
        "'Verified' counts signed agent records only; 'incl. unverified' adds offline and logbook hours.",
    ),
    "overview.title": ("{year} 年度评价总览", "Evaluation overview {year}"),
    "overview.ranking": ("各单位排名（按评分）", "Units ranked by score"),
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
    "catalog.sharing": ("共享方式", "Sharing"),
    "catalog.rules_internal": (
        "本仪器目前为内部共享：向本单位及关联单位的用户开放；校外用户使用请先联系管理人员。",
        "Shared internally: open to users of the unit and its affiliated organisations; outside users should"
        " contact the staff first.",
    ),
    "catalog.book_online": ("在线预约：", "Book online:"),
    "catalog.book_contact": ("预约请联系：", "To book, contact:"),
    "catalog.valid_from": ("执行日期", "Valid from"),
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
    "registry.edit": ("编辑", "Edit"),
    "registry.new_instrument": ("登记仪器", "Register an instrument"),
    "registry.edit_instrument": ("编辑仪器 {id}", "Edit instrument {id}"),
    "registry.people": ("仪器用户", "Instrument users"),
    "registry.new_person": ("登记用户", "Register a user"),
    "registry.edit_person": ("编辑用户 {id}", "Edit user {id}"),
    "registry.prices": ("收费标准", "Price list"),
    "registry.new_price": ("新增收费项目（{inst}）", "Add a price item ({inst})"),
    "registry.edit_price": ("编辑收费项目", "Edit price item"),
    "registry.services": ("服务记录", "Service records"),
    "registry.new_service": ("新增服务记录", "Add a service record"),
    "registry.edit_service": ("编辑服务记录 {no}", "Edit service record {no}"),
    "registry.import": ("表格导入", "Spreadsheet import"),
    "registry.identities": ("采集端身份映射", "Identities the agents see"),
    "registry.identities_help": (
        "采集端上报的身份（系统账号、签到账号、门卡哈希、预约码）对应到该用户，用于计算对外服务机时。",
        "Identities reported by the agents (OS login, check-in account, card hash, booking code) that mean this user;"
        " they decide external hours.",
    ),
    "registry.add_identity": ("添加身份", "Add identity"),
    "registry.affiliations": ("关联单位", "Affiliated organisations"),
    "registry.affiliations_help": (
        "关联单位（如附属医院、控股企业）的用户按校内用户计算，其使用不计入对外服务机时。",
        "Users of affiliated organisations (e.g. an affiliated hospital) count as internal: their use is not"
        " external service.",
    ),
    "registry.organisation": ("组织", "Organisation"),
    "registry.add_affiliation": ("添加关联单位", "Add affiliation"),
    "registry.remove": ("删除", "Remove"),
    "registry.proposals": ("待审变更", "Proposed changes"),
    "proposal.help": (
        "单位管理员对额定机时、原值、类别、验收/纳入平台/报废日期、开放与共享方式、用户所属组织及关联单位的修改，"
        "经平台运营方接受后才生效并计入评价。",
        "A unit manager's changes of rated hours, value, category, accepted / registered / retired dates, opening"
        " and sharing, a user's organisation and affiliations take effect for the evaluation only once the"
        " platform operator accepts them.",
    ),
    "proposal.field_note": ("修改需平台审核", "a change needs the operator's acceptance"),
    "proposal.waiting": ("待审：{value}", "pending: {value}"),
    "proposal.what": ("项目", "Field"),
    "proposal.key": ("对象", "Record"),
    "proposal.before": ("原值", "Before"),
    "proposal.after": ("新值", "After"),
    "proposal.by": ("提出人", "Proposed by"),
    "proposal.at": ("提出时间", "Proposed at"),
    "proposal.status": ("状态", "Status"),
    "proposal.accept": ("接受", "Accept"),
    "proposal.decline": ("拒绝", "Decline"),
    "proposal.st_pending": ("待审", "pending"),
    "proposal.st_accepted": ("已接受", "accepted"),
    "proposal.st_declined": ("已拒绝", "declined"),
    "proposal.st_superseded": ("已被替代", "superseded"),
    "registry.list_exemptions": ("不开放申请与批准", "Exemptions from opening"),
    "registry.list_cases": ("典型服务案例", "Typical service cases"),
    "registry.list_imports": ("导入记录", "Import batches"),
    "registry.list_note": ("可逐条登记，或通过表格导入批量登记（全部行或不导入）；每次修改均记入审计日志。",
                           "Enter one at a time, or many by spreadsheet import (all rows or none); every change is"
                           " audited."),
    "registry.new_exemptions": ("登记不开放申请或批准", "File an exemption or its approval"),
    "registry.new_cases": ("登记典型服务案例", "Record a service case"),
    "registry.save": ("保存", "Save"),
    "registry.saved": ("已保存。", "Saved."),
    "registry.required": ("必填", "required"),
    "registry.form_error": ("请检查标出的字段。", "Check the marked fields."),
    "import.title": ("表格导入（XLSX / CSV）", "Spreadsheet import (XLSX / CSV)"),
    "import.kind": ("导入类型", "Kind"),
    "import.unit": ("单位", "Unit"),
    "import.file": ("文件（最大 10 MB）", "File (at most 10 MB)"),
    "import.no_file": ("请先选择文件。", "Choose a file first."),
    "import.dry_run": ("试运行（只检查，不写入）", "Dry run (check only)"),
    "import.confirm": ("确认导入（全部或全不）", "Import (all rows or none)"),
    "import.help": (
        "先试运行：逐行检查并给出报告；没有被拒绝的行时才能确认导入，整批写入或整批不写入。",
        "Run the dry run first: every row is checked and reported; the import can be confirmed only when no "
        "row is rejected, and then writes all rows or none.",
    ),
    "import.row": ("行号", "Row"),
    "import.status": ("结果", "Result"),
    "import.key": ("编号", "Key"),
    "import.reason": ("原因", "Reason"),
    "import.accepted": ("接受", "Accepted"),
    "import.rejected": ("拒绝", "Rejected"),
    "import.skipped": ("忽略", "Skipped"),
    "import.summary": ("接受 {a} 行，拒绝 {r} 行", "{a} rows accepted, {r} rejected"),
    "import.st_dry_run": ("试运行完成，未写入。", "Dry run done; nothing written."),
    "import.st_committed": ("已导入。", "Imported."),
    "import.st_rejected": ("未导入（整批拒绝）。", "Not imported (the whole batch was refused)."),
    "import.problems": ("文件问题", "File problems"),
    "ev.title": ("区间佐证", "Evidence behind the interval"),
    "ev.hint": (
        "点击时间线上的状态区间查看其签名记录佐证。",
        "Click a state interval on the timeline to see its signed evidence.",
    ),
    "ev.power": ("功率曲线", "Power curve"),
    "ev.no_power": ("此区间没有功率读数。", "No power readings in this interval."),
    "ev.records": ("签名记录", "Signed records"),
    "ev.envelopes": ("签名信封", "Signed envelopes"),
    "ev.verified": ("签名验证通过", "Signatures verified"),
    "ev.failed": ("签名验证失败", "Signatures failed"),
    "ev.live": ("实时到达", "Arrived live"),
    "ev.spool": ("离线缓存补传", "From the spool"),
    "ev.processes": ("软件进程", "Processes"),
    "ev.files": ("数据文件", "Data files"),
    "ev.transitions": ("状态变化", "State changes"),
    "ev.sessions": ("使用者登录", "User sessions"),
    "ev.procs_max": ("进程数", "Processes"),
    "ev.cpu": ("CPU 峰值（‰）", "Peak CPU (‰)"),
    "ev.name": ("文件名", "Name"),
    "ev.size": ("大小", "Size"),
    "ev.hidden": ("（不向评价专家显示）", "(hidden from evaluators)"),
    "ev.source": ("读数来源：{s}", "Readings from: {s}"),
    "ev.src_sample": ("功率采样记录", "power sample records"),
    "ev.src_heartbeat": ("心跳摘要（均值，阴影为最小–最大）", "heartbeat summaries (mean; band: min–max)"),
    "ev.arrival": ("到达", "Arrival"),
    "ev.signature": ("签名", "Signature"),
    "ev.ok": ("通过", "OK"),
    "ev.bad": ("失败", "Failed"),
    "trend.title": ("利用率趋势", "Utilization trend"),
    "trend.month": ("按月", "monthly"),
    "trend.week": ("按周", "weekly"),
    "report.evidence_zip": ("佐证包", "Evidence bundle"),
    # -- refused agent messages (quarantine), operator page --
    "quarantine.title": ("被拒收的采集端消息", "Refused agent messages"),
    "quarantine.hint": (
        "采集端发来但未通过校验、未被入库的消息及其原因；消息内容不在此显示。",
        "Messages from agents that failed a check and were not stored, with the reason; their content is not shown.",
    ),
    "quarantine.by_reason": ("按原因统计", "By reason"),
    "quarantine.code": ("原因代码", "Reason code"),
    "quarantine.count": ("条数", "Count"),
    "quarantine.total": ("合计", "Total"),
    "quarantine.newest": ("最新记录", "Newest"),
    "quarantine.agent": ("声称的采集端", "Agent id claimed"),
    "quarantine.topic": ("主题", "Topic"),
    "quarantine.kind": ("消息类型", "Kind"),
    "quarantine.field": ("字段", "Field"),
    "quarantine.detail": ("说明", "Detail"),
    "quarantine.size": ("消息大小（字节）", "Payload size (bytes)"),
    "quarantine.limit": ("显示条数", "Rows"),
    "quarantine.none": ("没有被拒收的消息。", "No refused messages."),
    "quarantine.reason.oversized": ("消息过大", "Message too large"),
    "quarantine.reason.malformed": ("格式错误", "Malformed"),
    "quarantine.reason.not_canonical": ("非规范编码", "Not in canonical form"),
    "quarantine.reason.unsupported_version": ("协议版本不支持", "Unsupported protocol version"),
    "quarantine.reason.schema": ("字段不符合规范", "Schema violation"),
    "quarantine.reason.unknown_type": ("未知记录类型", "Unknown record type"),
    "quarantine.reason.bad_signature": ("签名无效", "Invalid signature"),
    "quarantine.reason.unknown_agent": ("未登记的采集端", "Unknown agent"),
    "quarantine.reason.unknown_key": ("未登记的密钥", "Unknown key"),
    "quarantine.reason.revoked_agent": ("采集端已撤销", "Revoked agent"),
    "quarantine.reason.wrong_topic": ("主题与采集端不符", "Wrong topic"),
    "quarantine.reason.wrong_agent": ("采集端编号不符", "Wrong agent"),
    "quarantine.reason.seq_out_of_order": ("序号乱序", "Sequence out of order"),
    "quarantine.reason.seq_gap": ("序号缺口", "Sequence gap"),
    "quarantine.reason.chain_broken": ("哈希链断裂", "Hash chain broken"),
    "quarantine.reason.seq_conflict": ("序号冲突", "Sequence conflict"),
    "quarantine.reason.replay": ("重放消息", "Replay"),
    # -- plausibility checks (server/evaluation/plausibility.py), instrument page --
    "plaus.title": ("数据可信性检查", "Plausibility checks"),
    "plaus.hint": (
        "以下模式在真实仪器上少见，值得人工核查（如现场抽查），但并不证明数据造假。",
        "Patterns a real instrument rarely shows: worth a person's look (e.g. in the spot check), no proof of fraud.",
    ),
    "plaus.none": ("未发现异常", "nothing unusual"),
    "plaus.check.continuous_running": ("连续多日不停机运行", "Running for days without rest"),
    "plaus.check.power_below_standby": ("运行时功率低于待机功率", "Running below standby power"),
    "plaus.check.late_share": ("大量数据由离线缓存补传", "Much data arrived late from the spool"),
    "plaus.check.synthetic_heartbeats": ("心跳间隔完全一致", "Heartbeat intervals identical to the millisecond"),
    "plaus.check.future_clock": ("采集端时钟超前", "Agent clock ahead of the server"),
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


def t_or(lang: str, key: str, fallback: str) -> str:
    """The text of `key` in `lang`, or `fallback` (e.g. a raw code) where the table has no such key."""
    return t(lang, key) if key in TEXT else fallback


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
