"""Who is at the instrument: OS session, explicit check-in, card reader, and session bookkeeping.

Two independent session sources: `os` (the interactive OS user) and `explicit` (check-in by
CLI or local page, or a card). Open sessions are kept in the spool's `sessions` table, so a
crash or kill -9 resumes them instead of losing or duplicating them; a clean stop ends them with
reason `agent_stop`. Derivation ends every open session when a new boot begins (the time between
boots is not watched), so a resumed session is announced again under a new id at start-up
(`resume`): the same user goes on being credited after the restart. A forgotten explicit
check-out ends after `idle_timeout_s` during which the instrument was not running, with reason
`idle_timeout`.
"""

from __future__ import annotations

import logging
import os

from agent.recorder import Recorder
from agent.spool import Spool

log = logging.getLogger("jishi.identity")

OS = "os"
EXPLICIT = "explicit"


def new_session_id() -> str:
    """16 hex digits from the OS's random source: what `secrets.token_hex(8)` returns (`os.urandom`),
    without `secrets`, `hmac` and `random` in the running agent (issue 17)."""
    return os.urandom(8).hex()


class Sessions:
    def __init__(self, recorder: Recorder, spool: Spool, idle_timeout_ms: int) -> None:
        self.recorder = recorder
        self.spool = spool
        self.idle_timeout_ms = idle_timeout_ms
        self.open: dict[str, tuple[str, str, str, int]] = spool.open_sessions()
        self._not_running_since: int | None = 0  # mono ms; the count starts at this boot

    def user(self, source: str) -> tuple[str, str] | None:
        s = self.open.get(source)
        return None if s is None else (s[1], s[2])

    def start(self, source: str, method: str, user: str, session: str | None = None) -> str | None:
        """Open a session (under `session` when the server chose its id: a phone check-in); a
        different open one on the same source ends as `replaced`."""
        cur = self.open.get(source)
        if cur is not None:
            if cur[1] == method and cur[2] == user:
                return None
            self.end(source, "replaced")
        session = session or new_session_id()
        row = self.recorder.session_start(session, method, user)
        t = self.recorder.clock.now()[0]
        self.spool.session_opened(source, session, method, user, t)
        self.open[source] = (session, method, user, t)
        log.info("session %s started: %s %s (seq %d)", session, method, _show(method, user), row.seq)
        return session

    def resume(self) -> list[str]:
        """Announce the sessions left open by a crash again, each under a new id; called once after
        the boot record. Returns the new ids."""
        resumed = []
        for source, (old, method, user, _started) in list(self.open.items()):
            session = new_session_id()
            row = self.recorder.session_start(session, method, user)
            t = self.recorder.clock.now()[0]
            self.spool.session_opened(source, session, method, user, t)
            self.open[source] = (session, method, user, t)
            log.info("session %s resumed after a restart as %s (seq %d)", old, session, row.seq)
            resumed.append(session)
        return resumed

    def end(self, source: str, reason: str) -> str | None:
        cur = self.open.pop(source, None)
        if cur is None:
            return None
        self.recorder.session_end(cur[0], reason)
        self.spool.session_closed(source)
        log.info("session %s ended: %s", cur[0], reason)
        return cur[0]

    def on_state(self, state: str, mono: int) -> None:
        """Called every tick: ends a forgotten explicit session once the instrument has been idle, off
        or in fault long enough. Running restarts the count; so does `unknown` (the agent cannot
        tell, and a session is not ended on ignorance)."""
        if state in ("running", "unknown"):
            self._not_running_since = None
            return
        if self._not_running_since is None:
            self._not_running_since = mono
        if EXPLICIT in self.open and mono - self._not_running_since >= self.idle_timeout_ms:
            self.end(EXPLICIT, "idle_timeout")
            self._not_running_since = mono

    def reset_idle(self, mono: int) -> None:
        if self._not_running_since is not None:
            self._not_running_since = mono

    def stop(self) -> None:
        for source in list(self.open):
            self.end(source, "agent_stop")


def _show(method: str, user: str) -> str:
    return user[:24] + "…" if method == "card" else user
