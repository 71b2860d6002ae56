"""Explicit check-in / check-out: a tiny HTTP server on 127.0.0.1 and its client (the CLI).

The page is for users who do not use a terminal; `jishi-agent checkin <account>` posts to the
same endpoint. Requests are queued to the agent's main loop, which alone writes records, and
answered with its result. Only loopback is served; the Host header must name loopback (DNS
rebinding) and a browser's Origin, when sent, must be this page (cross-site form posts).

Routes: GET / (page), GET /status (JSON), POST /checkin {user, kind: account|booking|card},
POST /checkout. Bodies: JSON or a form.
"""

from __future__ import annotations

import html
import json
import logging
import queue
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("jishi.checkin")
MAX_BODY = 4096


@dataclass
class Request:
    action: str  # "checkin" | "checkout"
    user: str = ""
    kind: str = "account"
    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, Any] = field(default_factory=dict)


def valid_user(user: str) -> str | None:
    """Why `user` is unacceptable, or None."""
    if not user or len(user) > 128:
        return "give an account or booking code of 1..128 characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in user):
        return "control characters are not allowed"
    return None


PAGE = """<!doctype html><html lang="zh"><head><meta charset="utf-8"><title>Jishi · {instrument}</title>
<style>body{{font-family:sans-serif;max-width:34em;margin:2em auto}}input,select,button{{font-size:1.1em}}
.s{{padding:.6em;background:#eef}}</style></head><body>
<h1>{instrument}</h1>
<p class="s">状态 State: <b>{state}</b> · 用户 User: <b>{user}</b></p>
<form method="post" action="/checkin">
<p><label>账号 / 预约码 / 卡 Account, booking code or card:<br>
<input name="user" autofocus required maxlength="128"></label></p>
<p><select name="kind"><option value="account">账号 account</option><option value="booking">预约码 booking</option>
<option value="card">卡 card</option></select> <button>签到 Check in</button></p></form>
<form method="post" action="/checkout"><p><button>签退 Check out</button></p></form>
<p>{message}</p></body></html>"""


class CheckinServer:
    def __init__(self, port: int, instrument: str, status: Callable[[], dict[str, Any]]) -> None:
        self.port = port
        self.instrument = instrument
        self.status = status
        self.requests: queue.Queue[Request] = queue.Queue()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "jishi-agent"

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http: " + format, *args)

            def _host_ok(self) -> bool:
                host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
                if host not in ("127.0.0.1", "localhost", "::1"):
                    self._send(403, {"ok": False, "error": "only loopback host names are served"})
                    return False
                origin = self.headers.get("Origin")
                if origin and self.command == "POST":
                    o = urllib.parse.urlparse(origin)
                    if o.hostname not in ("127.0.0.1", "localhost", "::1") or o.port != server.port:
                        self._send(403, {"ok": False, "error": "cross-site request refused"})
                        return False
                return True

            def _send(self, code: int, body: dict[str, Any] | str, ctype: str = "application/json") -> None:
                data = (json.dumps(body, ensure_ascii=False) if isinstance(body, dict) else body).encode("utf-8")
                self.send_response(code)
                self.send_header("Content-Type", f"{ctype}; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(data)

            def _page(self, message: str = "") -> None:
                st = server.status()
                self._send(200, PAGE.format(
                    instrument=html.escape(server.instrument), state=html.escape(str(st.get("state", "?"))),
                    user=html.escape(str(st.get("explicit_user") or st.get("os_user") or "—")),
                    message=html.escape(message)), "text/html")

            def do_GET(self) -> None:
                if not self._host_ok():
                    return
                if self.path == "/":
                    self._page()
                elif self.path == "/status":
                    self._send(200, server.status())
                else:
                    self._send(404, {"ok": False, "error": "not found"})

            def do_POST(self) -> None:
                if not self._host_ok():
                    return
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    self._send(413, {"ok": False, "error": "request too large"})
                    return
                raw = self.rfile.read(length).decode("utf-8", errors="replace")
                ctype = self.headers.get("Content-Type") or ""
                is_form = ctype.startswith("application/x-www-form-urlencoded")
                try:
                    data: dict[str, Any] = (
                        {k: v[0] for k, v in urllib.parse.parse_qs(raw).items()} if is_form
                        else (json.loads(raw) if raw else {}))
                    if not isinstance(data, dict):
                        raise ValueError("expected an object")
                except ValueError:
                    self._send(400, {"ok": False, "error": "body must be JSON or a form"})
                    return
                if self.path == "/checkin":
                    user = str(data.get("user", "")).strip()
                    kind = str(data.get("kind", "account"))
                    problem = valid_user(user) or (None if kind in ("account", "booking", "card")
                                                   else "kind must be account, booking or card")
                    if problem:
                        self._reply(is_form, 400, {"ok": False, "error": problem})
                        return
                    req = Request("checkin", user, kind)
                elif self.path == "/checkout":
                    req = Request("checkout")
                else:
                    self._send(404, {"ok": False, "error": "not found"})
                    return
                server.requests.put(req)
                if not req.done.wait(10):
                    self._reply(is_form, 503, {"ok": False, "error": "the agent did not answer in time"})
                    return
                self._reply(is_form, 200 if req.result.get("ok") else 409, req.result)

            def _reply(self, is_form: bool, code: int, result: dict[str, Any]) -> None:
                if is_form:
                    self._page(str(result.get("message") or result.get("error") or ""))
                else:
                    self._send(code, result)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="checkin-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


def call(port: int, path: str, body: dict[str, Any] | None = None, timeout: float = 15.0) -> dict[str, Any]:
    """Client side (CLI): GET when body is None, else POST JSON. Raises OSError if no agent answers."""
    import urllib.error  # the CLI's needs, kept out of the running agent
    import urllib.request

    url = f"http://127.0.0.1:{port}{path}"
    data = None if body is None else json.dumps(body).encode("utf-8")
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            result: dict[str, Any] = json.loads(resp.read())
            return result
    except urllib.error.HTTPError as exc:
        try:
            err: dict[str, Any] = json.loads(exc.read())
            return err
        except ValueError:
            return {"ok": False, "error": f"HTTP {exc.code}"}
