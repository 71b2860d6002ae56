"""A replicated PostgreSQL+TimescaleDB on loopback: a primary and streaming hot standbys, each a
private sim.devstack.PostgresServer (composition: initdb, ports, run-as-user and stop are its).

Why: an acknowledged record must survive the loss of the primary. Ingest acks after COMMIT; with
``synchronous_standby_names`` naming a standby and ``synchronous_commit = on`` a COMMIT returns only
once that standby has flushed the WAL, so whatever was acked is on the standby when the primary
dies. ``kill9()`` crashes a node (every process of it, at once), ``promote()`` turns a standby into
the primary, ``add_standby()`` builds a new one from any primary with pg_basebackup.

Each node's replication settings live in ``ha.conf`` in its data directory, included after the
devstack's ``jishi.conf`` (so it wins over ``fast=True``'s ``synchronous_commit = off``) and
rewritten here (never ALTER SYSTEM: postgresql.auto.conf would be copied to every new standby).
``fast=True`` keeps fsync off: a process crash loses nothing the OS has, a machine crash would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import psycopg

from sim.devstack import PG_SUPERUSER, PostgresServer

__all__ = ["PgCluster", "multi_host_dsn"]

_INCLUDE = "\n# replication settings written by sim/pgha.py\ninclude_if_exists 'ha.conf'\n"


def multi_host_dsn(servers: list[PostgresServer], dbname: str, target: str = "read-write") -> str:
    """A libpq connection string naming every node: libpq tries them in order and keeps the first
    whose role matches ``target_session_attrs`` (read-write: the primary, wherever it is now)."""
    hosts = ",".join(s.host for s in servers)
    ports = ",".join(str(s.port) for s in servers)
    return (f"host={hosts} port={ports} dbname={dbname} user={PG_SUPERUSER} "
            f"target_session_attrs={target} connect_timeout=3")


def _wait(cond: Any, timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


class PgCluster:
    """Named nodes under ``root``: ``start_primary('a')``, ``add_standby('b', 'a')``, ..."""

    def __init__(self, root: Path, *, fast: bool = True) -> None:
        self.root = Path(root).absolute()
        self.fast = fast
        self.nodes: dict[str, PostgresServer] = {}
        self.sync_names: dict[str, list[str]] = {}
        """per node: the standbys a COMMIT there waits for (empty: asynchronous)"""
        self.upstream: dict[str, str] = {}
        """per standby: the node it streams from"""

    # -- configuration ---------------------------------------------------------------------------

    def _write_ha(self, name: str) -> None:
        node = self.nodes[name]
        sync = self.sync_names.get(name, [])
        settings: dict[str, str] = {
            "cluster_name": name,
            "wal_level": "replica",
            "max_wal_senders": "10",
            "max_replication_slots": "10",
            "wal_keep_size": "256MB",
            "hot_standby": "on",
            "hot_standby_feedback": "on",
            "full_page_writes": "on",  # a backup taken from this node must be consistent
            "synchronous_commit": "on",
            # FIRST 1: a COMMIT waits for the first of these that is connected; none connected: it waits
            "synchronous_standby_names": f"FIRST 1 ({', '.join(sync)})" if sync else "",
            "wal_receiver_status_interval": "1s",
        }
        up = self.upstream.get(name)
        if up is not None:
            src = self.nodes[up]
            settings["primary_conninfo"] = (f"host={src.host} port={src.port} user={PG_SUPERUSER} "
                                            f"application_name={name}")
        conf = node.datadir / "ha.conf"
        conf.write_text("".join(f"{k} = '{v}'\n" for k, v in settings.items()))
        self._give(node, conf)

    @staticmethod
    def _give(node: PostgresServer, path: Path) -> None:
        runas = node._as  # the devstack's run-as user: the server must read what we write
        if runas.uid is not None and runas.gid is not None:
            os.chown(path, runas.uid, runas.gid)

    def reload(self, name: str) -> None:
        self._write_ha(name)
        with psycopg.connect(self.nodes[name].dsn(), autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")

    def set_synchronous(self, name: str, standbys: list[str], timeout: float = 30) -> None:
        """Make COMMITs on ``name`` wait for the first connected of ``standbys`` ([]: asynchronous)."""
        self.sync_names[name] = list(standbys)
        self.reload(name)
        want = "sync" if standbys else "async"

        def applied() -> bool:
            rows = self.query(name, "SELECT application_name, sync_state FROM pg_stat_replication")
            live = {str(n): str(s) for n, s in rows}
            if standbys:
                return standbys[0] in live and live[standbys[0]] == want
            return all(s == "async" for s in live.values())

        _wait(applied, timeout, f"{name}: synchronous standbys {standbys}")

    # -- nodes -----------------------------------------------------------------------------------

    def start_primary(self, name: str) -> PostgresServer:
        node = PostgresServer(self.root / name, fast=self.fast)
        self.nodes[name] = node
        node.init()
        conf = node.datadir / "postgresql.conf"
        if _INCLUDE not in conf.read_text():
            with conf.open("a") as f:
                f.write(_INCLUDE)
        self._write_ha(name)
        node.start()
        return node

    def add_standby(self, name: str, upstream: str, *, synchronous: bool = True, timeout: float = 60) -> PostgresServer:
        """A new hot standby of ``upstream`` (a copy by pg_basebackup, then streaming); with
        ``synchronous`` COMMITs on ``upstream`` wait for it from the moment this returns."""
        src = self.nodes[upstream]
        node = PostgresServer(self.root / name, fast=self.fast)
        node._as.own(node.datadir)
        src._pg("pg_basebackup", "-D", str(node.datadir), "-h", src.host, "-p", str(src.port), "-U", PG_SUPERUSER,
                "-X", "stream", "-c", "fast", "--no-sync")
        for stale in ("postgres.log", "postmaster.opts"):
            with contextlib.suppress(FileNotFoundError):
                (node.datadir / stale).unlink()
        self.nodes[name] = node
        self.upstream[name] = upstream
        self.sync_names[name] = []  # once promoted, until told otherwise
        self._write_ha(name)
        signal_file = node.datadir / "standby.signal"
        signal_file.touch()
        self._give(node, signal_file)
        node.start()
        _wait(lambda: self.streaming(upstream, name), timeout, f"{name} streaming from {upstream}")
        if synchronous:
            self.set_synchronous(upstream, [name, *[s for s in self.sync_names.get(upstream, []) if s != name]],
                                 timeout)
        return node

    def streaming(self, upstream: str, name: str) -> bool:
        rows = self.query(upstream, "SELECT 1 FROM pg_stat_replication WHERE application_name = %s"
                          " AND state = 'streaming'", (name,))
        return bool(rows)

    def promote(self, name: str, timeout: float = 60) -> None:
        """Turn a standby into a primary (``pg_ctl promote``), and wait until it accepts writes."""
        node = self.nodes[name]
        node._pg("pg_ctl", "promote", "-w", "-t", str(int(timeout)), "-D", str(node.datadir))
        self.upstream.pop(name, None)
        self._write_ha(name)  # no primary_conninfo any more
        _wait(lambda: not self.in_recovery(name), timeout, f"{name} out of recovery")

    def in_recovery(self, name: str) -> bool:
        return bool(self.query(name, "SELECT pg_is_in_recovery()")[0][0])

    def kill9(self, name: str, timeout: float = 15) -> None:
        """Crash the node: SIGKILL to the postmaster and all its children at once (as a machine
        that loses power), so no backend finishes a COMMIT, sends a reply or streams more WAL."""
        node = self.nodes[name]
        pid = int((node.datadir / "postmaster.pid").read_text().split()[0])
        group = [pid, *_children(pid)]
        for p in group:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGSTOP)  # freeze all first: none reacts to another's death
        for p in group:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)

        def gone() -> bool:
            with contextlib.suppress(OSError), socket.create_connection((node.host, node.port), timeout=0.2):
                return False
            return all(not Path(f"/proc/{p}").exists() or _zombie(p) for p in group)

        _wait(gone, timeout, f"{name} dead")

    def query(self, name: str, sql: str, params: tuple[Any, ...] = (),
              dbname: str = "postgres") -> list[tuple[Any, ...]]:
        with psycopg.connect(self.nodes[name].dsn(dbname), autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(sql.encode(), params)
            return cur.fetchall() if cur.description else []

    def replay_lag_bytes(self, primary: str) -> dict[str, int]:
        """Per standby: WAL bytes written on ``primary`` but not yet replayed there."""
        rows = self.query(primary, "SELECT application_name,"
                          " coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::bigint"
                          " FROM pg_stat_replication")
        return {str(n): int(d) for n, d in rows}

    def dsn(self, dbname: str, names: list[str] | None = None, target: str = "read-write") -> str:
        return multi_host_dsn([self.nodes[n] for n in (names or list(self.nodes))], dbname, target)

    # -- lifecycle -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every node still running (standbys last would wait for them: primaries first)."""
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                node.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (PostgreSQL's backends and auxiliary processes)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out.append(int(stat.parent.name))
    return out


def _zombie(pid: int) -> bool:
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    return True
