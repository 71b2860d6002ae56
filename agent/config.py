"""The agent's one configuration model: a TOML file validated into frozen dataclasses.

Not pydantic-settings: pydantic costs ~10 MB of resident memory and the agent's whole budget is
40 MB (see agent/README.md). This module is a small typed builder instead: every mistake is a
`ConfigError` naming the file, the section and the key. Environment variables
`JISHI_AGENT_<SECTION>__<KEY>` (e.g. `JISHI_AGENT_MQTT__HOST`) override the file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
RESERVED_NAMES = {"state", "agent", "identity"}
ENV_PREFIX = "JISHI_AGENT_"


class ConfigError(ValueError):
    """A configuration mistake, with the file and the dotted key it concerns."""

    def __init__(self, file: Path | str, key: str, problem: str) -> None:
        self.file = str(file)
        self.key = key
        self.problem = problem
        where = f" [{key}]" if key else ""
        super().__init__(f"config error in {file}{where}: {problem}")


class Invalid(ValueError):
    """Raised by a section's `__post_init__`: `key` is relative to the section."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")


def require(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise Invalid(key, problem)


def positive(value: float, key: str) -> None:
    require(value > 0, key, f"must be > 0, got {value}")


# ---- sections --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentSection:
    """Who this agent is and how often it looks."""

    id: str
    unit: str
    instrument: str
    key_file: Path
    data_dir: Path
    sample_period_s: float = 1.0
    heartbeat_s: float = 300.0
    clock_jump_ms: int = 2000
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_file: Path | None = None

    def __post_init__(self) -> None:
        for key in ("id", "unit", "instrument"):
            value = getattr(self, key)
            require(bool(ID_RE.match(value)), key, f"{value!r} must match [A-Za-z0-9_-]{{1,64}}")
        positive(self.sample_period_s, "sample_period_s")
        positive(self.heartbeat_s, "heartbeat_s")
        require(self.heartbeat_s >= self.sample_period_s, "heartbeat_s", "must be >= sample_period_s")
        positive(self.clock_jump_ms, "clock_jump_ms")


@dataclass(frozen=True)
class MqttSection:
    """Broker connection. TLS with a CA file; identity by username/password or client certificate."""

    host: str = ""
    port: int = 1883
    more_brokers: tuple[str, ...] = ()
    """other nodes of a broker cluster ("host:port"): after a failed or lost connection the agent
    tries the next address, in turn from `host`:`port`"""
    client_id: str = ""
    keepalive_s: int = 60
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str = ""
    password: str = ""
    password_file: Path | None = None
    backoff_min_s: float = 1.0
    backoff_max_s: float = 120.0
    connect_timeout_s: float = 10.0
    max_inflight: int = 8
    batch_records: int = 500
    batch_bytes: int = 200 * 1024
    resend_after_s: float = 600.0
    stop_flush_s: float = 5.0

    def brokers(self) -> list[tuple[str, int]]:
        """Every broker address, `host`:`port` first."""
        return [(self.host, self.port), *((b.rpartition(":")[0], int(b.rpartition(":")[2])) for b in self.more_brokers)]

    def __post_init__(self) -> None:
        require(bool(self.host.strip()), "host",
                "the broker's host name is required (there is no default: an agent that silently talked "
                "to localhost looked healthy while sending nothing anywhere)")
        require(1 <= self.port <= 65535, "port", f"must be 1..65535, got {self.port}")
        for b in self.more_brokers:
            h, _, p = b.rpartition(":")
            require(bool(h) and p.isdigit() and 1 <= int(p) <= 65535, "more_brokers", f"{b!r} is not host:port")
        require(self.keepalive_s >= 5, "keepalive_s", "must be >= 5")
        positive(self.backoff_min_s, "backoff_min_s")
        require(self.backoff_max_s >= self.backoff_min_s, "backoff_max_s", "must be >= backoff_min_s")
        require(1 <= self.max_inflight <= 100, "max_inflight", "must be 1..100")
        require(1 <= self.batch_records <= 2000, "batch_records", "must be 1..2000 (protocol limit)")
        require(1024 <= self.batch_bytes <= 240 * 1024, "batch_bytes", "must be 1024..245760 (envelope limit)")
        require((self.cert_file is None) == (self.key_file is None), "cert_file",
                "cert_file and key_file go together (client certificate)")
        require(not (self.cert_file and not self.tls), "tls", "a client certificate needs tls = true")
        require(not (self.password and self.password_file), "password", "give password or password_file, not both")
        require(self.resend_after_s >= 0, "resend_after_s", "must be >= 0 (0 disables)")

    def read_password(self) -> str:
        if self.password_file is not None:
            return self.password_file.read_text(encoding="utf-8").strip()
        return self.password


@dataclass(frozen=True)
class SpoolSection:
    """Durable queue limits. Only `sample` (then `heartbeat`) records are ever dropped."""

    path: Path | None = None
    max_mb: float = 200.0
    max_age_days: float = 400.0
    check_s: float = 60.0

    def __post_init__(self) -> None:
        positive(self.max_mb, "max_mb")
        positive(self.max_age_days, "max_age_days")
        positive(self.check_s, "check_s")


@dataclass(frozen=True)
class StateSection:
    """How detector verdicts become the instrument's state (see agent/state.py)."""

    running: str
    on: str = ""
    warmup: str = ""
    warmup_max_s: float = 1800.0
    confirm_s: float = 10.0
    post_run_s: float = 60.0
    post_credit_s: float = 0.0

    def __post_init__(self) -> None:
        require(0 < len(self.running) <= 256, "running", "a rule of 1..256 characters is required")
        require(len(self.on) <= 256 and len(self.warmup) <= 256, "on", "rules are at most 256 characters")
        require(self.confirm_s >= 0, "confirm_s", "must be >= 0")
        require(self.post_run_s >= 0, "post_run_s", "must be >= 0")
        require(0 <= self.post_credit_s <= self.post_run_s, "post_credit_s", "must be 0..post_run_s")
        require(self.warmup_max_s >= 0, "warmup_max_s", "must be >= 0")


@dataclass(frozen=True)
class IdentitySection:
    """Who is at the instrument: OS session, check-in page/CLI, card reader."""

    os_session: bool = True
    os_poll_s: float = 10.0
    os_ignore_users: tuple[str, ...] = ()
    os_include_remote: bool = False
    checkin: bool = True
    checkin_port: int = 8787
    idle_timeout_s: float = 3600.0
    card_port: str = ""
    card_baudrate: int = 9600
    card_key: str = ""
    card_key_file: Path | None = None
    card_pattern: str = r"^[0-9A-Za-z]{4,32}$"
    server_key: str = ""
    """the server's command key (public, base64url): check-in by phone (SPEC §9.5); empty: refused"""

    def __post_init__(self) -> None:
        positive(self.os_poll_s, "os_poll_s")
        if self.server_key:
            require(bool(re.fullmatch(r"[A-Za-z0-9_-]{43}", self.server_key)), "server_key",
                    "must be the server's 32-byte public key in unpadded base64url (43 characters)")
        require(1024 <= self.checkin_port <= 65535, "checkin_port", "must be 1024..65535")
        positive(self.idle_timeout_s, "idle_timeout_s")
        if self.card_port:
            require(bool(self.card_key or self.card_key_file), "card_key",
                    "a card reader needs card_key or card_key_file (cards are sent as a keyed hash)")
        try:
            re.compile(self.card_pattern)
        except re.error as exc:
            raise Invalid("card_pattern", f"not a regular expression: {exc}") from None

    def read_card_key(self) -> bytes:
        if self.card_key_file is not None:
            return self.card_key_file.read_bytes().strip()
        return self.card_key.encode("utf-8")


@dataclass(frozen=True)
class SamplesSection:
    """Optional raw samples (off by default: the server stores 25 MB per instrument-year)."""

    enabled: bool = False
    signals: tuple[str, ...] = ()
    record_s: float = 60.0

    def __post_init__(self) -> None:
        positive(self.record_s, "record_s")
        for s in self.signals:
            require(bool(re.match(r"^[a-z][a-z0-9_]{0,31}\.[a-z][a-z0-9_]{0,31}$", s)), "signals",
                    f"{s!r} must be <detector>.<evidence key>, e.g. power.mw")


@dataclass(frozen=True)
class DetectorEntry:
    name: str
    kind: str
    config: Any


@dataclass(frozen=True)
class Config:
    path: Path
    agent: AgentSection
    mqtt: MqttSection
    spool: SpoolSection
    state: StateSection
    identity: IdentitySection
    samples: SamplesSection
    detectors: tuple[DetectorEntry, ...] = field(default_factory=tuple)
    digest: str = ""

    @property
    def spool_path(self) -> Path:
        return self.spool.path or self.agent.data_dir / "spool.db"

    def detector(self, name: str) -> DetectorEntry:
        for d in self.detectors:
            if d.name == name:
                return d
        raise KeyError(name)


SECTIONS: dict[str, type] = {
    "agent": AgentSection,
    "mqtt": MqttSection,
    "spool": SpoolSection,
    "state": StateSection,
    "identity": IdentitySection,
    "samples": SamplesSection,
}


# ---- loading ---------------------------------------------------------------------------------


def default_path() -> Path:
    """JISHI_AGENT_CONFIG, else the platform's usual place for a service's config."""
    env = os.environ.get("JISHI_AGENT_CONFIG")
    if env:
        return Path(env)
    if sys.platform == "win32":
        return Path(os.environ.get("PROGRAMDATA", r"C:\ProgramData")) / "Jishi" / "agent.toml"
    return Path("/etc/jishi/agent.toml")


def _read(path: Path, environ: Mapping[str, str] | None) -> tuple[dict[str, Any], bytes]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read the file: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(path, "", "the file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None
    _apply_env(data, os.environ if environ is None else environ, path)
    return data, raw


def _digest(data: bytes) -> str:
    """The config's digest (16 hex digits of SHA-256). hashlib is imported here, on use: `jishi-agent
    run` first decides which implementation this process loads (agent/lean.py)."""
    import hashlib

    return hashlib.sha256(data).hexdigest()[:16]


def load(path: Path | str, environ: Mapping[str, str] | None = None) -> Config:
    """Read a single-instrument config, override from the environment, and validate; raises ConfigError."""
    path = Path(path)
    data, raw = _read(path, environ)
    if "instrument" in data:
        raise ConfigError(path, "instrument", "this is a gateway config (it has [[instrument]] tables): "
                          "choose one instrument with --instrument <id>")
    return parse(data, path, digest=_digest(raw))


def load_any(path: Path | str, environ: Mapping[str, str] | None = None) -> Config | GatewayConfig:
    """A single-instrument config as before, or a gateway config if the file has [[instrument]] tables."""
    path = Path(path)
    data, raw = _read(path, environ)
    if "instrument" not in data:
        return parse(data, path, digest=_digest(raw))
    return parse_gateway(data, path)


def parse(data: dict[str, Any], path: Path, digest: str = "") -> Config:
    unknown = set(data) - set(SECTIONS) - {"detectors"}
    for key in sorted(unknown):
        raise ConfigError(path, key, f"unknown section{_suggest(key, [*SECTIONS, 'detectors'])}")
    base = path.parent
    for required in ("agent", "state"):
        if required not in data:
            raise ConfigError(path, required, f"the [{required}] section is required")
    built: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(path, name, "must be a table")
        built[name] = build(cls, table, name, path, base)
    detectors = _detectors(data.get("detectors", {}), path, base)
    cfg = Config(path=path, detectors=detectors, digest=digest, **built)
    _check_rules(cfg)
    _check_samples(cfg)
    return cfg


def _detectors(table: Any, path: Path, base: Path) -> tuple[DetectorEntry, ...]:
    from agent.detectors import KINDS, module

    if not isinstance(table, dict):
        raise ConfigError(path, "detectors", "must be a table of [detectors.<name>] sections")
    if not table:
        raise ConfigError(path, "detectors", "configure at least one [detectors.<name>] section")
    out: list[DetectorEntry] = []
    for name, section in table.items():
        where = f"detectors.{name}"
        if not isinstance(section, dict):
            raise ConfigError(path, where, "must be a table")
        if not NAME_RE.match(name) or name in RESERVED_NAMES:
            raise ConfigError(path, where, "detector names are lower-case [a-z][a-z0-9_]{0,31} and not "
                              f"one of {sorted(RESERVED_NAMES)}")
        section = dict(section)
        kind = section.pop("kind", name)
        if kind not in KINDS:
            raise ConfigError(path, f"{where}.kind",
                              f"unknown detector kind {kind!r}{_suggest(str(kind), list(KINDS))}; "
                              f"known: {sorted(KINDS)} (the kind defaults to the section name)")
        enabled = section.pop("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(path, f"{where}.enabled", "must be true or false")
        cfg = build(module(kind).Config, section, where, path, base)
        if enabled:
            out.append(DetectorEntry(name=name, kind=kind, config=cfg))
    if len(out) > 15:
        raise ConfigError(path, "detectors", "at most 15 detectors (records carry evidence of 16 sources)")
    if not out:
        raise ConfigError(path, "detectors", "every detector is disabled")
    return tuple(out)


def _check_rules(cfg: Config) -> None:
    from agent.state import RuleError, parse_rule

    names = {d.name for d in cfg.detectors}
    for key in ("running", "on", "warmup"):
        text = getattr(cfg.state, key)
        if not text:
            continue
        try:
            parse_rule(text, names)
        except RuleError as exc:
            raise ConfigError(cfg.path, f"state.{key}", str(exc)) from None


def _check_samples(cfg: Config) -> None:
    names = {d.name for d in cfg.detectors}
    for s in cfg.samples.signals:
        det = s.split(".")[0]
        if det not in names:
            raise ConfigError(cfg.path, "samples.signals", f"{s!r} names no configured detector ({sorted(names)})")


# ---- the typed builder -----------------------------------------------------------------------


def build(cls: type[Any], table: Mapping[str, Any], where: str, file: Path, base: Path) -> Any:
    """Build dataclass `cls` from a TOML table; every problem names `where.key` and the file."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key in table:
        if key not in fields:
            raise ConfigError(file, f"{where}.{key}", f"unknown key{_suggest(key, list(fields))}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{where}.{name}"
        if name not in table:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(file, key, "is required")
            continue
        kwargs[name] = _convert(hints[name], table[name], key, file, base)
    try:
        return cls(**kwargs)
    except Invalid as exc:
        raise ConfigError(file, f"{where}.{exc.key}", exc.problem) from None
    except ValueError as exc:
        raise ConfigError(file, where, str(exc)) from None


def _convert(tp: Any, value: Any, key: str, file: Path, base: Path) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, key, file, base)
            except ConfigError as exc:
                errors.append(exc.problem)
        raise ConfigError(file, key, " or ".join(errors))
    if origin is Literal:
        if value not in args:
            raise ConfigError(file, key, f"must be one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(file, key, f"expected a list, got {_show(value)}")
        return tuple(_convert(args[0], v, f"{key}[{i}]", file, base) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(file, key, f"expected a table, got {_show(value)}")
        return {str(k): _convert(args[1], v, f"{key}.{k}", file, base) for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise ConfigError(file, key, f"expected a table, got {_show(value)}")
        return build(tp, value, key, file, base)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(file, key, f"expected true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(file, key, f"expected an integer, got {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(file, key, f"expected a number, got {_show(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(file, key, f"expected a string, got {_show(value)}")
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(file, key, f"expected a path string, got {_show(value)}")
        p = Path(os.path.expandvars(os.path.expanduser(value)))
        return p if p.is_absolute() else base / p
    raise ConfigError(file, key, f"unsupported type {tp!r} (a bug in the config model)")


def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}"


def _suggest(key: str, options: list[str]) -> str:
    import difflib  # only when reporting a mistake

    close = difflib.get_close_matches(key, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _apply_env(data: dict[str, Any], environ: Mapping[str, str], file: Path) -> None:
    """Merge JISHI_AGENT_<SECTION>__<KEY>[__<KEY>] variables into the parsed TOML."""
    for var, text in environ.items():
        if not var.startswith(ENV_PREFIX) or "__" not in var or var == "JISHI_AGENT_CONFIG":
            continue
        parts = [p.lower() for p in var[len(ENV_PREFIX):].split("__")]
        if len(parts) < 2 or not all(parts):
            continue
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        node = data
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(file, ".".join(parts), f"environment variable {var} overrides a non-table")
            node = nxt
        node[parts[-1]] = value


# ---- gateway mode ----------------------------------------------------------------------------
#
# One process on a small Linux box watches several instruments (meters on one RS-485 bus by
# address, network meters by host); nothing is installed on the instruments' own PCs. Each
# `[[instrument]]` is a complete agent of its own: its own key, spool, chain and MQTT identity. The
# top-level sections are defaults that every instrument inherits and may override.

GATEWAY_SHARED = ("mqtt", "spool", "state", "identity", "samples")
AGENT_DEFAULTS_REFUSED = {"id": "each [[instrument]] has its own id", "instrument": "each [[instrument]] names its own",
                          "key_file": "each [[instrument]] has its own key (default: <data_dir>/agent.key)",
                          "log_level": "the gateway's log is configured in [gateway]",
                          "log_file": "the gateway's log is configured in [gateway]"}
BUS_SETTINGS = ("baudrate", "parity", "bytesize", "stopbits")


@dataclass(frozen=True)
class GatewaySection:
    """The gateway process itself: its name in the log and where the log goes."""

    id: str = "gateway"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_file: Path | None = None

    def __post_init__(self) -> None:
        require(bool(ID_RE.match(self.id)), "id", f"{self.id!r} must match [A-Za-z0-9_-]{{1,64}}")


@dataclass(frozen=True)
class GatewayConfig:
    path: Path
    gateway: GatewaySection
    instruments: tuple[Config, ...]

    def select(self, name: str) -> Config:
        """The instrument whose agent id or instrument id is `name`."""
        for cfg in self.instruments:
            if name in (cfg.agent.id, cfg.agent.instrument):
                return cfg
        raise ConfigError(self.path, "instrument", f"no instrument {name!r} in this gateway "
                          f"(agent ids: {[c.agent.id for c in self.instruments]})")


def parse_gateway(data: dict[str, Any], path: Path) -> GatewayConfig:
    allowed = {"gateway", "agent", "instrument", *GATEWAY_SHARED}
    for key in sorted(set(data) - allowed):
        why = (": in a gateway config each [[instrument]] has its own [instrument.detectors.<name>]"
               if key == "detectors" else _suggest(key, sorted(allowed)))
        raise ConfigError(path, key, f"unknown section in a gateway config{why}")
    for name in ("gateway", "agent", *GATEWAY_SHARED):
        if not isinstance(data.get(name, {}), dict):
            raise ConfigError(path, name, "must be a table")
    gateway = build(GatewaySection, data.get("gateway", {}), "gateway", path, path.parent)
    instruments = data["instrument"]
    if not isinstance(instruments, list) or not instruments or not all(isinstance(i, dict) for i in instruments):
        raise ConfigError(path, "instrument", "write each instrument as an [[instrument]] table")
    defaults = dict(data.get("agent", {}))
    for key in sorted(set(defaults) & set(AGENT_DEFAULTS_REFUSED)):
        raise ConfigError(path, f"agent.{key}", f"not a gateway-wide default: {AGENT_DEFAULTS_REFUSED[key]}")
    shared = _shared_ports(instruments)
    configs = [_instrument(i, table, defaults, data, path, shared) for i, table in enumerate(instruments)]
    _check_gateway(configs, path)
    return GatewayConfig(path=path, gateway=gateway, instruments=tuple(configs))


def _shared_ports(instruments: list[dict[str, Any]]) -> set[str]:
    """Ports named by more than one detector of the gateway: a bus (meters by address)."""
    seen: dict[str, int] = {}
    for table in instruments:
        dets = table.get("detectors", {})
        for det in dets.values() if isinstance(dets, dict) else ():
            port = det.get("port") if isinstance(det, dict) else None
            if isinstance(port, str) and port:
                seen[port] = seen.get(port, 0) + 1
    return {p for p, n in seen.items() if n > 1}


def _bus_tables(dets: dict[str, Any], shared: set[str], where: str, path: Path) -> dict[str, Any]:
    """Detectors on a shared bus do not lock the port each for itself: one process owns the bus, and
    a per-detector exclusive lock would shut out every meter but the first. Detector kinds that
    offer `exclusive` get it false there by default; true is refused."""
    from agent.detectors import KINDS, module

    out: dict[str, Any] = {}
    for name, det in dets.items():
        if isinstance(det, dict) and det.get("port") in shared:
            kind = det.get("kind", name)
            fields = ({f.name for f in dataclasses.fields(module(kind).Config)}
                      if isinstance(kind, str) and kind in KINDS else set())
            if "exclusive" in fields:
                if det.get("exclusive") is True:
                    raise ConfigError(path, f"{where}.detectors.{name}.exclusive",
                                      f"{det['port']} is a bus shared with other instruments: it cannot be locked "
                                      "by each detector (leave exclusive out or false)")
                det = {**det, "exclusive": False}
        out[name] = det
    return out


def _instrument(i: int, table: dict[str, Any], defaults: dict[str, Any], top: dict[str, Any],
                path: Path, shared: set[str]) -> Config:
    """One [[instrument]] merged over the top-level defaults and validated as a complete agent config."""
    where = f"instrument[{i}]"
    agent_keys = {f.name for f in dataclasses.fields(AgentSection)}
    sections = {*GATEWAY_SHARED, "detectors"}
    for key in table:
        if key == "agent":
            raise ConfigError(path, f"{where}.agent", "write the agent keys (id, instrument, key_file, ...) "
                              "directly in the [[instrument]] table, not in [instrument.agent]")
        if key not in agent_keys and key not in sections:
            raise ConfigError(path, f"{where}.{key}", f"unknown key{_suggest(key, sorted(agent_keys | sections))}")
        if key in {"log_level", "log_file"}:
            raise ConfigError(path, f"{where}.{key}", AGENT_DEFAULTS_REFUSED[key])
        if key in sections and not isinstance(table[key], dict):
            raise ConfigError(path, f"{where}.{key}", "must be a table")
    agent = {**{k: v for k, v in defaults.items() if k != "data_dir"},
             **{k: v for k, v in table.items() if k in agent_keys}}
    ident = agent.get("id")
    if "data_dir" not in agent and isinstance(defaults.get("data_dir"), str) and isinstance(ident, str):
        agent["data_dir"] = f"{defaults['data_dir']}/{ident}"  # one spool directory per instrument
    if "key_file" not in agent and isinstance(agent.get("data_dir"), str):
        agent["key_file"] = f"{agent['data_dir']}/agent.key"
    merged: dict[str, Any] = {"agent": agent}
    for name in GATEWAY_SHARED:
        section = {**top.get(name, {}), **table.get(name, {})}
        if name == "identity":  # the gateway's login user is nobody at the instrument
            section.setdefault("os_session", False)
            section.setdefault("checkin", False)
        if section or name == "mqtt":
            merged[name] = section
    if "state" not in table or "running" not in table["state"]:
        raise ConfigError(path, f"{where}.state.running", "each instrument needs its own running rule "
                          "([instrument.state] running = ...)")
    dets = table.get("detectors", {})
    merged["detectors"] = _bus_tables(dets, shared, where, path) if isinstance(dets, dict) else dets
    digest = _digest(json.dumps(merged, sort_keys=True, default=str).encode())
    try:
        return parse(merged, path, digest=digest)
    except ConfigError as exc:
        key = exc.key[len("agent."):] if exc.key.startswith("agent.") else exc.key
        raise ConfigError(path, f"{where}.{key}" if key else where,
                          f"{exc.problem} (instrument {ident!r})" if ident else exc.problem) from None


def _check_gateway(configs: list[Config], path: Path) -> None:
    """What several agents in one process must not share: ids, keys, spools, MQTT client ids, meters."""
    def unique(what: str, key: str, values: list[Any]) -> None:
        seen: dict[Any, int] = {}
        for i, v in enumerate(values):
            if v is None:
                continue
            if v in seen:
                raise ConfigError(path, f"instrument[{i}].{key}",
                                  f"{what} {v!s} is also used by instrument[{seen[v]}]: each instrument needs its own")
            seen[v] = i

    unique("agent id", "id", [c.agent.id for c in configs])
    unique("instrument", "instrument", [(c.agent.unit, c.agent.instrument) for c in configs])
    unique("key file", "key_file", [c.agent.key_file.resolve() for c in configs])
    unique("spool", "data_dir", [c.spool_path.resolve() for c in configs])
    unique("MQTT client id", "mqtt.client_id", [c.mqtt.client_id or c.agent.id for c in configs])
    unique("check-in port", "identity.checkin_port",
           [c.identity.checkin_port if c.identity.checkin else None for c in configs])
    for i, c in enumerate(configs):
        if c.identity.os_session:
            raise ConfigError(path, f"instrument[{i}].identity.os_session",
                              "a gateway's login user is nobody at the instrument: os_session must be false")
    meters: dict[tuple[str, int | None], str] = {}
    buses: dict[str, tuple[str, dict[str, Any]]] = {}
    for i, c in enumerate(configs):
        for d in c.detectors:
            port = getattr(d.config, "port", None) or getattr(d.config, "host", None)
            if not isinstance(port, str) or not port:
                continue
            addr = getattr(d.config, "slave", None)
            where = f"instrument[{i}].detectors.{d.name}"
            loc = (port, addr if isinstance(addr, int) else None)
            if loc in meters:
                what = f"address {loc[1]} on {port}" if loc[1] is not None else port
                raise ConfigError(path, where, f"{what} is already read by {meters[loc]}: one device, one detector "
                                  "(meters on one bus need distinct addresses)")
            meters[loc] = where
            settings = {k: getattr(d.config, k) for k in BUS_SETTINGS if hasattr(d.config, k)}
            if port in buses and buses[port][1] != settings:
                raise ConfigError(path, where, f"{port} is also used by {buses[port][0]} with other line settings "
                                  f"({buses[port][1]}): devices on one bus share baudrate, parity and framing")
            buses.setdefault(port, (where, settings))
    bare = {p for p, a in meters if a is None}
    for p, a in meters:
        if a is not None and p in bare:
            raise ConfigError(path, "instrument", f"{p} is used both as a bus of addressed meters and by a "
                              "point-to-point detector")
