"""Instruments and service records in the national platform's field layout (domain notes), as CSV
and JSON.

No official specification was found; the fields follow the public integration code summarised in
the domain notes. Codes are the platform's: user type 120 internal / 130 external, direction
135 research / 136 development / 137 teaching / 138 other; service times at hour precision and
service hours at 0.1 h. Yearly running hours are what was measured (verified + unverified) with the
verified part beside it. Applicants are pseudonymised (art. 17) unless names are asked for.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from server.evaluation.indicators import compute
from server.evaluation.period import Period
from server.evaluation.privacy import Pseudonymizer
from server.evaluation.report import applicant_pseudonym
from server.exports.cells import csv_value
from server.store.conn import Conn
from server.store.times import TZ

INSTRUMENT_FIELDS: list[tuple[str, str]] = [
    ("id", "平台仪器编号"),
    ("name", "中文名称"),
    ("name_en", "英文名称"),
    ("unit_name", "所属单位"),
    ("internal_no", "所在单位仪器编号"),
    ("classification_code", "分类编码"),
    ("location", "安放地址"),
    ("original_value", "原值（元）"),
    ("source", "仪器来源"),
    ("category", "仪器类别"),
    ("running_status", "运行状态"),
    ("sharing_mode", "共享模式"),
    ("model", "规格型号"),
    ("manufacturer", "生产制造商"),
    ("country", "产地国别"),
    ("booked_on", "建账日期"),
    ("funding_source", "主要购置经费来源"),
    ("fee_standard", "参考收费标准"),
    ("service_content", "服务内容"),
    ("main_functions", "主要功能"),
    ("specs", "主要技术指标"),
    ("booking_url", "预约服务网址"),
    ("contact_name", "联系人"),
    ("contact_phone", "联系电话"),
    ("contact_email", "电子邮箱"),
    ("running_hours", "年总运行机时"),
    ("running_hours_verified", "其中核验机时"),
    ("service_hours", "年对外服务机时"),
    ("service_hours_verified", "其中核验对外服务机时"),
]

SERVICE_FIELDS: list[tuple[str, str]] = [
    ("instrument_id", "平台仪器编号"),
    ("instrument_name", "仪器名称"),
    ("record_no", "服务记录编号"),
    ("start", "服务开始时间"),
    ("end", "服务结束时间"),
    ("hours", "服务机时"),
    ("amount", "服务金额（元）"),
    ("content", "服务内容"),
    ("way", "服务方式"),
    ("user_type", "用户类型"),
    ("direction", "服务方向"),
    ("applicant", "申请人"),
    ("applicant_org", "申请人所在单位"),
    ("satisfaction", "用户满意度"),
]

_INST_COLS = [
    k
    for k, _ in INSTRUMENT_FIELDS
    if k not in ("unit_name", "running_hours", "running_hours_verified", "service_hours", "service_hours_verified")
]
TENTH = Decimal("0.1")


@dataclass(frozen=True)
class NriiFiles:
    instruments_csv: Path
    services_csv: Path
    json: Path
    instruments: int
    services: int


def _hour(ts: datetime) -> str:
    return ts.astimezone(TZ).strftime("%Y-%m-%d %H:00")


def instrument_rows(conn: Conn, period: Period, unit_ids: Sequence[str] | None) -> list[dict[str, Any]]:
    ev = compute(conn, period, unit_ids)
    units = {u.id: u.name for u in ev.units.values()}
    rows = []
    for row in conn.execute(
        f"SELECT {', '.join('i.' + c for c in _INST_COLS)}, i.unit_id FROM instruments i"
        " WHERE %(units)s::text[] IS NULL OR i.unit_id = ANY (%(units)s::text[]) ORDER BY i.unit_id, i.id",
        {"units": list(unit_ids) if unit_ids is not None else None},
    ):
        rec: dict[str, Any] = dict(zip(_INST_COLS, row[:-1], strict=True))
        f = ev.instruments[rec["id"]]
        rec["unit_name"] = units[row[-1]]
        rec["running_hours"] = Decimal(f.running.total).quantize(TENTH, ROUND_HALF_UP)
        rec["running_hours_verified"] = Decimal(f.running.verified).quantize(TENTH, ROUND_HALF_UP)
        rec["service_hours"] = Decimal(f.external.total).quantize(TENTH, ROUND_HALF_UP)
        rec["service_hours_verified"] = Decimal(f.external.verified).quantize(TENTH, ROUND_HALF_UP)
        rows.append(rec)
    return rows


def service_rows(
    conn: Conn, period: Period, unit_ids: Sequence[str] | None, pseudonyms: Pseudonymizer, include_names: bool
) -> Iterator[dict[str, Any]]:
    cur = conn.cursor(name="nrii_services")  # server-side: a region's records are streamed
    cur.execute(
        "SELECT r.instrument_id, i.name, r.record_no, r.start_at, r.end_at, r.service_hours, r.amount, r.content,"
        " r.way, r.user_type, r.direction, r.applicant_user_id, r.applicant_name, r.applicant_org_name,"
        " r.satisfaction FROM service_records r JOIN instruments i ON i.id = r.instrument_id"
        " WHERE r.start_at >= %(t0)s AND r.start_at < %(t1)s"
        " AND (%(units)s::text[] IS NULL OR r.unit_id = ANY (%(units)s::text[]))"
        " ORDER BY r.unit_id, r.start_at, r.id",
        {"t0": period.t0, "t1": period.t1, "units": list(unit_ids) if unit_ids is not None else None},
    )
    for iid, iname, no, a, b, hours, amount, content, way, user_type, direction, user, name, org, satisfaction in cur:
        yield {
            "instrument_id": iid,
            "instrument_name": iname,
            "record_no": no,
            "start": _hour(a),
            "end": _hour(b),
            "hours": hours.quantize(TENTH, ROUND_HALF_UP),
            "amount": amount,
            "content": content,
            "way": way,
            "user_type": user_type,
            "direction": direction,
            "applicant": name if include_names else applicant_pseudonym(pseudonyms, user, name),
            "applicant_org": org,
            "satisfaction": satisfaction,
        }
    cur.close()


def _json(v: Any) -> Any:
    if isinstance(v, Decimal):
        return str(v)
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return v


def export(
    conn: Conn,
    period: Period,
    out_dir: Path,
    pseudonyms: Pseudonymizer,
    unit_ids: Sequence[str] | None = None,
    *,
    include_names: bool = False,
) -> NriiFiles:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"nrii-{period.label.replace('..', '_')}"
    inst_csv, svc_csv, js = (
        out_dir / f"{stem}-instruments.csv",
        out_dir / f"{stem}-services.csv",
        out_dir / f"{stem}.json",
    )
    instruments = instrument_rows(conn, period, unit_ids)
    with inst_csv.open("w", encoding="utf-8-sig", newline="") as fh:  # BOM: Excel reads UTF-8 correctly
        w = csv.writer(fh)
        w.writerow([label for _, label in INSTRUMENT_FIELDS])
        for rec in instruments:
            w.writerow([csv_value(rec[k]) for k, _ in INSTRUMENT_FIELDS])
    n_services = 0
    with svc_csv.open("w", encoding="utf-8-sig", newline="") as fh, js.open("w", encoding="utf-8") as jf:
        w = csv.writer(fh)
        w.writerow([label for _, label in SERVICE_FIELDS])
        jf.write('{"format": "nrii-layout", "period": ' + json.dumps(period.label) + ', "fields": ')
        jf.write(
            json.dumps({"instruments": dict(INSTRUMENT_FIELDS), "services": dict(SERVICE_FIELDS)}, ensure_ascii=False)
        )
        jf.write(',\n"instruments": [\n')
        jf.write(",\n".join(json.dumps({k: _json(v) for k, v in r.items()}, ensure_ascii=False) for r in instruments))
        jf.write('\n],\n"services": [\n')
        for rec in service_rows(conn, period, unit_ids, pseudonyms, include_names):
            w.writerow([csv_value(rec[k]) for k, _ in SERVICE_FIELDS])
            jf.write(
                ("" if n_services == 0 else ",\n")
                + json.dumps({k: _json(v) for k, v in rec.items()}, ensure_ascii=False)
            )
            n_services += 1
        jf.write("\n]}\n")
    return NriiFiles(inst_csv, svc_csv, js, len(instruments), n_services)
