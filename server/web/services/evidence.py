"""The evidence behind an interval of an instrument: what its agents' signed records say.

The typed `records` table says which records fall in the interval and which envelope stored each;
the records themselves are read back, byte for byte, from the kept envelopes
(server/store/archive.py, hot rows or packs), each envelope's signature is checked again with the
agent's registered key, and the records are digested into what a person can look at:

- power readings (for a curve): `sample` records in mW, else the heartbeats' per-detector
  `mw_min/mw_max/mw_avg` and the `mw` a state change saw;
- process detectors (evidence with `procs`): the detector's name (the configured program), the
  largest process count, CPU and child processes seen;
- data files: the data-file detectors' evidence (`name` of the last finished file when the agent
  reports names, `sha` its SHA-256, counts); the file size is not in the signed records (the agent
  keeps it in its local spool), so it is shown only when a record carries one;
- state transitions, sessions and lifecycle events;
- per record: arrival (live when received within the derivation's live window of its time, else
  from the spool) and whether its envelope's signature verified.

Evaluators see users as pseudonyms (server/evaluation/privacy.py) and no file names (art. 17
protects users' scientific data; the SHA-256 is enough to match a file during a spot check).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from protocols.errors import ProtocolError
from protocols.signing import public_from_b64
from protocols.validate import check_signature, open_envelope
from server.store.archive import envelopes_for
from server.store.conn import Conn
from server.store.times import dt_to_ms, ms_to_dt
from server.web.auth import Principal
from server.web.db import rows
from server.web.scope import pseudonymizer

MAX_SPAN = timedelta(days=7)
MAX_RECORDS = 20_000
MAX_POINTS = 2_000

# -- named queries -----------------------------------------------------------------------------------

_AGENTS = """
SELECT a.id AS agent_id, p.agent_no, p.derive_params FROM agents a JOIN agent_progress p ON p.agent_id = a.id
WHERE a.instrument_id = %(i)s ORDER BY a.id
"""

# The records inside [t0, t1], plus per agent the last state record before t0 (the state in force
# when the interval began), looked for at most a week back.
_RECORDS = """
SELECT r.agent_no, r.seq, r.envelope_id, r.t, r.type FROM records r
WHERE r.agent_no = ANY(%(agents)s::int[]) AND r.t >= %(t0)s AND r.t <= %(t1)s
UNION
SELECT x.agent_no, x.seq, x.envelope_id, x.t, x.type FROM unnest(%(agents)s::int[]) a(no)
CROSS JOIN LATERAL (
    SELECT r.agent_no, r.seq, r.envelope_id, r.t, r.type FROM records r
    WHERE r.agent_no = a.no AND r.type = 1 AND r.t < %(t0)s AND r.t >= %(t0)s - interval '7 days'
    ORDER BY r.t DESC LIMIT 1
) x
ORDER BY 4, 1, 2 LIMIT %(limit)s
"""

_KEYS = """
SELECT key_id, agent_id, public_key, revoked_at FROM agent_keys WHERE agent_id = ANY(%(agents)s::text[])
"""

_SEGMENTS = """
SELECT agent_id, greatest(start_at, %(t0)s) AS start_at, least(end_at, %(t1)s) AS end_at, state, watched, arrival
FROM usage_segments WHERE instrument_id = %(i)s AND start_at < %(t1)s AND end_at > %(t0)s ORDER BY start_at
"""

# Who was at the instrument during the interval: the derived user sessions that overlap it
# (a session may have started before the interval, so its session_start record is not in it).
_USER_SESSIONS = """
SELECT agent_id, session_id, method, identifier, start_at, end_at, end_reason FROM user_sessions
WHERE instrument_id = %(i)s AND start_at < %(t1)s AND (end_at IS NULL OR end_at > %(t0)s) ORDER BY start_at
LIMIT 500
"""

_IDENTITIES = """
SELECT m.method, m.identifier, m.user_id, p.name FROM identity_map m JOIN platform_users p ON p.id = m.user_id
WHERE m.unit_id = %(u)s AND (m.method, m.identifier) IN (SELECT * FROM unnest(%(methods)s::text[], %(ids)s::text[]))
"""


def agents_of(conn: Conn, instrument_id: str) -> list[dict[str, Any]]:
    return rows(conn, _AGENTS, {"i": instrument_id})


def record_refs(conn: Conn, agent_nos: list[int], t0: datetime, t1: datetime) -> list[dict[str, Any]]:
    return rows(conn, _RECORDS, {"agents": agent_nos, "t0": t0, "t1": t1, "limit": MAX_RECORDS})


def agent_keys(conn: Conn, agent_ids: list[str]) -> list[dict[str, Any]]:
    return rows(conn, _KEYS, {"agents": agent_ids})


def segments(conn: Conn, instrument_id: str, t0: datetime, t1: datetime) -> list[dict[str, Any]]:
    return rows(conn, _SEGMENTS, {"i": instrument_id, "t0": t0, "t1": t1})


def user_sessions(conn: Conn, instrument_id: str, t0: datetime, t1: datetime) -> list[dict[str, Any]]:
    return rows(conn, _USER_SESSIONS, {"i": instrument_id, "t0": t0, "t1": t1})


def identities(conn: Conn, unit_id: str, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
    if not pairs:
        return {}
    found = rows(conn, _IDENTITIES, {"u": unit_id, "methods": [m for m, _ in pairs], "ids": [i for _, i in pairs]})
    return {(r["method"], r["identifier"]): r for r in found}


# -- reading the signed records ----------------------------------------------------------------------


def signed_records(conn: Conn, agents: list[dict[str, Any]], refs: list[dict[str, Any]]) -> tuple[
    list[dict[str, Any]], list[dict[str, Any]]
]:
    """(records, envelopes): each referenced record as signed, with its envelope's id, receive time
    and signature verdict; and one line per envelope read."""
    key_rows = agent_keys(conn, [a["agent_id"] for a in agents])
    keys = {(k["agent_id"], k["key_id"]): k for k in key_rows}
    by_agent: dict[int, dict[int, int]] = defaultdict(dict)  # agent_no -> seq -> envelope id
    for r in refs:
        by_agent[r["agent_no"]][r["seq"]] = r["envelope_id"]
    agent_id_of = {a["agent_no"]: a["agent_id"] for a in agents}
    out: list[dict[str, Any]] = []
    envs: list[dict[str, Any]] = []
    for agent_no, wanted in by_agent.items():
        agent_id = agent_id_of[agent_no]
        needed = set(wanted.values())
        for env in envelopes_for(conn, agent_no, min(wanted), max(wanted)):
            if env.id not in needed:
                continue
            verdict: dict[str, Any] = {"envelope_id": env.id, "agent_id": agent_id, "received_at": env.received_at,
                                       "verified": False, "problem": None, "key_id": None}
            body: dict[str, Any] | None = None
            hashes: list[str] = []
            try:
                opened = open_envelope(env.raw)
                body, hashes = opened.body, opened.hashes
                verdict["key_id"] = body["key"]
                key = keys.get((agent_id, body["key"]))
                if key is None:
                    verdict["problem"] = f"key {body['key']} is not registered for {agent_id}"
                else:
                    check_signature(body, public_from_b64(key["public_key"]))
                    verdict["verified"] = True
                    if key["revoked_at"] is not None:
                        verdict["problem"] = f"key {body['key']} was revoked at {key['revoked_at'].isoformat()}"
            except ProtocolError as exc:
                verdict["problem"] = str(exc)
            envs.append(verdict)
            if body is None:
                continue
            for rec, h in zip(body["records"], hashes, strict=True):
                if wanted.get(rec["seq"]) == env.id:
                    out.append({"agent_id": agent_id, "envelope_id": env.id, "received_at": env.received_at,
                                "verified": verdict["verified"], "hash": h, "record": rec})
    out.sort(key=lambda r: (r["record"]["t"], r["agent_id"], r["record"]["seq"]))
    return out, envs


# -- digest ------------------------------------------------------------------------------------------


def _thin(points: list[dict[str, Any]], limit: int = MAX_POINTS) -> list[dict[str, Any]]:
    """At most `limit` points, keeping each bucket's extremes (a curve must not hide a spike)."""
    if len(points) <= limit:
        return points
    per = len(points) / (limit / 2)
    out: list[dict[str, Any]] = []
    i = 0.0
    while int(i) < len(points):
        chunk = points[int(i):int(i + per)] or points[int(i):int(i) + 1]
        lo = min(chunk, key=lambda p: p["w"])
        hi = max(chunk, key=lambda p: p["w"])
        out += sorted({id(lo): lo, id(hi): hi}.values(), key=lambda p: p["t"])
        i += per
    return out


