"""A gateway answers check-ins per instrument (SPEC §9.5): a command addressed to one of its
instruments becomes a session in that instrument's own chain; the same bytes handed to another of
its instruments are refused (`wrong_instrument`) and leave that chain untouched."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest

from agent.config import GatewayConfig, load_any
from agent.runner import Gateway
from protocols import envelope as env
from protocols.signing import generate, public_to_b64, save_private

SERVER = generate()


def config(tmp_path: Path) -> GatewayConfig:
    for ident in ("g1", "g2"):
        (tmp_path / ident).mkdir()
        save_private(generate(), tmp_path / ident / "agent.key")
    text = f"""
[gateway]
id = "gw-qr"
[agent]
unit = "u1"
data_dir = "{tmp_path}"
[mqtt]
host = "127.0.0.1"
port = 1
[identity]
server_key = "{public_to_b64(SERVER)}"
"""
    for ident in ("g1", "g2"):
        text += f"""
[[instrument]]
id = "{ident}"
instrument = "i-{ident}"
key_file = "{tmp_path / ident / 'agent.key'}"
[instrument.state]
running = "software"
[instrument.detectors.software]
kind = "process"
names = ["no-such-program-{ident}.exe"]
"""
    p = tmp_path / "gw.toml"
    p.write_text(text)
    cfg = load_any(p, environ={})
    assert isinstance(cfg, GatewayConfig)
    return cfg


def sessions(agent: object) -> list[dict[str, object]]:
    rows = agent.spool.read(1, 1000, 10_000_000)  # type: ignore[attr-defined]
    return [r for r in (orjson.loads(x.body) for x in rows) if r["type"].startswith("session")]


def test_gateway_takes_a_checkin_for_the_addressed_instrument_only(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    gw = Gateway(config(tmp_path))
    try:
        g1, g2 = gw.agents
        for a in gw.agents:
            a.start()
        raw = env.session_command(key=SERVER, agent="g2", unit="u1", instrument="i-g2", cmd="checkin",
                                  id="00000000000000a1", n=1, t=g2.clock.now()[0], exp=g2.clock.now()[0] + 60_000,
                                  method="checkin", user="person:p-li", session="qr-00000000000000a1")
        g1.publisher.session_commands.put(raw)
        g2.publisher.session_commands.put(raw)
        with caplog.at_level(logging.WARNING, logger="jishi.agent"):
            for a in gw.agents:
                a.safe_remote()
        assert sessions(g1) == []
        assert "wrong_instrument" in caplog.text
        [start] = sessions(g2)
        assert (start["type"], start["session"], start["method"], start["user"]) == (
            "session_start", "qr-00000000000000a1", "checkin", "person:p-li")
        out = env.session_command(key=SERVER, agent="g2", unit="u1", instrument="i-g2", cmd="checkout",
                                  id="00000000000000a2", n=2, t=g2.clock.now()[0], exp=g2.clock.now()[0] + 60_000,
                                  method="checkin", user="person:p-li", session="qr-00000000000000a1")
        g2.publisher.session_commands.put(out)
        g2.publisher.session_commands.put(out)  # the broker's duplicate: refused as a replay
        with caplog.at_level(logging.WARNING, logger="jishi.agent"):
            g2.safe_remote()
        assert [(s["type"], s.get("reason")) for s in sessions(g2)] == [
            ("session_start", None), ("session_end", "checkout")]
        assert "replayed" in caplog.text
    finally:
        for a in gw.agents:
            a.spool.close()
            a.run_lock.release()
