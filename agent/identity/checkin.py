"""Explicit check-in / check-out: a tiny HTTP server on 127.0.0.1 and its client (the CLI).

The page is for users who do not use a terminal; `jishi-agent checkin <account>` posts to the
same endpoint. Requests are queued to the agent's main loop, which alone writes records, and
answered with its result. Only loopback is served; the Host header must name loopback (DNS
rebinding) and a browser's Origin, when sent, must be this page (cross-site form posts).

Routes: GET / (page), GET /status (JSON), POST /checkin {user, kind: account|booking|card},
POST /checkout. Bodies: JSON or a form. The HTTP handling is in checkin_http.py, imported on the
page's first connection (issue 17: `http.server` and `email` cost ~1.5 MB of an agent nobody visits).
"""

from __future__ import annotations

import json
import logging
import queue
import select
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

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
        self._sock: socket.socket | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def start(self) -> None:
        """Listen now (the CLI and the page may come at any time); `http.server` is imported on the
        first connection (agent/identity/checkin_http.py), in the serving thread. Raises OSError if
        the port is taken. The socket is set up as `ThreadingHTTPServer` sets up its own."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if hasattr(socket, "SO_REUSEADDR"):  # HTTPServer.allow_reuse_address
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))
            sock.listen(5)  # TCPServer.request_queue_size
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="checkin-http", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stopping.is_set():
            try:
                ready, _, _ = select.select([sock], [], [], 0.5)  # serve_forever's poll interval
            except (OSError, ValueError):  # closed by stop()
                return
            if ready:
                break
        with self._lock:
            if self._stopping.is_set():
                return
            from agent.identity.checkin_http import server

            httpd = self._httpd = server(self, sock)
        httpd.serve_forever(poll_interval=0.5)

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()  # closes the listening socket
        elif self._sock is not None:
            if self._thread is not None:
                self._thread.join()
            self._sock.close()
        self._sock = None


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
