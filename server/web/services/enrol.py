"""Agent enrolment for the operator, shared by the token API, the enrolment page and `jishi
enrol-token`: a one-time token for one instrument and agent id, the agent configuration to copy,
the one command that creates the key and enrols it, and a QR code of both (a phone at the
instrument photographs it; no file has to travel on a USB stick)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime, timedelta

import qrcode
import qrcode.constants
import qrcode.image.svg

from server import clock
from server.store.conn import Conn
from server.web.auth import ENROL_TOKEN_PREFIX, new_token


@dataclass(frozen=True)
class Issued:
    id: int
    token: str  # shown once: only its hash is stored
    agent_id: str
    expires_at: datetime


class AgentTaken(Exception):
    """The agent id asked for belongs to another instrument, or was revoked."""

    def __init__(self, agent: str, instrument: str, revoked: bool) -> None:
        super().__init__(agent)
        self.agent, self.instrument, self.revoked = agent, instrument, revoked


def next_agent_id(conn: Conn, instrument_id: str) -> str:
    """`<instrument>-a<n>`, the first n neither an agent nor promised to a token."""
    prefix = instrument_id[:58]
    taken = {r[0] for r in conn.execute("SELECT id FROM agents WHERE id LIKE %s", (prefix + "-a%",))}
    taken |= {r[0] for r in conn.execute("SELECT agent_id FROM enrolment_tokens WHERE instrument_id = %s",
                                         (instrument_id,))}
    n = 1
    while f"{prefix}-a{n}" in taken:
        n += 1
    return f"{prefix}-a{n}"


def issue(conn: Conn, instrument_id: str, agent_id: str | None, created_by: int | None, ttl: timedelta) -> Issued:
    """A one-time enrolment token for an existing instrument (the caller checked it and the scope)."""
    token, digest = new_token(ENROL_TOKEN_PREFIX)
    agent_id = agent_id or next_agent_id(conn, instrument_id)
    existing = conn.execute("SELECT instrument_id, revoked_at FROM agents WHERE id = %s", (agent_id,)).fetchone()
    if existing is not None and (existing[0] != instrument_id or existing[1] is not None):
        raise AgentTaken(agent_id, existing[0], existing[1] is not None)
    got = conn.execute("INSERT INTO enrolment_tokens (token_hash, instrument_id, agent_id, created_by, expires_at)"
                       " VALUES (%s, %s, %s, %s, %s) RETURNING id, expires_at",
                       (digest, instrument_id, agent_id, created_by, clock.now() + ttl)).fetchone()
    assert got is not None
    return Issued(got[0], token, agent_id, got[1])


def agent_config(mqtt_host: str, mqtt_port: int, unit_id: str, instrument_id: str, agent_id: str,
                 server_key: str = "") -> str:
    """The agent configuration to copy to the instrument PC (agent/config.py's TOML layout); with the
    server's command key, the agent takes check-ins by phone (SPEC §9.5)."""
    identity = f"""
[identity]
server_key = "{server_key}"   # the server's command key: check-in by phone (QR label)
""" if server_key else ""
    return f"""# jishi-agent configuration for instrument {instrument_id} (unit {unit_id})
[agent]
id = "{agent_id}"
unit = "{unit_id}"
instrument = "{instrument_id}"
key_file = "keys/agent.key"
data_dir = "data"

[mqtt]
host = "{mqtt_host}"
port = {mqtt_port}

[state]
# when the instrument counts as running; name the detectors configured below
running = "software"

[detectors.software]
kind = "process"
names = ["CHANGE-ME.exe"]   # the instrument's control software
{identity}"""


def one_command(config_file: str, url: str, token: str) -> str:
    """Key pair, then enrolment with the one-time token: one line to paste on the PC or gateway."""
    return (f"jishi-agent keygen --config {config_file} && "
            f"jishi-agent enroll --config {config_file} --url {url} --token {token}")


def qr_data_url(text: str) -> str:
    """An SVG QR code of `text` as a data: URL (the pages' CSP allows data: images); no PIL needed."""
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_L, border=2,
                         image_factory=qrcode.image.svg.SvgPathImage)
    code.add_data(text.encode("utf-8"))
    code.make(fit=True)
    svg: bytes = code.make_image().to_string()
    return "data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii")


def qr_text(config: str, command: str) -> str:
    """The QR code's content: the configuration, with the command to run as its first comment."""
    return f"# {command}\n{config}"
