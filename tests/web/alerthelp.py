"""Local receivers for the alert tests: a group-robot HTTP server that checks each robot's
documented message format and the 钉钉 "加签" signature, and an SMTP server (aiosmtpd)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Post:
    robot: str  # 'wecom' or 'dingtalk'
    token: str  # the robot's key / access_token
    body: dict[str, Any]
    verdict: str  # 'ok' or why the real robot would refuse it

    @property
    def text(self) -> str:
        md = self.body.get("markdown", {})
        return str(md.get("content") or md.get("text") or "")


@dataclass
class RobotReceiver:
    """Pretends to be qyapi.weixin.qq.com and oapi.dingtalk.com on 127.0.0.1.

    `dingtalk_secrets` maps an access_token to the secret the robot was set up with; a signature
    made with another secret is refused with 钉钉's errcode 310000 as the real robot does.
    """

    dingtalk_secrets: dict[str, str] = field(default_factory=dict)
    posts: list[Post] = field(default_factory=list)
    fail_tokens: set[str] = field(default_factory=set)  # answer these with HTTP 500

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                ctype = self.headers.get("Content-Type", "")
                code, answer = receiver.judge(parts.path, query, raw, ctype)
                self.send_response(code)
                out = json.dumps(answer).encode()
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def wecom_url(self, key: str) -> str:
        return f"{self.base}/cgi-bin/webhook/send?key={key}"

    def dingtalk_url(self, token: str) -> str:
        return f"{self.base}/robot/send?access_token={token}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def judge(self, path: str, query: dict[str, list[str]], raw: bytes, ctype: str) -> tuple[int, dict[str, Any]]:
        try:
            body = json.loads(raw.decode("utf-8"))
        except ValueError:
            return 200, {"errcode": 40001, "errmsg": "invalid json"}
        if path == "/cgi-bin/webhook/send":
            token = query.get("key", [""])[0]
            verdict = self._wecom(body, ctype)
            robot = "wecom"
        elif path == "/robot/send":
            token = query.get("access_token", [""])[0]
            verdict = self._dingtalk(token, query, body, ctype)
            robot = "dingtalk"
        else:
            return 404, {"errcode": 404, "errmsg": "no such robot"}
        self.posts.append(Post(robot, token, body, verdict))
        if token in self.fail_tokens:
            return 500, {"errcode": -1, "errmsg": "system busy"}
        if verdict != "ok":
            return 200, {"errcode": 310000 if "sign" in verdict else 40008, "errmsg": verdict}
        return 200, {"errcode": 0, "errmsg": "ok"}

    @staticmethod
    def _wecom(body: dict[str, Any], ctype: str) -> str:
        if not ctype.startswith("application/json"):
            return "content type is not json"
        if body.get("msgtype") != "markdown" or set(body) != {"msgtype", "markdown"}:
            return "msgtype/markdown expected"
        content = body["markdown"].get("content")
        if not isinstance(content, str) or not content:
            return "markdown.content missing"
        if len(content.encode()) > 4096:
            return "markdown.content over 4096 bytes"
        return "ok"

    def _dingtalk(self, token: str, query: dict[str, list[str]], body: dict[str, Any], ctype: str) -> str:
        if not ctype.startswith("application/json"):
            return "content type is not json"
        secret = self.dingtalk_secrets.get(token)
        if secret is not None:
            ts = query.get("timestamp", [""])[0]
            sign = query.get("sign", [""])  # parse_qs has url-decoded it
            if not ts.isdigit() or abs(int(ts) - time.time() * 1000) > 3600_000:
                return "timestamp missing or more than an hour off"
            expected = base64.b64encode(
                hmac.new(secret.encode(), f"{ts}\n{secret}".encode(), hashlib.sha256).digest()).decode()
            if sign != [expected]:
                return "sign not match"
        if body.get("msgtype") != "markdown":
            return "msgtype markdown expected"
        md = body.get("markdown", {})
        if not isinstance(md.get("title"), str) or not md["title"] or not isinstance(md.get("text"), str):
            return "markdown.title and markdown.text expected"
        return "ok"


class _Sink:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        msg = message_from_bytes(raw, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), msg))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SmtpSink:
    """aiosmtpd on 127.0.0.1, keeping every message it accepts."""

    def __init__(self) -> None:
        self.handler = _Sink()
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    @property
    def messages(self) -> list[tuple[list[str], EmailMessage]]:
        return self.handler.messages

    def close(self) -> None:
        self.controller.stop()
