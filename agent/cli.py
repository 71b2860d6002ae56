"""`jishi-agent`: run, keygen, enroll, check, status, calibrate, checkin, checkout.

A gateway config (`[[instrument]]` tables) runs all its instruments in one process; `keygen`,
`enroll`, `check` and `status` cover every instrument, or the one named by `--instrument`;
`calibrate`, `checkin` and `checkout` need `--instrument`.

Exit codes: 0 success, 1 a problem found or a failure at run time, 2 configuration mistakes.
"""

from __future__ import annotations

import sys

from agent import lean

lean.before_imports(sys.argv[1:])  # `run`: before `logging` and `dataclasses` import what it never reads

import json  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from typing import TYPE_CHECKING, Any, cast  # noqa: E402

if TYPE_CHECKING:
    import argparse

from agent import SOFTWARE  # noqa: E402
from agent.config import Config, ConfigError, GatewayConfig, default_path, load_any  # noqa: E402

EXIT_OK, EXIT_PROBLEM, EXIT_CONFIG = 0, 1, 2


def _load_any(args: argparse.Namespace) -> Config | GatewayConfig:
    return load_any(Path(args.config) if args.config else default_path())


def _load_all(args: argparse.Namespace) -> list[Config]:
    """Every instrument of the config, or only the one named by --instrument."""
    cfg = _load_any(args)
    if isinstance(cfg, GatewayConfig):
        return [cfg.select(args.instrument)] if args.instrument else list(cfg.instruments)
    if args.instrument and args.instrument not in (cfg.agent.id, cfg.agent.instrument):
        raise ConfigError(cfg.path, "instrument", f"this config is for {cfg.agent.id}, not {args.instrument!r}")
    return [cfg]


def _load(args: argparse.Namespace) -> Config:
    """The one instrument a command concerns; a gateway config needs --instrument."""
    cfg = _load_any(args)
    if isinstance(cfg, GatewayConfig) and not args.instrument:
        raise ConfigError(cfg.path, "instrument", "a gateway config: name the instrument with --instrument "
                          f"(agent ids: {', '.join(c.agent.id for c in cfg.instruments)})")
    return _load_all(args)[0]


def _setup_logging(level: str, file: Path | None, gateway: bool = False, force: bool = False) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if file is not None:
        from logging.handlers import RotatingFileHandler  # only with a log file (its imports cost memory)

        file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(RotatingFileHandler(file, maxBytes=2_000_000, backupCount=3, encoding="utf-8"))
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    if gateway:
        from agent.runner import AgentLogFilter

        fmt = "%(asctime)s %(levelname)s %(name)s [%(agent_id)s]: %(message)s"
        for h in handlers:
            h.addFilter(AgentLogFilter())
    logging.basicConfig(level=level, handlers=handlers, format=fmt, force=force)


def _key_problem(cfg: Config) -> str | None:
    kf = cfg.agent.key_file
    if not kf.exists():
        return f"key file {kf} does not exist: create it with `jishi-agent keygen --config {cfg.path}`"
    try:
        from agent.signer import load_key

        load_key(kf)
    except (OSError, ValueError) as exc:
        return f"key file {kf} is not a valid Ed25519 key: {exc}"
    return None


