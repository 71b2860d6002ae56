"""Identity: sessions (replaced, idle timeout, resumed after a crash), OS users, card reader."""

from __future__ import annotations

import os
import tty
from collections import namedtuple
from pathlib import Path
from typing import Any

import orjson

from agent.clock import Clock
from agent.identity import EXPLICIT, OS, Sessions
from agent.identity.card_reader import CardReader, card_hash
from agent.identity.checkin import valid_user
from agent.identity.os_session import OsUsers
from agent.recorder import Recorder
from agent.spool import Spool
from protocols.derive import Rec, derive
from tests.agent.helpers import wait_until

User = namedtuple("User", "name terminal host started pid")


def setup(tmp_path: Path, idle_ms: int = 1000) -> tuple[Spool, Sessions]:
    spool = Spool(tmp_path / "spool.db", "a1")
    rec = Recorder(spool, "a1", spool.start_boot(), Clock(2000))
    return spool, Sessions(rec, spool, idle_ms)


def records(spool: Spool) -> list[dict[str, Any]]:
    return [orjson.loads(b) for (b,) in spool.db.execute("SELECT body FROM records ORDER BY seq")]


def test_sessions_replace_and_idle_timeout(tmp_path: Path) -> None:
    spool, s = setup(tmp_path, idle_ms=1000)
    first = s.start(EXPLICIT, "checkin", "zhang.san")
    assert s.start(EXPLICIT, "checkin", "zhang.san") is None  # same user again: no new session
    second = s.start(EXPLICIT, "booking", "BK-2026-0042")
    s.on_state("running", 0)
    s.on_state("idle", 100)
    s.on_state("idle", 900)
    assert EXPLICIT in s.open
    s.on_state("running", 1000)  # the instrument ran again: the idle count restarts
    s.on_state("off", 1500)
    s.on_state("off", 2400)
    assert EXPLICIT in s.open
    s.on_state("off", 2500)
    assert EXPLICIT not in s.open
    recs = [(r["type"], r.get("session"), r.get("reason")) for r in records(spool)]
    assert recs == [("session_start", first, None), ("session_end", first, "replaced"),
                    ("session_start", second, None), ("session_end", second, "idle_timeout")]


def test_open_sessions_survive_a_crash_and_end_on_clean_stop(tmp_path: Path) -> None:
    spool, s = setup(tmp_path)
    sid = s.start(OS, "os", "operator")
    spool.close()  # crash: nothing ended
    spool2 = Spool(tmp_path / "spool.db", "a1")
    s2 = Sessions(Recorder(spool2, "a1", spool2.start_boot(), Clock(2000)), spool2, 1000)
    assert s2.user(OS) == ("os", "operator")
    # derivation closed `sid` at the new boot: the session is announced again, under a new id
    (new,) = s2.resume()
    assert new != sid
    starts = [r for r in records(spool2) if r["type"] == "session_start"]
    assert [(r["session"], r["user"]) for r in starts] == [(sid, "operator"), (new, "operator")]
    assert s2.start(OS, "os", "operator") is None  # same user still logged in: the session goes on
    s2.stop()
    ends = [r for r in records(spool2) if r["type"] == "session_end"]
    assert [(r["session"], r["reason"]) for r in ends] == [(new, "agent_stop")]
    assert Spool(tmp_path / "spool.db", "a1").open_sessions() == {}


def test_os_users_picks_the_latest_local_session() -> None:
    users = [User("admin", "pts/0", "10.0.0.5", 300.0, 1), User("zhang", "tty1", None, 100.0, 2),
             User("li", ":0", ":0", 200.0, 3), User("SYSTEM", "console", None, 400.0, 4)]
    assert OsUsers(["system"], users=lambda: users).current() == "li"
    assert OsUsers(["system"], include_remote=True, users=lambda: users).current() == "admin"
    assert OsUsers(users=lambda: []).current() is None


def test_card_reader_sends_only_keyed_hashes() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    reader = CardReader(os.ttyname(slave), 9600, b"unit-secret", r"^[0-9A-Fa-f]{8,16}$")
    try:
        assert reader.poll() == []
        os.write(master, b"04a1b2c3d4\r\n\x00\xffnoise\r\n04A1B2")
        got: list[str] = []

        def read(n: int) -> bool:
            got.extend(reader.poll())
            return len(got) >= n

        wait_until(lambda: read(1), 2, "a card")
        assert got == [card_hash(b"unit-secret", "04A1B2C3D4")]
        assert "04a1b2c3d4" not in got[0].lower() and got[0].startswith("hmac-sha256:")
        assert reader.rejected == 1
        os.write(master, b"C5D6\n")  # completes the partial line "04A1B2C5D6"
        wait_until(lambda: read(2), 2, "the second card")
        assert got[1] == card_hash(b"unit-secret", "04a1b2c5d6")
    finally:
        reader.close()
        os.close(master)
        os.close(slave)


def test_user_validation() -> None:
    assert valid_user("zhang.san") is None
    assert valid_user("") and valid_user("x" * 129) and valid_user("a\nb")


def test_a_session_resumed_after_a_crash_is_derived_as_the_same_user(tmp_path: Path) -> None:
    """The agent's records across a kill -9, fed to the server's derivation: the time after the
    restart is credited to the same user, not left unattributed (found by bench/soak.py)."""
    spool, s = setup(tmp_path)
    s.start(EXPLICIT, "checkin", "ext.user")
    spool.close()  # kill -9
    spool2 = Spool(tmp_path / "spool.db", "a1")
    s2 = Sessions(Recorder(spool2, "a1", spool2.start_boot(), Clock(2000)), spool2, 1000)
    s2.resume()
    recs = [Rec.from_record(r, r["t"]) for r in records(spool2)]
    sessions = derive(recs).sessions
    assert [(x.identifier, x.end_reason) for x in sessions] == [("ext.user", "agent_restart"), ("ext.user", None)]
    assert sessions[0].end is not None and sessions[1].start >= sessions[0].end
