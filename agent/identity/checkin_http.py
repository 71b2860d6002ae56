"""The check-in page's HTTP side (agent/identity/checkin.py): `http.server` and what it imports
(`email`, `http.client`, `socketserver`, `mimetypes`, `html`), about 1.5 MB of the agent's memory,
loaded only on the page's first connection; until then the agent holds just the listening socket.
"""

from __future__ import annotations

import html
import json
import logging
import socket
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from agent.identity.checkin import MAX_BODY, PAGE, Request, valid_user

if TYPE_CHECKING:
    from agent.identity.checkin import CheckinServer

log = logging.getLogger("jishi.checkin")


def server(owner: CheckinServer, sock: socket.socket) -> ThreadingHTTPServer:
    """A threading HTTP server answering on `sock` (bound and listening) for `owner`: set up as
    `ThreadingHTTPServer(address, Handler)` sets itself up, with the socket it would have bound."""
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
                if o.hostname not in ("127.0.0.1", "localhost", "::1") or o.port != owner.port:
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
            st = owner.status()
            self._send(200, PAGE.format(
                instrument=html.escape(owner.instrument), state=html.escape(str(st.get("state", "?"))),
                user=html.escape(str(st.get("explicit_user") or st.get("os_user") or "—")),
                message=html.escape(message)), "text/html")

        def do_GET(self) -> None:
            if not self._host_ok():
                return
            if self.path == "/":
                self._page()
            elif self.path == "/status":
                self._send(200, owner.status())
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
            owner.requests.put(req)
            if not req.done.wait(10):
                self._reply(is_form, 503, {"ok": False, "error": "the agent did not answer in time"})
                return
            self._reply(is_form, 200 if req.result.get("ok") else 409, req.result)

        def _reply(self, is_form: bool, code: int, result: dict[str, Any]) -> None:
            if is_form:
                self._page(str(result.get("message") or result.get("error") or ""))
            else:
                self._send(code, result)

    httpd = ThreadingHTTPServer(sock.getsockname()[:2], Handler, bind_and_activate=False)
    httpd.socket.close()
    httpd.socket = sock
    httpd.server_address = sock.getsockname()  # what TCPServer.server_bind and HTTPServer.server_bind set
    host, port = sock.getsockname()[:2]
    httpd.server_name = socket.getfqdn(host)
    httpd.server_port = port
    httpd.daemon_threads = True
    return httpd
