"""Server settings: one model for every server process (ingest, web, the `jishi` console), read
from a TOML file and from `JISHI_…` environment variables by one loader, `load()`.

Each process loads them once, at its entry point (server/cli.py, server/web/serve.py,
server/admin.py), and passes what a part needs down as arguments; nothing deeper reads them.
Environment wins over the file; nested sections use a double underscore
(`JISHI_MQTT__HOST=broker`, `JISHI_INGEST__BATCH_MAX_MESSAGES=200`); the web section also takes
its historical single-underscore names (`JISHI_WEB_DSN`, `JISHI_WEB_MQTT_HOST`, …, and `JISHI_DSN`
for its database). The file is named by `--config`, else `JISHI_CONFIG`, else none. Everything is
validated at start, so a typo or an impossible value stops the process with a message naming the
setting instead of failing later.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from protocols.derive import Params


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabaseSettings(_Section):
    """One DSN per database role (server/db/grants.sql): each process connects as its own role."""

    dsn: str = Field("postgresql:///jishi", description="ingest's DSN (role jishi_ingest): ingest, pack, "
                     "rederive, quarantine")
    owner_dsn: str | None = Field(None, description="the owner's DSN, used by `migrate` only (default: dsn)")
    admin_dsn: str | None = Field(None, description="the `jishi` console's DSN (role jishi_admin; default: dsn)")
    connect_timeout_s: int = Field(10, ge=1)
    ha: bool = Field(False, description="acknowledge only what a synchronous standby holds: refuse to store "
                     "on a server that is a standby or whose COMMITs do not wait for one (docs/scaling.md)")


class MqttSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    tls_ca: Path | None = Field(None, description="CA file: turns TLS on")
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_id: str = Field(
        default_factory=lambda: f"jishi-ingest-{socket.gethostname()}"[:64],
        description="stable per ingest process: the broker keeps its session (and messages) by this id",
    )
    share_group: str = Field("jishi-ingest", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    keepalive_s: int = Field(30, ge=5)
    session_expiry_s: int = Field(7 * 86400, ge=0, description="how long the broker holds messages for us")
    receive_maximum: int = Field(1000, ge=1, le=65535, description="unacknowledged messages in flight")


class AmqpSettings(_Section):
    """A RabbitMQ cluster instead of an MQTT broker for ingest's side (server/ingest/amqp.py).
    Empty ``addresses``: ingest subscribes over MQTT as usual."""

    addresses: list[str] = Field(default_factory=list, description="host:port of each node's AMQP listener")
    username: str = "guest"
    password: str = "guest"
    queue: str = Field("jishi-ingest", pattern=r"^[A-Za-z0-9_.-]{1,200}$",
                       description="the quorum queue all ingest processes consume")
    prefetch: int = Field(1000, ge=1, le=65535, description="unacknowledged deliveries in flight")


class IngestSettings(_Section):
    batch_max_messages: int = Field(500, ge=1)
    batch_max_records: int = Field(50_000, ge=1)
    split_min_records: int = Field(4_000, ge=1, description="a batch of at least this many records is stored "
                                   "as split_groups transactions, by agent (several workers then overlap)")
    split_groups: int = Field(4, ge=1, le=64)
    split_only_when_contended: bool = Field(True, description="split big batches only after another worker held "
                                            "agents this one wanted (server/ingest/worker.py Contention); false: "
                                            "always (a lone worker pays ~4 us of CPU per record for nothing)")
    batch_max_wait_ms: int = Field(50, ge=0, description="after a quiet moment, the longest a batch waits for "
                                   "messages still arriving (server/ingest/batching.py)")
    batch_gap_ms: int = Field(10, ge=0, description="messages less than this apart arrive together: a batch "
                              "that started after a quiet moment waits for them")
    quarantine_max_bytes: int = Field(64 * 1024, ge=256, description="payload bytes kept per rejected message")
    retry_initial_s: float = Field(0.5, gt=0)
    retry_max_s: float = Field(30.0, gt=0)
    replay_grace_s: int = Field(600, ge=0, description="an identical old envelope re-sent after this is a replay")
    resend_after_s: float = Field(30.0, gt=0, description="a hole older than this triggers a resend command")
    resend_max_attempts: int = Field(3, ge=1)
    gap_give_up_after_s: float = Field(600.0, gt=0, description="a hole older than this is a permanent gap")
    gap_check_every_s: float = Field(5.0, gt=0)
    pack_after_s: int = Field(86400, ge=0, description="raw envelopes older than this are packed per agent")
    pack_every_s: float = Field(600.0, gt=0)


class DeriveSettings(_Section):
    heartbeat_s: int = Field(300, ge=1, description="assumed period until a heartbeat states its own")
    tolerance: float = Field(1.5, ge=1.0, le=10.0, description="silence longer than period x this is offline")
    live_window_s: int = Field(120, ge=1, description="records received within this of their time are 'live'")
    timezone: str = Field("Asia/Shanghai", description="what 'today' means in live state")
    future_s: int = Field(600, ge=1, description="records more than this ahead of their receive time are "
                          "flagged, and placed at their receive time for hours")

    def params(self) -> Params:
        return Params(
            heartbeat_ms=self.heartbeat_s * 1000,
            tolerance_permille=round(self.tolerance * 1000),
            live_window_ms=self.live_window_s * 1000,
            future_ms=self.future_s * 1000,
        )


class MetricsSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535, description="0: do not serve /metrics")


class LoginProvider(_Section):
    """One university login (统一身份认证) people may use: CAS 2.0/3.0 or OpenID Connect.

    The login maps `<id>:<subject>` to a person through identity_map (method `login`); people it
    does not map register themselves and wait for confirmation (docs/operations.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9_-]{1,32}$", description="short name, part of the identity and of the URLs")
    kind: Literal["oidc", "cas"]
    label_zh: str = Field("统一身份认证登录", min_length=1, max_length=60, description="button text, Chinese")
    label_en: str = Field("University login", min_length=1, max_length=60, description="button text, English")
    unit_id: str = Field("", description="when set, only this unit's identity map is consulted (the unit that "
                         "runs the provider); empty: any unit's, if exactly one person is named")
    # OpenID Connect
    issuer: str = Field("", description="OIDC issuer URL; its /.well-known/openid-configuration is read")
    client_id: str = ""
    client_secret: str = ""
    scopes: str = "openid profile email"
    subject_claim: str = Field("sub", description="the claim that is the person's key: sub, preferred_username, "
                               "email, or a university's own (e.g. a staff number)")
    name_claim: str = Field("name", description="the claim (OIDC) or attribute (CAS 3.0) with the display name")
    # CAS
    cas_url: str = Field("", description="CAS server base URL, e.g. https://cas.example.edu.cn/cas")
    cas_version: Literal[2, 3] = Field(3, description="2: /serviceValidate; 3: /p3/serviceValidate with attributes")
    cas_subject_attribute: str = Field("", description="CAS 3.0 attribute that is the person's key; empty: the "
                                       "CAS user")
    timeout_s: float = Field(10.0, gt=0, le=60)

    @model_validator(mode="after")
    def _complete(self) -> LoginProvider:
        if self.kind == "oidc" and not (self.issuer and self.client_id):
            raise ValueError(f"login provider {self.id}: an OIDC provider needs issuer and client_id")
        if self.kind == "cas" and not self.cas_url:
            raise ValueError(f"login provider {self.id}: a CAS provider needs cas_url")
        return self


