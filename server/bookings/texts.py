"""The bookings' user-visible texts, Chinese first with English, added to the one i18n table
(server/web/i18n.py) on import, as server/alerts/texts.py does."""

from __future__ import annotations

from server.web import i18n

TEXT: dict[str, tuple[str, str]] = {
    "nav.bookings": ("预约", "Bookings"),
    "what.booking": ("预约", "Booking"),
    "booking.title": ("预约", "Bookings"),
    "booking.request": ("申请预约", "Request a booking"),
    "booking.request_title": ("预约 {instrument}", "Book {instrument}"),
    "booking.mine": ("我的预约 {code}", "My booking {code}"),
    "booking.code": ("预约码", "Booking code"),
    "booking.code_help": (
        "请保存预约码：到仪器签到时输入（jishi-agent checkin --booking 预约码），也用它查看本预约。",
        "Keep the booking code: type it when you check in at the instrument (jishi-agent checkin --booking CODE);"
        " it also opens this page.",
    ),
    "booking.slot": ("时段", "Slot"),
    "booking.applicant": ("申请人", "Applicant"),
    "booking.org": ("单位", "Organisation"),
    "booking.status": ("状态", "Status"),
    "booking.status.requested": ("待审批", "Waiting for approval"),
    "booking.status.approved": ("已批准", "Approved"),
    "booking.status.declined": ("未批准", "Declined"),
    "booking.status.cancelled": ("已取消", "Cancelled"),
    "booking.user_type.120": ("校内", "Internal"),
    "booking.user_type.130": ("校外", "External"),
    "booking.outcome": ("预约与实测", "Booked vs measured"),
    "booking.outcome.used": ("按时使用", "Used"),
    "booking.outcome.no_show": ("未到", "No-show"),
    "booking.outcome.overrun": ("超时", "Overrun"),
    "booking.measured": ("实测运行机时", "Measured running hours"),
    "booking.draft": ("服务记录草稿", "Drafted service record"),
    "booking.draft_fee": ("按收费标准 {item}：{amount} 元", "At the price list's {item}: {amount} CNY"),
    "booking.confirm": ("确认为服务记录", "Confirm as a service record"),
    "booking.confirmed": ("已生成服务记录 {no}", "Service record {no} created"),
    "booking.approve": ("批准", "Approve"),
    "booking.decline": ("不批准", "Decline"),
    "booking.cancel": ("取消", "Cancel"),
    "booking.none": ("没有预约。", "No bookings."),
    "booking.rules": ("预约规则", "Booking rules"),
    "booking.rules_summary": (
        "可预约 {days} 天内的时段，至少提前 {notice} 小时，单次最长 {hours} 小时；{approval}",
        "Slots up to {days} days ahead, at least {notice} hours' notice, at most {hours} hours each; {approval}",
    ),
    "booking.approval.all": ("预约需管理人员审批后生效。", "bookings take effect once the staff approve them."),
    "booking.approval.internal": ("校内预约需管理人员审批。", "internal bookings need the staff's approval."),
    "booking.approval.external": ("校外预约需管理人员审批。", "outside users' bookings need the staff's approval."),
    "booking.approval.none": ("提交即生效。", "bookings take effect at once."),
    "booking.terms": ("服务条款（第十四条）", "Service terms (art. 14)"),
    "booking.ip_terms": ("知识产权", "Intellectual property"),
    "booking.confidentiality": ("保密", "Confidentiality"),
    "booking.unbooked": ("无预约运行（近 7 天）", "Runs without a booking (last 7 days)"),
    "booking.calendar": ("日历（iCalendar）", "Calendar (iCalendar)"),
    "booking.busy": ("已预约", "Booked"),
    "booking.submitted": ("已提交。", "Submitted."),
    "booking.err.closed": ("此仪器暂不接受在线预约。", "This instrument takes no online bookings."),
    "booking.err.order": ("结束时间须晚于开始时间。", "The end must be after the start."),
    "booking.err.notice": ("须至少提前 {hours} 小时预约。", "Book at least {hours} hours ahead."),
    "booking.err.ahead": ("最多可预约 {days} 天内的时段。", "Slots can be booked at most {days} days ahead."),
    "booking.err.too_long": ("一次预约最长 {hours} 小时。", "A booking lasts at most {hours} hours."),
    "booking.err.org": ("所选单位不存在。", "The organisation chosen does not exist."),
    "booking.err.internal_only": (
        "此仪器仅向本单位及关联单位用户开放预约。",
        "Only users of the unit and its affiliates may book this instrument.",
    ),
    "booking.err.taken": ("该时段已被预约。", "This slot is already booked."),
    "booking.err.state": ("预约当前状态（{status}）不允许此操作。", "Not possible in the booking's state ({status})."),
    "booking.err.too_many": (
        "预约申请过于频繁，请一小时后再试。", "Too many booking requests from here; try again in an hour."),
    "booking.err.no_draft": ("此预约没有服务记录草稿。", "This booking has no drafted service record."),
    "booking.err.confirmed": ("服务记录已生成。", "The service record exists already."),
}

i18n.TEXT.update(TEXT)
