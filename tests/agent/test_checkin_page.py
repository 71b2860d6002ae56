"""The check-in page's server (agent/identity/checkin.py): it listens from `start`, imports `http.server`
on the first connection (issue 17: memory), answers as before, and stops whether or not anyone came."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any

from agent.identity.checkin import CheckinServer, Request
from tests.agent.test_lean import python


def status() -> dict[str, Any]:
    return {"state": "idle", "explicit_user": None}


def get(port: int, path: str, host: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def rebindable(port: int) -> bool:
    """A restarted agent can listen on `port` again (as the stdlib server, with SO_REUSEADDR)."""
    srv = CheckinServer(port, "i-again", status)
    try:
        srv.start()
    except OSError:
        return False
    srv.stop()
    return True


def test_the_page_answers_from_its_first_connection_and_the_agent_loop_answers_posts() -> None:
    srv = CheckinServer(0, "i-page", status)
    srv.start()
    port = srv._sock.getsockname()[1] if srv._sock else 0
    srv.port = port  # the Origin check compares with the configured port
    try:
        code, body = get(port, "/status")
        assert (code, json.loads(body)) == (200, status())
        assert get(port, "/status", host="evil.example")[0] == 403
        assert get(port, "/nothing")[0] == 404

        def agent_loop() -> None:  # the runner's side: take the request, answer it
            req: Request = srv.requests.get(timeout=10)
            req.result = {"ok": True, "message": f"Checked in: {req.user} ({req.kind})"}
            req.done.set()

        t = threading.Thread(target=agent_loop)
        t.start()
        post = urllib.request.Request(f"http://127.0.0.1:{port}/checkin", data=b"user=BK-7&kind=booking",
                                      method="POST", headers={"Content-Type": "application/x-www-form-urlencoded",
                                                              "Origin": f"http://127.0.0.1:{port}"})
        with urllib.request.urlopen(post, timeout=10) as r:
            page = r.read().decode()
        t.join()
        assert r.status == 200 and "Checked in: BK-7 (booking)" in page and "<h1>i-page</h1>" in page
    finally:
        srv.stop()
    assert rebindable(port)


def test_stop_before_any_connection_frees_the_port_and_a_taken_port_raises() -> None:
    srv = CheckinServer(0, "i-idle", status)
    srv.start()
    port = srv._sock.getsockname()[1] if srv._sock else 0
    other = CheckinServer(port, "i-other", status)
    try:
        other.start()
        raised = False
    except OSError:
        raised = True
    srv.stop()
    assert raised and rebindable(port)


def test_http_server_is_imported_on_the_first_connection_only() -> None:
    got = python("""
import json, sys
from agent.identity.checkin import CheckinServer
srv = CheckinServer(0, "i-lazy", lambda: {"state": "off"})
srv.start()
port = srv._sock.getsockname()[1]
before = [m for m in ("http.server", "http.client", "socketserver", "email", "agent.identity.checkin_http")
          if m in sys.modules]
import urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as r:
    answer = json.loads(r.read())
after = "http.server" in sys.modules
srv.stop()
print(json.dumps({"before": before, "answer": answer, "after": after}))
""")
    assert got == {"before": [], "answer": {"state": "off"}, "after": True}