class WebSettings(_Section):
    """The web process's section; tests build it directly (`WebSettings(dsn=...)`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dsn: str = Field("", description="the web's database, the primary (writes: logins, registry edits, proposals,"
                     " audit); required by `jishi-server web`")
    read_dsn: str = Field("", description="a streaming replica for read-only work (the pages and API reads of GET"
                          " requests, evaluations); empty: everything on `dsn`. A multi-host string with"
                          " target_session_attrs=prefer-standby falls back to the primary by itself")
    replica_lag_warn_s: float = Field(30.0, gt=0, description="the operator page warns when the replica replays"
                                      " this far behind the primary")
    session_ttl_s: int = Field(8 * 3600, description="absolute lifetime of a login session")
    cookie_secure: bool = Field(True, description="off only for plain-http local tests; a deployment sits behind TLS")
    login_window_s: int = Field(900, description="rate limit window of failed logins")
    login_max_failures: int = Field(5, description="failed logins per login name within the window")
    login_max_failures_client: int = Field(30, description="failed logins per client address within the window")
    login_max_failures_account: int = Field(20, description="failed logins per login name from clients that never "
                                            "logged in to it, before those clients wait (server/web/throttle.py)")
    login_max_delay_s: int = Field(900, description="the longest wait after failed logins: past each allowance the "
                                   "next attempt waits 1, 2, 4, ... s; never a hard lock")
    trusted_proxies: str = Field("", description="addresses or networks (comma-separated) of reverse proxies whose "
                                 "X-Forwarded-For / -Proto are believed; empty: none, the peer is the client")
    enrolment_ttl_s: int = 7 * 24 * 3600
    mqtt_host: str = Field("localhost", description="the broker an enrolled agent talks to (in its config to copy)")
    mqtt_port: int = 1883
    live_stale_s: int = Field(900, description="a watching agent whose coverage has not moved for this is offline")
    live_refresh_s: float = Field(30.0, description="period of the board's full refresh")
    sse_keepalive_s: float = 15.0
    max_body_bytes: int = Field(1024 * 1024, description="largest request body outside the spreadsheet upload")
    pool_min: int = 1
    pool_max: int = Field(8, description="database connections per web worker process")
    report_cache_s: float = Field(30.0, ge=0, description="how long a worker reuses a computed unit report, "
                                  "overview or board utilization while nothing audited changed (derived hours "
                                  "show within this time); 0: never reuse")
    report_cache_past_s: float = Field(600.0, ge=0, description="the same for a period that has ended (its hours "
                                       "change only by late arrivals from agents' spools)")
    report_cache_entries: int = Field(64, ge=0, description="computed reports a worker keeps at most")
    report_compute_slots: int = Field(2, ge=1, description="evaluations (reports, overview) a worker computes at "
                                      "once; more wait (each holds a connection and contends with the worker's pages)")
    report_cache_shared: bool = Field(True, description="share computed reports between the workers in the "
                                      "database (migration 038), so each is computed once, not once per worker")
    workers: int = Field(0, ge=0, description="web worker processes sharing the port (each with its own pool and "
                         "live listener); 0: one per CPU core")
    default_lang: str = "zh"
    rubric_path: str = Field("", description="the evaluators' rubric (TOML); empty: the sample shipped")
    low_use_threshold: float = 0.2
    card_key_file: str = Field("", description="the deployment's card key file: the web import of identities "
                               "hashes raw card numbers with it; empty: only hmac-sha256: values are accepted")
    evaluators_decide_proposals: bool = Field(False, description="who accepts a unit manager's proposals (changes "
                                              "that move the figures): the operator always; evaluators too when on")
    snapshot_key_file: str = Field("", description="the server's Ed25519 key (PKCS#8 PEM, `jishi period keygen`) "
                                   "that signs the snapshots of closed evaluation periods; empty: no closing from "
                                   "the web")
    login_providers: tuple[LoginProvider, ...] = Field((), description="university logins (CAS, OIDC) offered "
                                                       "on the login page next to the local password form")
    public_url: str = Field("", description="the site's external base URL (https://jishi.example.edu.cn), used in "
                            "the redirect URI / CAS service URL and printed in label QR codes; empty: taken "
                            "from the request")
    registration_ttl_s: int = Field(1800, description="how long an unknown login may take to fill in the "
                                    "self-registration form")

    @model_validator(mode="after")
    def _unique_providers(self) -> WebSettings:
        ids = [p.id for p in self.login_providers]
        if len(ids) != len(set(ids)):
            raise ValueError("web.login_providers: the ids must be unique")
        return self

    def login_provider(self, provider_id: str) -> LoginProvider | None:
        return next((p for p in self.login_providers if p.id == provider_id), None)
    command_key_file: str = Field("", description="the server's Ed25519 command key (one base64url line, "
                                  "`jishi-agent keygen`): signs phone check-ins sent to agents (SPEC §9.5); "
                                  "empty: phone check-ins are kept as unverified manual sessions")
    command_mqtt_host: str = Field("127.0.0.1", description="the broker the web publishes check-in commands to")
    command_mqtt_port: int = Field(1883, ge=1, le=65535)
    command_mqtt_username: str = Field("", description="the web's broker user: may publish `cmd` only")
    command_mqtt_password: str = ""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="JISHI_", env_nested_delimiter="__", extra="forbid", toml_file=None
    )

    database: DatabaseSettings = Field(default_factory=lambda: DatabaseSettings())
    mqtt: MqttSettings = Field(default_factory=lambda: MqttSettings())
    amqp: AmqpSettings = Field(default_factory=lambda: AmqpSettings())
    ingest: IngestSettings = Field(default_factory=lambda: IngestSettings())
    derive: DeriveSettings = Field(default_factory=lambda: DeriveSettings())
    metrics: MetricsSettings = Field(default_factory=lambda: MetricsSettings())
    web: WebSettings = Field(default_factory=lambda: WebSettings())
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.ingest.gap_give_up_after_s < self.ingest.resend_after_s:
            raise ValueError("ingest.gap_give_up_after_s must be >= ingest.resend_after_s")
        if self.ingest.retry_max_s < self.ingest.retry_initial_s:
            raise ValueError("ingest.retry_max_s must be >= ingest.retry_initial_s")
        try:
            from zoneinfo import ZoneInfo

            ZoneInfo(self.derive.timezone)
        except Exception:
            raise ValueError(f"derive.timezone {self.derive.timezone!r} is not a known time zone") from None
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, _LegacyWebEnv(settings_cls)]
        path = os.environ.get("JISHI_CONFIG")
        if path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(path)))
        return tuple(sources)


class _LegacyWebEnv(PydanticBaseSettingsSource):
    """`JISHI_WEB_<FIELD>` (single underscore) and `JISHI_DSN`: the web's settings as deployments set them."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        web: dict[str, Any] = {}
        for name in WebSettings.model_fields:
            raw = os.environ.get(f"JISHI_WEB_{name.upper()}")
            if raw is not None:
                web[name] = raw
        if "dsn" not in web and os.environ.get("JISHI_DSN"):
            web["dsn"] = os.environ["JISHI_DSN"]
        return {"web": web} if web else {}


class ConfigError(Exception):
    """Settings that cannot be used; the message names each bad setting."""


def load(path: Path | None = None, **overrides: Any) -> Settings:
    """Read settings from `path` (or $JISHI_CONFIG) and the environment; raise ConfigError if invalid."""
    old = os.environ.get("JISHI_CONFIG")
    try:
        if path is not None:
            if not path.is_file():
                raise ConfigError(f"config file {path} does not exist")
            os.environ["JISHI_CONFIG"] = str(path)
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(settings)"
            lines.append(f"  {where}: {err['msg']}")
        raise ConfigError("invalid settings:\n" + "\n".join(lines)) from None
    except ValueError as exc:  # TOML syntax errors
        raise ConfigError(f"cannot read settings: {exc}") from None
    finally:
        if path is not None:
            if old is None:
                os.environ.pop("JISHI_CONFIG", None)
            else:
                os.environ["JISHI_CONFIG"] = old
