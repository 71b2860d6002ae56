"""A local stand-in for the 企业微信 and 钉钉 group robots, for the demo and for trying a setup
without a real group: it accepts POSTs on the robots' paths, checks the message format (and the
钉钉 "加签" signature when given the secret), answers as the robots do, prints each message and
appends it as a JSON line to --log.

    python -m server.alerts.receiver --port 8099 [--dingtalk-secret SEC…] [--log var/demo/robot.jsonl]

Point a unit's channel at http://127.0.0.1:8099/cgi-bin/webhook/send?key=demo (企业微信) or
http://127.0.0.1:8099/robot/send?access_token=demo (钉钉).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit


def verdict(path: str, query: dict[str, list[str]], body: Any, dingtalk_secret: str) -> str:
    """'ok', or why the real robot would refuse the message."""
    if not isinstance(body, dict):
        return "invalid json"
    if path == "/cgi-bin/webhook/send":
        content = body.get("markdown", {}).get("content") if body.get("msgtype") == "markdown" else None
        if not isinstance(content, str) or not content or len(content.encode()) > 4096:
            return "markdown.content missing or over 4096 bytes"
        return "ok"
    if path == "/robot/send":
        if dingtalk_secret:
            ts = query.get("timestamp", [""])[0]
            expected = base64.b64encode(hmac.new(dingtalk_secret.encode(), f"{ts}\n{dingtalk_secret}".encode(),
                                                 hashlib.sha256).digest()).decode()
            if not ts.isdigit() or abs(int(ts) - time.time() * 1000) > 3600_000 or query.get("sign") != [expected]:
                return "sign not match"
        md = body.get("markdown", {})
        if body.get("msgtype") != "markdown" or not md.get("title") or not isinstance(md.get("text"), str):
            return "markdown.title and markdown.text expected"
        return "ok"
    return "no such robot"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m server.alerts.receiver", description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8099)
    ap.add_argument("--dingtalk-secret", default="")
    ap.add_argument("--log", type=Path, default=None, help="append each message as a JSON line here")
    args = ap.parse_args(argv)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *a: Any) -> None:
            pass

        def do_POST(self) -> None:
            parts = urlsplit(self.path)
            raw = self.rfile.read(min(int(self.headers.get("Content-Length", "0")), 1 << 20))
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            v = verdict(parts.path, parse_qs(parts.query), body, args.dingtalk_secret)
            robot = "wecom" if parts.path.startswith("/cgi-bin/") else "dingtalk"
            text = ""
            if isinstance(body, dict):
                md = body.get("markdown", {})
                text = str(md.get("content") or md.get("text") or "")
            print(f"[{robot} {v}] {text}", flush=True)
            if args.log is not None:
                with args.log.open("a", encoding="utf-8") as f:
                    f.write(json.dumps({"robot": robot, "verdict": v, "body": body}, ensure_ascii=False) + "\n")
            answer = {"errcode": 0, "errmsg": "ok"} if v == "ok" else {"errcode": 310000, "errmsg": v}
            out = json.dumps(answer).encode()
            self.send_response(404 if v == "no such robot" else 200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"robot receiver on http://{args.host}:{server.server_address[1]}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