def digest(records: list[dict[str, Any]], t0: datetime, t1: datetime, live_ms: int,
           live_ms_of: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Power points, processes, files, transitions, sessions, events and per-record facts. A record
    is 'live' when received within its agent's live window (`live_ms_of`, else `live_ms`)."""
    windows = live_ms_of or {}
    lo, hi = dt_to_ms(t0), dt_to_ms(t1)
    samples: list[dict[str, Any]] = []
    summary_points: list[dict[str, Any]] = []
    processes: dict[str, dict[str, Any]] = {}
    files: dict[tuple[str | None, str | None], dict[str, Any]] = {}
    file_counts: dict[str, int] = {}
    transitions: list[dict[str, Any]] = []
    sessions: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    facts: list[dict[str, Any]] = []
    for item in records:
        rec = item["record"]
        t = rec["t"]
        arrival = "live" if dt_to_ms(item["received_at"]) - t <= windows.get(item["agent_id"], live_ms) else "spool"
        kind = rec["type"]
        facts.append({"agent_id": item["agent_id"], "seq": rec["seq"], "type": kind, "t": ms_to_dt(t),
                      "hash": item["hash"], "envelope_id": item["envelope_id"], "received_at": item["received_at"],
                      "arrival": arrival, "verified": item["verified"]})
        common = {"t": ms_to_dt(t), "agent_id": item["agent_id"], "seq": rec["seq"], "arrival": arrival,
                  "verified": item["verified"]}
        if kind == "sample" and rec.get("unit") == "mW":
            step = int(rec["step_ms"])
            for k, v in enumerate(rec["values"]):
                ts = int(rec["start"]) + k * step
                if v is not None and lo <= ts <= hi:
                    samples.append({"t": ms_to_dt(ts), "w": v / 1000, "source": "sample", "signal": rec["signal"]})
        evidence = rec.get("evidence") if isinstance(rec.get("evidence"), dict) else {}
        for det, ev in evidence.items():
            if not isinstance(ev, dict) or det == "state":
                continue
            if kind == "heartbeat" and isinstance(ev.get("mw_avg"), int) and lo <= t <= hi:
                summary_points.append({"t": ms_to_dt(t), "w": ev["mw_avg"] / 1000, "min_w": _w(ev.get("mw_min")),
                                       "max_w": _w(ev.get("mw_max")), "source": "heartbeat", "signal": det})
            elif kind == "state" and isinstance(ev.get("mw"), int) and lo <= t <= hi:
                summary_points.append({"t": ms_to_dt(t), "w": ev["mw"] / 1000, "min_w": None, "max_w": None,
                                       "source": "state", "signal": det})
            if any(k.startswith("procs") for k in ev):
                p = processes.setdefault(det, {"name": det, "procs_max": 0, "cpu_max_permille": 0, "children": False,
                                               "first_seen": ms_to_dt(t), "last_seen": ms_to_dt(t)})
                p["procs_max"] = max(p["procs_max"], *[int(v) for k, v in ev.items()
                                                       if k.startswith("procs") and isinstance(v, int)])
                cpus = [int(v) for k, v in ev.items() if k.startswith("cpu") and isinstance(v, int)]
                if cpus:
                    p["cpu_max_permille"] = max(p["cpu_max_permille"], *cpus)
                if any(k.startswith("children") and isinstance(v, int) and v > 0 for k, v in ev.items()):
                    p["children"] = True
                p["last_seen"] = ms_to_dt(t)
            if "sha" in ev or "name" in ev or "done" in ev:
                done = ev.get("done")
                if isinstance(done, int):
                    file_counts[det] = max(file_counts.get(det, 0), done)
                name = ev.get("name") if isinstance(ev.get("name"), str) else None
                sha = ev.get("sha") if isinstance(ev.get("sha"), str) else None
                if name or sha:
                    files.setdefault((name, sha), {"detector": det, "name": name, "sha256": sha, "size": None,
                                                   "first_seen": ms_to_dt(t), "arrival": arrival})
        if kind == "state":
            transitions.append({**common, "from": rec.get("prev_state"), "to": rec.get("state"),
                                "rule": rec.get("rule", ""), "before_interval": t < lo})
        elif kind == "session_start":
            sessions.append({**common, "event": "start", "session": rec["session"], "method": rec["method"],
                             "identifier": rec["user"]})
        elif kind == "session_end":
            sessions.append({**common, "event": "end", "session": rec["session"], "reason": rec["reason"]})
        elif kind in ("lifecycle", "spool_overflow"):
            events.append({**common, "event": rec.get("event", kind), "detail": rec.get("detail") or {}})
        elif kind in ("output", "file"):  # a data-file record type, should the protocol gain one
            name = rec.get("name") or rec.get("path")
            files.setdefault((name, rec.get("sha256")), {
                "detector": kind, "name": name, "sha256": rec.get("sha256"), "size": rec.get("size"),
                "first_seen": ms_to_dt(t), "arrival": arrival})
    power = samples if samples else summary_points
    power.sort(key=lambda p: p["t"])
    return {
        "power": {"source": "sample" if samples else ("heartbeat" if summary_points else None), "unit": "W",
                  "points": _thin(power)},
        "processes": list(processes.values()),
        "files": sorted(files.values(), key=lambda f: f["first_seen"]),
        "files_finished": file_counts,
        "transitions": transitions,
        "sessions": sessions,
        "events": events,
        "records": facts,
    }


def _w(mw: Any) -> float | None:
    return mw / 1000 if isinstance(mw, int) and not isinstance(mw, bool) else None


def interval_evidence(conn: Conn, p: Principal, inst: dict[str, Any], t0: datetime, t1: datetime,
                      live_ms: int) -> dict[str, Any]:
    """Everything the signed records say about [t0, t1] for the instrument `inst` (a row the
    caller may read). 'Live' means what it meant in the hours: each agent's live window as ingest
    derived with it (migration 025), `live_ms` (the process's setting) where not recorded."""
    agents = agents_of(conn, inst["id"])
    refs = record_refs(conn, [a["agent_no"] for a in agents], t0, t1) if agents else []
    records, envs = signed_records(conn, agents, refs) if refs else ([], [])
    used = {a["agent_id"]: int(a["derive_params"]["live_window_ms"]) for a in agents
            if a.get("derive_params") and "live_window_ms" in a["derive_params"]}
    out = digest(records, t0, t1, live_ms, used)
    users = user_sessions(conn, inst["id"], t0, t1)
    starts = [s for s in out["sessions"] if s["event"] == "start"]
    pairs = sorted({(s["method"], s["identifier"]) for s in [*starts, *users]})
    mapped = identities(conn, inst["unit_id"], pairs)
    pseudo = None if p.sees_names else pseudonymizer(conn)
    for s in [*starts, *users]:
        m = mapped.get((s["method"], s["identifier"]))
        if pseudo is not None:
            s["who"] = pseudo.person(m["user_id"] if m else None, s["method"], s["identifier"])
            del s["identifier"]
        else:
            s["who"] = m["name"] if m else f"{s['method']}:{s['identifier']}"
        s["mapped"] = m is not None
    out["users"] = users
    if pseudo is not None:
        for f in out["files"]:
            f["name"] = None
    verified = sum(1 for e in envs if e["verified"])
    live = sum(1 for r in out["records"] if r["arrival"] == "live")
    return {
        "instrument_id": inst["id"],
        "from": t0,
        "to": t1,
        "agents": [a["agent_id"] for a in agents],
        "segments": segments(conn, inst["id"], t0, t1),
        **out,
        "envelopes": envs,
        "summary": {
            "records": len(out["records"]), "envelopes": len(envs), "envelopes_verified": verified,
            "envelopes_failed": len(envs) - verified, "live": live, "spool": len(out["records"]) - live,
            "truncated": len(refs) >= MAX_RECORDS, "names_hidden": pseudo is not None,
        },
    }
