"""Sending one message to one channel: 企业微信 and 钉钉 group robots (webhooks) and e-mail (SMTP).

Formats follow the robots' published documentation:
- 企业微信 group robot: POST JSON to `https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=KEY`,
  `{"msgtype": "markdown", "markdown": {"content": ...}}`, content at most 4096 UTF-8 bytes; the
  answer is `{"errcode": 0, "errmsg": "ok"}`; at most 20 messages a minute per robot.
- 钉钉 group robot: POST JSON to `https://oapi.dingtalk.com/robot/send?access_token=TOKEN`, with
  "加签": `timestamp` (milliseconds) and `sign` = url-encoded base64 of HMAC-SHA256(key=secret,
  message="{timestamp}\\n{secret}") added as query parameters;
  `{"msgtype": "markdown", "markdown": {"title": ..., "text": ...}}`; the answer has `errcode` 0.
- e-mail: a plain-text message over SMTP (stdlib smtplib), STARTTLS and login when configured.

Failures are returned as text (stored with the delivery), never raised: one bad channel must not
stop the others. Error texts never contain the webhook URL (its key is a credential).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import smtplib
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formataddr, make_msgid

WECOM_MAX_BYTES = 4096
DINGTALK_MAX_BYTES = 4096  # 钉钉 accepts more; one limit keeps both messages the same
HTTP_TIMEOUT_S = 10.0
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Message:
    """One message in both languages: Chinese first, then English."""

    title_zh: str
    title_en: str
    lines_zh: list[str]
    lines_en: list[str]

    @property
    def subject(self) -> str:
        return f"{self.title_zh} / {self.title_en}"

    def markdown(self) -> str:
        zh = "\n".join(f"- {line}" for line in self.lines_zh)
        en = "\n".join(f"- {line}" for line in self.lines_en)
        return f"### {self.title_zh}\n{zh}\n\n### {self.title_en}\n{en}"

    def plain(self) -> str:
        zh = "\n".join(f"* {line}" for line in self.lines_zh)
        en = "\n".join(f"* {line}" for line in self.lines_en)
        return f"{self.title_zh}\n\n{zh}\n\n----\n{self.title_en}\n\n{en}\n"


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int = 25
    sender: str = "jishi@localhost"
    sender_name: str = "机时 Jishi"
    starttls: bool = False
    user: str = ""
    password: str = field(default="", repr=False)
    timeout_s: float = 20.0


def truncate_utf8(text: str, limit: int) -> str:
    """At most `limit` UTF-8 bytes, cut on a character boundary, marked with an ellipsis."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[: limit - len("…".encode())].decode(errors="ignore") + "…"


def check_webhook_url(kind: str, url: str, *, allow_local_http: bool = False) -> str | None:
    """Why `url` is no webhook for `kind`, or None. https only; plain http only to this machine and
    only when `allow_local_http` (operators: a local relay, the demo's and the tests' receivers),
    so a unit manager cannot make the server post to services listening on localhost."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "not a URL"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "needs an https:// URL"
    if parts.scheme == "http" and (parts.hostname not in LOCAL_HOSTS or not allow_local_http):
        return "use https:// (plain http only to this machine, set up by the platform operator)"
    query = urllib.parse.parse_qs(parts.query)
    if kind == "wecom" and not query.get("key"):
        return "the 企业微信 webhook URL has a key=… parameter"
    if kind == "dingtalk" and not query.get("access_token"):
        return "the 钉钉 webhook URL has an access_token=… parameter"
    return None


def hint(kind: str, url: str, recipients: list[str]) -> str:
    """What pages show of a target: host and the key's last 4 characters, never the key."""
    if kind == "email":
        return ", ".join(recipients)
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    key = (query.get("key") or query.get("access_token") or [""])[0]
    return f"{parts.hostname}{parts.path} …{key[-4:]}" if key else f"{parts.hostname}{parts.path}"


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """钉钉 加签: base64(HMAC-SHA256(secret, "{timestamp}\\n{secret}")), url-encoded."""
    to_sign = f"{timestamp_ms}\n{secret}".encode()
    digest = hmac.new(secret.encode(), to_sign, hashlib.sha256).digest()
    return urllib.parse.quote_plus(base64.b64encode(digest).decode())


def _post_json(url: str, body: dict[str, object]) -> str | None:
    data = json.dumps(body, ensure_ascii=False).encode()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json; charset=utf-8"})
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S, context=ssl.create_default_context()) as resp:
            raw = resp.read(65536)
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"cannot reach the robot: {reason}"
    try:
        answer = json.loads(raw)
    except ValueError:
        return "the robot answered with no JSON"
    if not isinstance(answer, dict):
        return "the robot answered with no JSON object"
    if answer.get("errcode") != 0:
        return f"errcode {answer.get('errcode')}: {answer.get('errmsg', '')}"
    return None


def send_wecom(url: str, msg: Message) -> str | None:
    content = truncate_utf8(msg.markdown(), WECOM_MAX_BYTES)
    return _post_json(url, {"msgtype": "markdown", "markdown": {"content": content}})


def send_dingtalk(url: str, secret: str, msg: Message) -> str | None:
    target = url
    if secret:
        # 钉钉 refuses a timestamp more than an hour from its own clock: this is the real time of
        # sending, not the rules' clock (server/clock.py), which a replay may have moved.
        ts = int(time.time() * 1000)
        target = f"{url}&timestamp={ts}&sign={dingtalk_sign(secret, ts)}"
    text = truncate_utf8(msg.markdown(), DINGTALK_MAX_BYTES)
    return _post_json(target, {"msgtype": "markdown", "markdown": {"title": msg.title_zh, "text": text}})


def send_email(smtp: SmtpConfig | None, recipients: list[str], msg: Message) -> str | None:
    if smtp is None:
        return "no SMTP server configured (jishi-server alerts --smtp-host)"
    em = EmailMessage()
    em["Subject"] = msg.subject
    em["From"] = formataddr((smtp.sender_name, smtp.sender))
    em["To"] = ", ".join(recipients)
    em["Message-ID"] = make_msgid(domain=smtp.sender.rpartition("@")[2] or "localhost")
    em.set_content(msg.plain())
    try:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_s) as s:
            if smtp.starttls:
                s.starttls(context=ssl.create_default_context())
            if smtp.user:
                s.login(smtp.user, smtp.password)
            refused = s.send_message(em)
    except (smtplib.SMTPException, OSError) as exc:
        return f"SMTP: {exc}"
    if refused:
        return "SMTP refused: " + ", ".join(sorted(refused))
    return None


def send(kind: str, url: str, secret: str, recipients: list[str], smtp: SmtpConfig | None,
         msg: Message) -> str | None:
    """Deliver `msg`; None when the channel accepted it, else why not."""
    if kind == "wecom":
        return send_wecom(url, msg)
    if kind == "dingtalk":
        return send_dingtalk(url, secret, msg)
    if kind == "email":
        return send_email(smtp, recipients, msg)
    return f"unknown channel kind {kind!r}"
