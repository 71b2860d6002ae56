"""The alerts' user-visible texts, Chinese first with English, added to the one i18n table
(server/web/i18n.py) when this module is imported, so pages, API errors and messages share `t()`."""

from __future__ import annotations

from server.web import i18n

TEXT: dict[str, tuple[str, str]] = {
    "nav.alerts": ("告警", "Alerts"),
    "what.alert_channel": ("告警渠道", "Alert channel"),
    "what.alert": ("告警", "Alert"),
    "alerts.title": ("告警", "Alerts"),
    "alerts.unit_title": ("{unit} · 告警", "{unit} · alerts"),
    "alerts.open": ("未解除", "Open"),
    "alerts.cleared": ("已解除", "Cleared"),
    "alerts.none": ("没有告警。", "No alerts."),
    "alerts.rule": ("规则", "Rule"),
    "alerts.subject": ("对象", "Subject"),
    "alerts.message": ("内容", "Message"),
    "alerts.opened": ("发生时间", "Opened"),
    "alerts.cleared_at": ("解除时间", "Cleared"),
    "alerts.deliveries": ("推送记录", "Deliveries"),
    "alerts.channels": ("推送渠道", "Channels"),
    "alerts.no_channels": ("尚未配置推送渠道。", "No channel configured yet."),
    "alerts.settings": ("告警规则", "Alert rules"),
    "alerts.recent": ("最近推送", "Recent deliveries"),
    "alerts.test": ("发送测试消息", "Send a test message"),
    "alerts.pending": ("待推送", "Pending"),
    "alerts.digest": ("每日汇总（{hour} 点）", "Daily digest ({hour}:00)"),
    "alerts.immediate": ("即时推送", "Immediate"),
    "alerts.rate": ("每小时最多 {n} 条", "At most {n} per hour"),
    "alerts.enabled": ("启用", "Enabled"),
    "alerts.disabled": ("停用", "Disabled"),
    "alerts.state": ("状态", "State"),
    "alerts.error": ("错误", "Error"),
    "alerts.all_units": ("全部单位", "All units"),
    "alerts.settings_off": ("关闭", "off"),
    "alerts.api_hint": ("接口：", "API:"),
    "delivery.sent": ("已送达", "Sent"),
    "delivery.failed": ("失败", "Failed"),
    "delivery.kind.alert": ("告警", "Alert"),
    "delivery.kind.digest": ("每日汇总", "Daily digest"),
    "delivery.kind.test": ("测试消息", "Test message"),
    "channel.wecom": ("企业微信群机器人", "WeCom group robot"),
    "channel.dingtalk": ("钉钉群机器人", "DingTalk group robot"),
    "channel.email": ("电子邮件", "E-mail"),
    "setting.offline_minutes": ("采集端离线超过（分钟）", "Agent offline longer than (minutes)"),
    "setting.fault": ("仪器故障", "Instrument fault"),
    "setting.unused_days": ("仪器闲置超过（天）", "Instrument unused for (days)"),
    "setting.deadline_workdays": (
        "纳入平台期限前提醒（工作日）", "Warn before the registration deadline (working days)"),
    "setting.external_grace_hours": (
        "对外使用后未登记服务记录（小时）", "External use without a service record after (hours)"),
    "setting.period_close_days": ("评价期结束前提醒（天）", "Warn before the evaluation period ends (days)"),
    "setting.booking_wait_hours": ("预约申请待审批超过（小时）", "Booking requests waiting longer than (hours)"),
    # -- rules: a label and a message with the alert's params --
    "alert.rule.agent_offline": ("采集端离线", "Agent offline"),
    "alert.rule.instrument_fault": ("仪器故障", "Instrument fault"),
    "alert.rule.instrument_unused": ("仪器闲置", "Instrument unused"),
    "alert.rule.registration_deadline": ("纳入平台期限临近", "Registration deadline approaching"),
    "alert.rule.external_unrecorded": ("对外使用未登记服务记录", "External use without a service record"),
    "alert.rule.period_closing": ("评价期即将结束", "Evaluation period closing"),
    "alert.rule.booking_waiting": ("预约申请待审批", "Booking requests waiting"),
    "alert.msg.agent_offline": (
        "{instrument}（{instrument_id}）的采集端 {agent_id} 自 {since} 起离线，已 {minutes} 分钟。",
        "The agent {agent_id} of {instrument} ({instrument_id}) has been offline since {since} ({minutes} min).",
    ),
    "alert.msg.instrument_fault": (
        "{instrument}（{instrument_id}）自 {since} 起处于故障状态。",
        "{instrument} ({instrument_id}) has reported a fault since {since}.",
    ),
    "alert.msg.instrument_unused": (
        "{instrument}（{instrument_id}）已 {days} 天没有运行（最后运行：{last}）。",
        "{instrument} ({instrument_id}) has not run for {days} days (last run: {last}).",
    ),
    "alert.msg.registration_deadline": (
        "{instrument}（{instrument_id}）{accepted} 验收，须在 {deadline} 前纳入平台（第十三条），"
        "还剩 {left} 个工作日。",
        "{instrument} ({instrument_id}), accepted {accepted}, must be on the platform by {deadline} (art. 13):"
        " {left} working days left.",
    ),
    "alert.msg.registration_overdue": (
        "{instrument}（{instrument_id}）{accepted} 验收，纳入平台期限 {deadline} 已过（第十三条），逾期 {overdue} 天。",
        "{instrument} ({instrument_id}), accepted {accepted}, missed its registration deadline {deadline}"
        " (art. 13) by {overdue} days.",
    ),
    "alert.msg.external_unrecorded": (
        "{instrument}（{instrument_id}）{start} 至 {end} 有校外用户（{org}）使用 {hours} 小时，尚无服务记录。",
        "{instrument} ({instrument_id}) was used by an outside user ({org}) for {hours} h from {start} to {end};"
        " no service record covers it.",
    ),
    "alert.msg.period_closing": (
        "{year} 年度评价期将于 {end} 结束（还剩 {days} 天），请核对服务记录；待审批预约 {waiting} 条。",
        "The {year} evaluation period ends on {end} ({days} days left): check the service records;"
        " {waiting} booking requests waiting.",
    ),
    "alert.msg.booking_waiting": (
        "{instrument}（{instrument_id}）有 {n} 条预约申请等待审批，最早提交于 {since}。",
        "{instrument} ({instrument_id}) has {n} booking requests waiting since {since}.",
    ),
    "alert.title": ("【机时告警】{unit}：{n} 条", "[Jishi alert] {unit}: {n}"),
    "alert.clear_title": ("【机时告警解除】{unit}：{n} 条已恢复", "[Jishi] {unit}: {n} resolved"),
    "delivery.kind.clear": ("解除通知", "Resolved"),
    "alert.digest_title": ("【机时每日汇总】{unit}：{n} 条未解除告警", "[Jishi daily digest] {unit}: {n} open alerts"),
    "alert.test_title": ("【机时】测试消息：{unit}", "[Jishi] test message: {unit}"),
    "alert.test_body": ("此渠道配置正确。", "This channel works."),
    "err.channel_target": ("推送地址无效：{detail}", "Invalid channel target: {detail}"),
}

i18n.TEXT.update(TEXT)