# ---- commands ----------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    loaded = _load_any(args)
    if isinstance(loaded, GatewayConfig) and not args.instrument:
        lean.for_run()
        return _run_gateway(loaded)
    cfg = _load(args)
    lean.for_run()
    _setup_logging(cfg.agent.log_level, cfg.agent.log_file)
    problem = _key_problem(cfg)
    if problem:
        print(f"jishi-agent: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    from agent.runner import Agent
    from agent.spool import SpoolError

    try:
        agent = Agent(cfg)
    except SpoolError as exc:
        print(f"jishi-agent: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    agent.install_signals()
    return agent.run()


def _run_gateway(gw: GatewayConfig) -> int:
    """All instruments or none: a missing key is a setup mistake to fix, not a run-time state."""
    _setup_logging(gw.gateway.log_level, gw.gateway.log_file, gateway=True)
    problems = [f"{c.agent.id}: {p}" for c in gw.instruments if (p := _key_problem(c))]
    if problems:
        for p in problems:
            print(f"jishi-agent: {p}", file=sys.stderr)
        return EXIT_CONFIG
    from agent.runner import Gateway
    from agent.spool import SpoolError

    try:
        gateway = Gateway(gw)
    except SpoolError as exc:
        print(f"jishi-agent: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    gateway.install_signals()
    return gateway.run()


def cmd_keygen(args: argparse.Namespace) -> int:
    from agent.signer import AgentKey, save_key
    from protocols.signing import key_id, public_to_b64

    if args.out:
        paths = [Path(args.out)]
    else:
        paths = [c.agent.key_file for c in _load_all(args)]
    code = EXIT_OK
    for path in paths:
        key = AgentKey.generate()
        try:
            save_key(key, path)
        except FileExistsError:
            print(f"jishi-agent: {path} exists; refusing to overwrite a key (move it away first)", file=sys.stderr)
            code = EXIT_PROBLEM
            continue
        print(json.dumps({"key_file": str(path), "key_id": key_id(key), "public_key": public_to_b64(key)},
                         indent=2))
    return code


def enrolment(cfg: Config) -> dict[str, Any]:
    from agent.signer import load_key
    from protocols.signing import key_id, public_to_b64

    key = load_key(cfg.agent.key_file)
    return {"agent": cfg.agent.id, "unit": cfg.agent.unit, "instrument": cfg.agent.instrument,
            "key_id": key_id(key), "public_key": public_to_b64(key), "sw": SOFTWARE,
            "detectors": [{"name": d.name, "kind": d.kind} for d in cfg.detectors]}


def cmd_enroll(args: argparse.Namespace) -> int:
    """One JSON document, or for a gateway a JSON list of them (one per instrument)."""
    configs = _load_all(args)
    problems = [p for c in configs if (p := _key_problem(c))]
    if problems:
        for p in problems:
            print(f"jishi-agent: {p}", file=sys.stderr)
        return EXIT_CONFIG
    docs = [enrolment(c) for c in configs]
    print(json.dumps(docs if len(docs) > 1 else docs[0], indent=2, ensure_ascii=False))
    if not args.url:
        print("register this with the platform operator, or use --url to post it", file=sys.stderr)
        return EXIT_OK
    return max(_post_enrolment(doc, args) for doc in docs)


def _post_enrolment(doc: dict[str, Any], args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(args.url, data=json.dumps(doc).encode("utf-8"), method="POST",
                                 headers={"Content-Type": "application/json"})
    if args.token:
        req.add_header("Authorization", f"Bearer {args.token}")
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            print(f"enrolment of {doc['agent']} sent: HTTP {resp.status} "
                  f"{resp.read(2000).decode('utf-8', 'replace')}")
            return EXIT_OK
    except urllib.error.HTTPError as exc:
        print(f"jishi-agent: the server refused the enrolment of {doc['agent']}: HTTP {exc.code} "
              f"{exc.read(2000).decode('utf-8', 'replace')}", file=sys.stderr)
    except (urllib.error.URLError, OSError) as exc:
        print(f"jishi-agent: cannot reach {args.url}: {exc}", file=sys.stderr)
    return EXIT_PROBLEM


def _probe_broker(cfg: Config) -> tuple[bool, str]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from agent.publisher import secure

    m = cfg.mqtt
    result: list[str] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{m.client_id or cfg.agent.id}-check"[:64],
                         protocol=mqtt.MQTTv311)
    client.connect_timeout = m.connect_timeout_s
    client.on_connect = lambda c, u, f, rc, p: result.append(str(rc) if rc.is_failure else "ok")
    try:
        secure(client, m)
        client.connect(m.host, m.port, keepalive=10)
        deadline = time.monotonic() + m.connect_timeout_s
        while not result and time.monotonic() < deadline:
            if client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
                break
        client.disconnect()
    except (OSError, ValueError) as exc:
        return False, f"{m.host}:{m.port}: {exc}"
    if not result:
        return False, f"{m.host}:{m.port}: no answer within {m.connect_timeout_s} s"
    return result[0] == "ok", f"{m.host}:{m.port}: {'connected' if result[0] == 'ok' else 'refused: ' + result[0]}"


def cmd_check(args: argparse.Namespace) -> int:
    try:
        configs = _load_all(args)
    except ConfigError as exc:
        print(f"FAIL config: {exc}")
        return EXIT_CONFIG
    codes = []
    for cfg in configs:
        if len(configs) > 1:
            print(f"== instrument {cfg.agent.id}")
        codes.append(_check_one(cfg, args))
    return max(codes)


def _check_one(cfg: Config, args: argparse.Namespace) -> int:
    ok = True

    def line(good: bool, what: str, detail: str) -> None:
        nonlocal ok
        ok = ok and good
        print(f"{'ok  ' if good else 'FAIL'} {what}: {detail}")

    line(True, "config", f"{cfg.path} (agent {cfg.agent.id}, {cfg.agent.unit}/{cfg.agent.instrument})")
    problem = _key_problem(cfg)
    line(problem is None, "key", problem or str(cfg.agent.key_file))
    spool = cfg.spool_path
    line(spool.exists() or spool.parent.exists() or not spool.parent.is_file(), "spool",
         f"{spool} ({'exists' if spool.exists() else 'will be created'})")
    from agent.spool import RunLock

    lock = RunLock(spool)
    try:
        if not lock.acquire():  # its devices are its own (a gateway's bus): asking them now would collide
            print(f"     agent running (pid {lock.holder()}): devices not probed; `jishi-agent status` shows "
                  "what it sees")
        else:
            ok = _probe_detectors(cfg, line) and ok
    finally:
        lock.release()
    if not args.no_broker:
        good, detail = _probe_broker(cfg)
        line(good, "broker", detail)
    return EXIT_OK if ok else EXIT_PROBLEM


def _probe_detectors(cfg: Config, line: Any) -> bool:
    """Poll each detector once and show the undebounced state; False if a detector failed."""
    from agent.detectors import module
    from agent.detectors.base import Observation
    from agent.state import combine, compile_rules

    ok = True
    obs: dict[str, Observation] = {}
    dets: list[Any] = []
    for entry in cfg.detectors:
        det = module(entry.kind).create(entry.name, entry.config)
        dets.append(det)
        try:
            o = det.poll(time.monotonic())
            if entry.kind == "process":  # CPU needs two readings
                time.sleep(0.5)
                o = det.poll(time.monotonic())
        except Exception as exc:
            o = Observation.failed(f"{type(exc).__name__}: {exc}")
        obs[entry.name] = o
        ok = ok and o.error is None
        line(o.error is None, f"detector {entry.name} ({entry.kind})",
             f"{o.verdict} {json.dumps(o.evidence, ensure_ascii=False)}" + (f" error: {o.error}" if o.error else ""))
    for det in dets:
        det.close()
    running, on, _ = compile_rules(cfg.state.running, cfg.state.on, cfg.state.warmup, dets)
    state = combine(obs, running, on)
    print(f"     state now (undebounced): {state}  [running = {running.text}; on = {on.text}]")
    if cfg.identity.os_session:
        from agent.identity.os_session import OsUsers

        print(f"     OS session user: {OsUsers(cfg.identity.os_ignore_users).current() or '-'}")
    return ok


def cmd_status(args: argparse.Namespace) -> int:
    configs = _load_all(args)
    if args.json and len(configs) > 1:
        docs = [_status_doc(cfg) for cfg in configs]
        print(json.dumps(docs, indent=2, ensure_ascii=False))
        return EXIT_OK if all(d is not None for d in docs) else EXIT_PROBLEM
    return max(_status_one(cfg, args) for cfg in configs)


def _status_doc(cfg: Config) -> dict[str, Any] | None:
    """The running agent's snapshot from its local endpoint, else what its spool says; None: no spool yet."""
    from agent.identity.checkin import call

    try:
        st = call(cfg.identity.checkin_port, "/status", timeout=5) if cfg.identity.checkin else None
    except OSError:
        st = None
    if st is not None and st.get("agent") == cfg.agent.id:
        st["running"] = True
    else:
        if not cfg.spool_path.exists():
            print(f"jishi-agent: {cfg.agent.id} not running, and no spool at {cfg.spool_path} yet", file=sys.stderr)
            return None
        from agent.spool import Spool

        sp = Spool(cfg.spool_path, cfg.agent.id, readonly=True)
        s = sp.stats(exact=True)
        last_state = str(sp.meta("last_state", "unknown 0")).split()
        # without the local endpoint we cannot tell whether the agent runs: None, not False
        st = {"agent": cfg.agent.id, "running": False if cfg.identity.checkin else None,
              "boot": s.boot, "next_seq": s.next_seq,
              "spool_first": s.first_seq, "spool_records": s.count, "spool_bytes": s.bytes, "acked": s.acked,
              "state": f"{last_state[0]} (last recorded)", "open_sessions": len(sp.open_sessions())}
        sp.close()
    return st


def _status_one(cfg: Config, args: argparse.Namespace) -> int:
    st = _status_doc(cfg)
    if st is None:
        return EXIT_PROBLEM
    if args.json:
        print(json.dumps(st, indent=2, ensure_ascii=False))
        return EXIT_OK
    pub = st.get("publisher") or {}
    acked = pub.get("acked", st.get("acked"))
    running = {True: "running", False: "not running", None: "unknown: the local status endpoint is disabled"}
    print(f"agent        {st['agent']} ({running[st['running']]})")
    print(f"state        {st.get('state')}")
    if st["running"]:
        print(f"users        os: {st.get('os_user') or '-'}, checked in: {st.get('explicit_user') or '-'}")
        print(f"broker       {'connected' if pub.get('connected') else 'not connected'}"
              f"{' - ' + pub['last_error'] if pub.get('last_error') else ''}")
    size = f", {st['spool_bytes']} bytes" if st.get("spool_bytes", -1) >= 0 else ""
    print(f"spool        {st.get('spool_records')} records{size}, "
          f"seq {st.get('spool_first')}..{int(st.get('next_seq', 1)) - 1}")
    print(f"last ack     {acked}")
    for name, d in (st.get("detectors") or {}).items():
        print(f"detector     {name}: {d['verdict']}{' (' + d['error'] + ')' if d.get('error') else ''}")
    return EXIT_OK


def cmd_calibrate(args: argparse.Namespace) -> int:
    cfg = _load(args)
    meters = [d for d in cfg.detectors if d.kind == "power_meter" and (not args.detector or d.name == args.detector)]
    if not meters:
        print("jishi-agent: no power_meter detector configured" +
              (f" named {args.detector!r}" if args.detector else ""), file=sys.stderr)
        return EXIT_CONFIG
    entry = meters[0]
    store = Path(args.store) if args.store else cfg.agent.data_dir / f"calibration-{entry.name}.json"
    saved: dict[str, list[float]] = json.loads(store.read_text()) if store.exists() else {}
    if not args.propose_only:
        from agent.spool import RunLock

        lock = RunLock(cfg.spool_path)
        if not lock.acquire():
            print(f"jishi-agent: the agent is running (pid {lock.holder()}) and reads this meter: stop it first "
                  "(or use --propose-only)", file=sys.stderr)
            return EXIT_PROBLEM
        try:
            return _calibrate(args, cfg, entry, store, saved)
        finally:
            lock.release()
    return _calibrate(args, cfg, entry, store, saved)


def _calibrate(args: argparse.Namespace, cfg: Config, entry: Any, store: Path, saved: dict[str, list[float]]) -> int:
    from agent import calibrate
    from agent.detectors import module

    readings: list[float] = []
    if not args.propose_only:
        det = module(entry.kind).create(entry.name, entry.config)
        period = args.period or cfg.agent.sample_period_s
        errors = 0
        end = time.monotonic() + args.seconds
        print(f"recording {entry.name} for {args.seconds:g} s every {period:g} s"
              + (f" as {args.label!r}" if args.label else ""), file=sys.stderr)
        while time.monotonic() < end:
            try:
                readings.append(det.read_mw() / 1000)
            except Exception as exc:
                errors += 1
                if errors <= 3:
                    print(f"  reading failed: {exc}", file=sys.stderr)
            time.sleep(period)
        det.close()
        print(f"{len(readings)} readings, {errors} failed", file=sys.stderr)
        if not readings:
            return EXIT_PROBLEM
        if args.label:
            saved[args.label] = saved.get(args.label, []) + readings
            store.parent.mkdir(parents=True, exist_ok=True)
            store.write_text(json.dumps(saved))
            print(f"saved under {args.label!r} in {store}; labels so far: {sorted(saved)}", file=sys.stderr)
    try:
        if args.label or args.propose_only:
            prop = calibrate.propose_labelled(saved)
        else:
            prop = calibrate.propose_unlabelled(readings)
    except ValueError as exc:
        print(f"jishi-agent: cannot propose levels yet: {exc}", file=sys.stderr)
        return EXIT_PROBLEM if args.propose_only else EXIT_OK
    print(prop.toml(entry.name))
    return EXIT_OK


def _checkin_call(args: argparse.Namespace, path: str, body: dict[str, Any]) -> int:
    from agent.identity.checkin import call

    port = args.port
    if port is None:
        port = _load(args).identity.checkin_port
    try:
        result = call(port, path, body)
    except OSError as exc:
        print(f"jishi-agent: the agent does not answer on 127.0.0.1:{port} ({exc}); is it running?",
              file=sys.stderr)
        return EXIT_PROBLEM
    print(result.get("message") or result.get("error") or json.dumps(result))
    return EXIT_OK if result.get("ok") else EXIT_PROBLEM


def cmd_checkin(args: argparse.Namespace) -> int:
    kind = "booking" if args.booking else "card" if args.card else "account"
    return _checkin_call(args, "/checkin", {"user": args.user, "kind": kind})


def cmd_checkout(args: argparse.Namespace) -> int:
    return _checkin_call(args, "/checkout", {})


def parser() -> argparse.ArgumentParser:
    import argparse

    p = argparse.ArgumentParser(prog="jishi-agent", description="Jishi instrument agent")
    p.add_argument("--version", action="version", version=SOFTWARE)
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Any, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument("--config", "-c", help=f"config file (default: $JISHI_AGENT_CONFIG or {default_path()})")
        sp.add_argument("--instrument", "-i", help="in a gateway config: the instrument (agent id or instrument id)")
        sp.set_defaults(fn=fn)
        return sp

    add("run", cmd_run, "run the agent (a gateway config: all its instruments, unless --instrument)")
    sp = add("keygen", cmd_keygen, "create the agent's Ed25519 key pair (refuses to overwrite)")
    sp.add_argument("--out", help="write the key here instead of agent.key_file")
    sp = add("enroll", cmd_enroll, "print (or --url: post) the public key and ids for registration")
    sp.add_argument("--url", help="enrolment endpoint of the server (POST JSON)")
    sp.add_argument("--token", help="bearer token for the enrolment endpoint")
    sp = add("check", cmd_check, "validate the config, probe each detector and the broker")
    sp.add_argument("--no-broker", action="store_true", help="skip the broker probe")
    sp = add("status", cmd_status, "spool depth, last ack, current state and user")
    sp.add_argument("--json", action="store_true")
    sp = add("calibrate", cmd_calibrate, "record power readings and propose off/standby/running levels")
    sp.add_argument("--detector", help="power_meter detector name (default: the first)")
    sp.add_argument("--seconds", type=float, default=300.0, help="how long to record (default 300)")
    sp.add_argument("--period", type=float, help="seconds between readings (default: agent.sample_period_s)")
    sp.add_argument("--label", choices=["off", "standby", "running"],
                    help="the state the instrument is in while recording; labels accumulate")
    sp.add_argument("--propose-only", action="store_true", help="no recording: propose from the saved labels")
    sp.add_argument("--store", help="where labelled readings are kept (default: data_dir/calibration-<name>.json)")
    for name, fn, help in (("checkin", cmd_checkin, "check in at this instrument"),
                           ("checkout", cmd_checkout, "check out from this instrument")):
        sp = add(name, fn, help)
        sp.add_argument("--port", type=int, help="agent's local port (default: from the config)")
        if name == "checkin":
            sp.add_argument("user", help="platform account or booking code")
            g = sp.add_mutually_exclusive_group()
            g.add_argument("--booking", action="store_true", help="the user is a booking code")
            g.add_argument("--card", action="store_true", help="the user is a card number (sent hashed)")
    return p


RUN_OPTIONS = {"--config": "config", "-c": "config", "--instrument": "instrument", "-i": "instrument"}


def run_args(argv: list[str]) -> argparse.Namespace | None:
    """`run` followed only by `--config/-c VALUE` and `--instrument/-i VALUE` (the services' command lines),
    read without argparse: importing it and building every command's parser costs the running agent
    ~0.3 MB it keeps (issue 17). None for anything else (help, other commands, mistakes): argparse reads
    those and words its errors as before. The result equals what the parser returns for the same argv."""
    if not argv or argv[0] != "run" or len(argv) % 2 == 0:
        return None
    found: dict[str, str | None] = {"config": None, "instrument": None}
    for flag, value in zip(argv[1::2], argv[2::2], strict=True):
        key = RUN_OPTIONS.get(flag)
        if key is None or value.startswith("-"):  # argparse reads "-x" as an option
            return None
        found[key] = value  # the last one wins, as with argparse
    return cast("argparse.Namespace", SimpleNamespace(command="run", **found, fn=cmd_run))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = run_args(argv) or parser().parse_args(argv)
    try:
        code: int = args.fn(args)
        return code
    except ConfigError as exc:
        print(f"jishi-agent: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_PROBLEM


if __name__ == "__main__":
    sys.exit(main())
