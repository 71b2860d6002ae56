"""Agent footprint: resident memory, CPU and start-up time of `jishi-agent run` at 1 sample/s.

Runs the real agent process with the process + power meter + data-files detectors against
simulated devices (sim/: a Modbus RTU meter on a pty, a fake control software whose acquisition
child writes data files) and a private Mosquitto, for N seconds, while a schedule switches runs on
and off. Prints peak and final RSS, average CPU % of one core, and the time from spawning the
agent to the first record arriving at a subscriber.

    .venv/bin/python bench/agent_footprint.py 120            # 2 minutes
    .venv/bin/python bench/agent_footprint.py 60 --json

    .venv/bin/python bench/agent_footprint.py 60 --gateway 8   # one gateway process, 8 meters on a bus
    .venv/bin/python bench/agent_footprint.py 60 --maps        # plus resident MB per mapped file
    .venv/bin/python bench/agent_footprint.py 30 --tls         # the broker connection with TLS (deploy's examples)
    .venv/bin/python bench/agent_footprint.py 30 --backlog 8000   # 8,000 records spooled first (2.2 h offline)
    .venv/bin/python bench/agent_footprint.py 30 --compare main --rounds 3   # old vs new, interleaved
    .venv/bin/python bench/agent_footprint.py 10 --compare HEAD --old-launch production --env MALLOC_ARENA_MAX=1
                                                             # one lever: the same tree without / with it

The agent is launched as deploy/agent/jishi-agent.service launches it (`--launch production`, the
default): the unit's PYTHON* and MALLOC_* environment (PYTHONOPTIMIZE, PYTHONPYCACHEPREFIX -- the cache
folder replaced by one under var/ --, MALLOC_MMAP_THRESHOLD_), with `python -m agent.precompile` run first,
as its ExecStartPre does.
`--launch plain` is `python -m agent.cli run` with this shell's environment (the launch before
issue 17's third round). `--compare REF` runs REF's tree (git archive) launched plain and this tree
launched for production, one after the other, `--rounds` times, and prints both with the load average.

Budget (issue 17): RSS <= 30 MB (a gateway watching 8 instruments <= 60 MB), CPU <= 1 % of one core on
average, first record <= 3 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocols.signing import generate, save_private  # noqa: E402
from sim.control_software import ControlSoftware  # noqa: E402
from sim.modbus_meter import ModbusMeter  # noqa: E402
from tests.agent.rs485_bus import Rs485Bus  # noqa: E402

MOSQUITTO = "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_ca() -> Path:
    """A certificate authority and a server certificate for 127.0.0.1 (`--tls`), in a folder Mosquitto can
    read after it drops root; cryptography is a bench dependency only (the agent does not import it)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    d = Path(tempfile.mkdtemp(prefix="jishi-bench-tls-"))
    d.chmod(0o755)
    now = datetime.datetime.now(datetime.UTC)  # certificate validity only, not a product rule
    keys = {n: ec.generate_private_key(ec.SECP256R1()) for n in ("ca", "server")}
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jishi bench CA")])
    for n, subject in (("ca", ca_name), ("server", x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name)
             .public_key(keys[n].public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=n == "ca", path_length=None), critical=True))
        if n == "server":
            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                critical=False)
        (d / f"{n}.crt").write_bytes(b.sign(keys["ca"], hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        (d / f"{n}.key").write_bytes(keys[n].private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    return d


def start_broker(workdir: Path, tls: Path | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """A private Mosquitto; with `tls` (make_ca's folder) its listener speaks TLS only."""
    port = free_port()
    conf = workdir / "mosquitto.conf"
    certs = f"cafile {tls}/ca.crt\ncertfile {tls}/server.crt\nkeyfile {tls}/server.key\n" if tls else ""
    conf.write_text(f"listener {port} 127.0.0.1\n{certs}allow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mosquitto did not start")


def config(workdir: Path, port: int, meter_port: str, data: Path, process_only: bool = False,
           mqtt_extra: str = "") -> Path:
    """The bench config; `process_only`: the process detector alone (no meter, files or check-in page)."""
    save_private(generate(), workdir / "agent.key")
    path = workdir / "agent.toml"
    path.write_text(f"""
[agent]
id = "bench"
unit = "bench-unit"
instrument = "bench-instr"
key_file = "agent.key"
data_dir = "data"
sample_period_s = 1.0
heartbeat_s = 300

[mqtt]
host = "127.0.0.1"
port = {port}
{mqtt_extra}

[state]
running = "power or software or files"
confirm_s = 2
post_run_s = 5

[identity]
os_session = true
checkin = true
checkin_port = {free_port()}

[detectors.software]
kind = "process"
names = ["FakeAcqSoft"]
children = ["acq_worker"]
rescan_s = 5

[detectors.power]
kind = "power_meter"
port = "{meter_port}"
levels = [{{ state = "off", below_w = 5 }}, {{ state = "idle", below_w = 200 }}, {{ state = "running" }}]

[detectors.files]
kind = "data_files"
path = "{data}"
patterns = ["*.dat"]
active_s = 10
settle_s = 5
hash_files = true
""")
    if process_only:
        text = path.read_text()
        text = text[:text.index("[detectors.power]")].replace("power or software or files", "software")
        path.write_text(text.replace("checkin = true", "checkin = false"))
    return path


def by_mapping(pid: int, top: int = 14) -> dict[str, float]:
    """Resident MB per mapped file (anonymous memory and the heap as one entry each), largest first."""
    total: dict[str, int] = {}
    name = ""
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and len(parts) >= 5 and not parts[0].endswith(":"):
                name = Path(parts[5]).name if len(parts) > 5 else "[anon]"
            elif parts[0] == "Rss:":
                total[name] = total.get(name, 0) + int(parts[1])
    ranked = sorted(total.items(), key=lambda kv: -kv[1])
    return {k: round(v / 1024, 1) for k, v in ranked[:top] if v}


def gateway_config(workdir: Path, port: int, bus_port: str, n: int, mqtt_extra: str = "") -> Path:
    """A gateway watching `n` instruments whose SDM120 meters share one RS-485 bus (addresses 1..n)."""
    text = f"""
[gateway]
id = "bench-gw"

[agent]
unit = "bench-unit"
data_dir = "data"
sample_period_s = 1.0
heartbeat_s = 300

[mqtt]
host = "127.0.0.1"
port = {port}
{mqtt_extra}

[state]
confirm_s = 2
post_run_s = 5
"""
    for addr in range(1, n + 1):
        text += f"""
[[instrument]]
id = "bench-gw-{addr}"
instrument = "bench-instr-{addr}"
[instrument.state]
running = "power"
[instrument.detectors.power]
kind = "power_meter"
port = "{bus_port}"
slave = {addr}
levels = [{{ state = "off", below_w = 5 }}, {{ state = "idle", below_w = 200 }}, {{ state = "running" }}]
"""
    path = workdir / "gateway.toml"
    path.write_text(text)
    return path


def production_env(tree: Path, gateway: bool) -> dict[str, str]:
    """The PYTHON* and MALLOC_* variables of `tree`'s systemd unit, the byte-code cache moved under var/
    (kept between runs)."""
    unit = tree / "deploy" / "agent" / ("jishi-agent-gateway.service" if gateway else "jishi-agent.service")
    env: dict[str, str] = {}
    for line in unit.read_text().splitlines():
        if line.startswith("Environment="):
            for kv in line.removeprefix("Environment=").split():
                k, _, v = kv.partition("=")
                if k.startswith(("PYTHON", "MALLOC_")):
                    env[k] = v
    if "PYTHONPYCACHEPREFIX" in env:
        env["PYTHONPYCACHEPREFIX"] = str(ROOT / "var" / "bench-pycache")
    return env


def memory(pid: int) -> dict[str, float]:
    """Proportional, unique, anonymous and file-backed resident MB (/proc/PID/smaps_rollup)."""
    kb: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                kb[parts[0].rstrip(":")] = int(parts[1])
    uss = kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)
    return {"pss_final_mb": round(kb["Pss"] / 1024, 1), "uss_final_mb": round(uss / 1024, 1),
            "anon_final_mb": round(kb.get("Anonymous", 0) / 1024, 1),
            "file_final_mb": round((kb["Rss"] - kb.get("Anonymous", 0)) / 1024, 1)}


def measure(args: argparse.Namespace, tree: Path, launch: str) -> dict[str, Any]:
    """One run of the agent from `tree` (a checkout of this repository), launched `plain` or `production`."""
    work = Path(tempfile.mkdtemp(prefix="jishi-bench-"))
    data = work / "acq"
    data.mkdir()
    tls = make_ca() if args.tls else None
    broker, port = start_broker(work, tls)
    mqtt_extra = f'tls = true\nca_file = "{tls}/ca.crt"' if tls else ""
    meter = ModbusMeter(watts=40.0)
    bus = Rs485Bus(list(range(1, args.gateway + 1)), watts=40.0) if args.gateway else None
    software = ControlSoftware(data, duty=0.05)
    software.start()
    first_record: list[float] = []
    first_t: list[int] = []
    received = [0]
    drained: list[float] = []
    drained_cpu: list[float] = []
    watched: list[psutil.Process] = []  # the agent, once spawned

    def on_message(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/rec"):
            recs = json.loads(msg.payload)["records"]
            received[0] += len(recs)
            if args.backlog and received[0] >= args.backlog and not drained:
                drained.append(time.monotonic())
                if watched:  # the agent's CPU seconds from its spawn to here (start-up + the backlog)
                    with contextlib.suppress(psutil.Error):
                        cpu = watched[0].cpu_times()
                        drained_cpu.append(cpu.user + cpu.system)
            if not first_record:
                first_record.append(time.monotonic())
                first_t.append(recs[0]["t"])

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sub")
    sub.on_message = on_message
    if tls:
        sub.tls_set(ca_certs=str(tls / "ca.crt"))
    sub.connect("127.0.0.1", port)
    sub.subscribe("jishi/v1/bench-unit/#", qos=1)
    sub.loop_start()
    time.sleep(0.3)

    if bus:
        cfg = gateway_config(work, port, bus.port, args.gateway, mqtt_extra)
    else:
        cfg = config(work, port, meter.port, data, args.process_only, mqtt_extra)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    if launch == "production":
        env.update(production_env(tree, bool(args.gateway)))
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # production writes its byte-code cache
    if tree == ROOT or not args.compare:  # --env/--pyarg: only the new run of a comparison
        for kv in args.env:
            k, _, v = kv.partition("=")
            if v:
                env[k] = v
            else:
                env.pop(k, None)
    pyargs = args.pyarg if tree == ROOT or not args.compare else []
    if launch == "production":
        subprocess.run([sys.executable, *pyargs, "-m", "agent.precompile"], cwd=tree, env=env, check=True,
                       capture_output=True)  # the unit's ExecStartPre
    if bus:  # a key per instrument
        subprocess.run([sys.executable, "-m", "agent.cli", "keygen", "--config", str(cfg)], cwd=tree, check=True,
                       env=env, capture_output=True)
    if args.backlog:
        fill_backlog(tree, cfg, env, args.backlog)
    spawned = time.monotonic()
    spawned_wall = time.time_ns() // 1_000_000
    launcher = [str(args.wrap)] if args.wrap else ["-m", "agent.cli"]
    log_path = Path(os.environ.get("BENCH_AGENT_LOG", work / "agent.log"))
    agent = subprocess.Popen([sys.executable, *pyargs, *launcher, "run", "--config", str(cfg)], cwd=tree,
                             env=env, stdout=subprocess.DEVNULL, stderr=open(log_path, "wb"))
    proc = psutil.Process(agent.pid)
    watched.append(proc)
    rss: list[int] = []
    stop = threading.Event()

    def toggler() -> None:
        on = False
        while not stop.wait(args.run_every):
            on = not on
            meter.watts = 850.0 if on else 40.0
            if bus is not None:
                for addr in list(bus.watts):
                    bus.set(addr, 850.0 if on else 40.0)
            (software.begin_run if on else software.end_run)()

    threading.Thread(target=toggler, daemon=True).start()
    try:
        time.sleep(2.0)  # start-up is not steady state: CPU is measured from here on
        cpu0 = proc.cpu_times()
        wall0 = time.monotonic()
        while time.monotonic() - wall0 < args.seconds:
            if agent.poll() is not None:
                raise RuntimeError(f"the agent exited ({agent.returncode}):\n"
                                   + log_path.read_text(errors="replace")[-3000:])
            rss.append(proc.memory_info().rss)
            time.sleep(1.0)
        cpu1 = proc.cpu_times()
        wall = time.monotonic() - wall0
        cpu_pct = ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / wall * 100
        mem = memory(agent.pid)
        maps = by_mapping(agent.pid) if args.maps else {}
    finally:
        stop.set()
        agent.terminate()
        agent.wait(20)
        software.stop()
        meter.close()
        if bus:
            bus.close()
        sub.loop_stop()
        broker.terminate()
        broker.wait(10)
    first_s = round(first_record[0] - spawned, 2) if first_record else None
    result: dict[str, Any] = {
        "seconds": round(wall, 1),
        "rss_peak_mb": round(max(rss) / 2**20, 1),
        "rss_final_mb": round(rss[-1] / 2**20, 1),
        **mem,
        "cpu_percent_of_one_core": round(cpu_pct, 2),
        "first_record_s": first_s,
        "first_record_made_s": round((first_t[0] - spawned_wall) / 1000, 2) if first_t else None,
        "records_received": received[0],
        **({"backlog_drained_s": round(drained[0] - spawned, 2) if drained else None,
            "backlog_cpu_s": round(drained_cpu[0], 2) if drained_cpu else None} if args.backlog else {}),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    if maps:
        result["rss_by_mapping_mb"] = maps
    shutil.rmtree(work, ignore_errors=True)
    if tls:
        shutil.rmtree(tls, ignore_errors=True)
    return result


BACKLOG = """
import sys
from pathlib import Path
from agent.clock import Clock
from agent.config import load_any
from agent.recorder import Recorder
from agent.spool import Spool
cfg = load_any(Path(sys.argv[1]))
spool = Spool(cfg.spool_path, cfg.agent.id)
boot = spool.start_boot()
rec = Recorder(spool, cfg.agent.id, boot, Clock(jump_ms=60_000))
ev = {"software": {"procs": 1, "cpu": 120, "io": 4, "children": 1}, "power": {"w": 8500, "state": "running"},
      "files": {"new": 0, "active": False}}
with spool.tx():  # one transaction: the rows as the agent would have appended them, without 1 fsync each
    for _ in range(int(sys.argv[2])):
        spool._append(lambda seq, prev: {**rec._base("heartbeat", seq, prev, None), "state": "running",
                                         "period_ms": 1000, "evidence": ev})
spool.close()
"""


def fill_backlog(tree: Path, cfg: Path, env: dict[str, str], n: int) -> None:
    """`n` heartbeat records in the agent's spool before it starts, as after a broker outage of n
    seconds at 1 record/s: the agent publishes them on start, its spool connections' page caches fill."""
    subprocess.run([sys.executable, "-c", BACKLOG, str(cfg), str(n)], cwd=cfg.parent, env=env, check=True,
                   capture_output=True)


def checkout(ref: str) -> Path:
    """REF's tree (git archive) in a temporary folder, for the side-by-side run."""
    out = Path(tempfile.mkdtemp(prefix="jishi-bench-ref-"))
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("seconds", type=float, nargs="?", default=60.0)
    ap.add_argument("--run-every", type=float, default=20.0, help="switch runs on/off this often (s)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--gateway", type=int, metavar="N",
                    help="instead: one gateway process watching N instruments (power meters on one RS-485 bus)")
    ap.add_argument("--process-only", action="store_true",
                    help="the process detector alone: no power meter, data files or check-in page")
    ap.add_argument("--tls", action="store_true",
                    help="the broker speaks TLS only; the agent has tls = true (as deploy/agent's examples)")
    ap.add_argument("--backlog", type=int, default=0, metavar="N",
                    help="N records in the spool before the start (a broker outage of N s at 1 record/s), "
                         "which the agent publishes: its SQLite page caches fill")
    ap.add_argument("--maps", action="store_true", help="also print the agent's resident memory by mapping (Linux)")
    ap.add_argument("--wrap", type=Path, help="run the agent as `python WRAP run ...` (e.g. an import tracer)")
    ap.add_argument("--launch", choices=("production", "plain"), default="production",
                    help="as deploy/agent/*.service launches it (default), or plain `python -m agent.cli run`")
    ap.add_argument("--compare", metavar="REF", help="also run REF's tree (launched plain), interleaved")
    ap.add_argument("--old-launch", choices=("production", "plain"), default="plain",
                    help="with --compare: how REF's tree is launched (production: one lever at a time, e.g. "
                         "`--compare HEAD --old-launch production --env MALLOC_ARENA_MAX=1`)")
    ap.add_argument("--rounds", type=int, default=1, help="with --compare: old/new pairs to run")
    ap.add_argument("--pyarg", action="append", default=[], help="an interpreter option for the agent (repeatable)")
    ap.add_argument("--env", action="append", default=[], help="K=V for the agent's environment; K= removes K")
    args = ap.parse_args()
    machine = f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    budget = 60 if args.gateway else 30  # issue 17

    if not args.compare:
        result = {**measure(args, ROOT, args.launch), "machine": machine}
        if args.json:
            print(json.dumps(result))
            return 0
        for k, v in result.items():
            print(f"{k:26} {v}")
        first_s = result["first_record_s"]
        ok = (result["rss_peak_mb"] <= budget and result["cpu_percent_of_one_core"] <= 1.0
              and first_s is not None and first_s <= 3)
        print(f"{'within' if ok else 'OUTSIDE'} budget (RSS <= {budget} MB, CPU <= 1 %, first record <= 3 s)")
        return 0

    old_tree = checkout(args.compare)
    runs: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
    try:
        for i in range(args.rounds):
            for name, tree, launch in (("old", old_tree, args.old_launch), ("new", ROOT, "production")):
                r = measure(args, tree, launch)
                runs[name].append(r)
                print(json.dumps({"round": i + 1, "run": name, **r}), flush=True)
    finally:
        shutil.rmtree(old_tree, ignore_errors=True)
    keys = ("rss_peak_mb", "pss_final_mb", "uss_final_mb", "anon_final_mb", "file_final_mb",
            "cpu_percent_of_one_core", "first_record_s",
            *(("backlog_drained_s", "backlog_cpu_s") if args.backlog else ()),
            "load_average_1min")
    kind = f"gateway {args.gateway}" if args.gateway else "agent, process only" if args.process_only else "agent"
    kind += ", TLS" if args.tls else ""
    kind += f", backlog {args.backlog}" if args.backlog else ""
    label = f"{kind}, {args.seconds:g} s x {args.rounds}"
    print(f"\n{label}: median of the rounds     old ({args.compare}, {args.old_launch})   new (this tree, production"
          f"{''.join(' ' + a for a in args.pyarg + args.env)})")
    for k in keys:
        o = [r[k] for r in runs["old"] if r[k] is not None]
        n = [r[k] for r in runs["new"] if r[k] is not None]
        mo = round(statistics.median(o), 2) if o else "-"
        mn = round(statistics.median(n), 2) if n else "-"
        print(f"  {k:28} {mo:>16}   {mn:>16}")
    print(f"  budget: RSS <= {budget} MB; {machine}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
