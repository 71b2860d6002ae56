"""Private PostgreSQL+TimescaleDB and Mosquitto instances for tests and the demo.

Each service lives entirely in a directory of its own and listens on 127.0.0.1 on a port of its
own, so tests never touch (or depend on) the system-wide services, and several checkouts can run
side by side. The demo keeps its directories under ./var and reuses them on the next run.

PostgreSQL refuses to run as root, so when this process is root both services run as an
unprivileged system user (``postgres`` / ``mosquitto``, falling back to ``nobody``) that owns the
service directory; every directory above it must be searchable by that user.

The test cluster uses ``trust`` authentication on 127.0.0.1 (and its private Unix socket):
it is a throw-away, loopback-only cluster, never a deployment.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = ["APP_ROLES", "MosquittoServer", "PostgresServer", "TcpProxy", "find_pg_bindir", "free_port", "role_dsn"]

PG_SUPERUSER = "jishi"
# The application's database roles (server/db/grants.sql); the superuser above owns and migrates.
APP_ROLES = ("jishi_ingest", "jishi_web", "jishi_admin")
_PG_ROOT = Path("/usr/lib/postgresql")
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; ".s.PGSQL.NNNNN" is appended to the directory


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, timeout: float, alive: Any = None) -> None:
    """Poll until something accepts connections on host:port; ``alive()`` False aborts early."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if alive is not None and not alive():
                raise RuntimeError(f"process exited before listening on {host}:{port}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.0f} s") from None
            time.sleep(0.05)


def stop_process(proc: subprocess.Popen[Any] | None, timeout: float = 10) -> None:
    """Terminate `proc` if it still runs, and kill it if it has not ended within `timeout` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def role_dsn(dsn: str, role: str) -> str:
    """``dsn`` (a postgresql:// URL or a key=value string, e.g. a multi-host one) with its user
    replaced by ``role`` (trust auth: no password)."""
    from urllib.parse import urlsplit, urlunsplit

    if "://" not in dsn:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(dsn, user=role)

    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


def find_pg_bindir() -> Path:
    """The bin directory of the highest installed PostgreSQL that has TimescaleDB next to it."""
    candidates = sorted(
        (p for p in _PG_ROOT.glob("*/bin") if (p / "postgres").exists() and p.parent.name.isdigit()),
        key=lambda p: int(p.parent.name),
        reverse=True,
    )
    if not candidates:
        raise RuntimeError(f"no PostgreSQL server under {_PG_ROOT}; run deploy/install.sh")
    for bindir in candidates:
        pkglibdir = subprocess.run(
            [str(bindir / "pg_config"), "--pkglibdir"], check=True, capture_output=True, text=True
        ).stdout.strip()
        if any(Path(pkglibdir).glob("timescaledb*.so")):
            return bindir
    raise RuntimeError(f"no PostgreSQL under {_PG_ROOT} has TimescaleDB; run deploy/install.sh")


class RunAs:
    """Who a service runs as: this process, or (when we are root) an unprivileged user."""

    def __init__(self, preferred: str) -> None:
        self.uid: int | None = None
        self.gid: int | None = None
        self.name = "the current user"
        if os.geteuid() != 0:
            return
        for name in (preferred, "nobody"):
            with contextlib.suppress(KeyError):
                pw = pwd.getpwnam(name)
                self.uid, self.gid, self.name = pw.pw_uid, pw.pw_gid, name
                return
        raise RuntimeError(f"running as root, but neither user {preferred!r} nor 'nobody' exists")

    def kwargs(self) -> dict[str, Any]:
        """Extra ``subprocess`` arguments that drop privileges (empty when not root)."""
        if self.uid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": [], "cwd": "/"}

    def blocker(self, path: Path) -> Path | None:
        """The first existing directory above ``path`` that the service user cannot search, if any."""
        if self.uid is None:
            return None
        for parent in path.resolve().parents:
            st = parent.stat()
            if not (
                st.st_mode & 0o001
                or (st.st_uid == self.uid and st.st_mode & 0o100)
                or (st.st_gid == self.gid and st.st_mode & 0o010)
            ):
                return parent
        return None

    def own(self, path: Path, mode: int = 0o700) -> None:
        """Create ``path`` if needed and hand it to the service user; check it can reach it."""
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
        if self.uid is None or self.gid is None:
            return
        os.chown(path, self.uid, self.gid)
        parent = self.blocker(path)
        if parent is not None:
            raise PermissionError(
                f"user {self.name!r} cannot reach {path}: {parent} is not searchable by it "
                f"(use a directory outside it, e.g. under /tmp, or devstack.service_dir)"
            )


# Where a service's data goes when its user cannot reach the place asked for (a checkout in
# root's mode-700 home): persistent, like the checkout's own var/, and reachable by every user.
SERVICE_HOME = Path("/var/lib/jishi")


def service_dir(path: Path, user: str) -> Path:
    """``path``, or, when ``user`` (the service's account, as chosen by the servers below) cannot
    reach it, a stand-in under SERVICE_HOME named after it, linked from ``path`` so that the next
    run from the same checkout finds the same data. Nothing above the checkout is changed."""
    path = path.absolute()
    if path.is_symlink():
        return path.resolve()
    runas = RunAs(user)
    if runas.blocker(path) is None:
        return path
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    alt = SERVICE_HOME / f"{path.name}-{digest}"
    SERVICE_HOME.mkdir(parents=True, exist_ok=True)
    SERVICE_HOME.chmod(0o755)
    if path.is_dir():
        if any(path.iterdir()):
            raise PermissionError(f"user {user!r} cannot reach {path}, and it is not empty: move it somewhere"
                                  f" {user!r} can reach (e.g. {alt}) and link it from {path}")
        path.rmdir()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(alt, target_is_directory=True)
    return alt


class PostgresServer:
    """A private PostgreSQL cluster with TimescaleDB preloaded.

    ``fast=True`` turns off fsync and friends: for tests only, a crash loses data.
    An already initialised ``datadir`` is reused as it is (the demo's second run).
    """

    host = "127.0.0.1"

    def __init__(self, datadir: Path, port: int | None = None, *, fast: bool = False) -> None:
        self.datadir = Path(datadir).absolute()
        self.port = port if port is not None else free_port()
        self.fast = fast
        self.bindir = find_pg_bindir()
        self.logfile = self.datadir / "postgres.log"
        self._as = RunAs("postgres")
        self._socketdir: Path | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def _pg(self, tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / tool), *args]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=self._env(), **self._as.kwargs()
        )
        if proc.returncode != 0:
            log = self.logfile.read_text(errors="replace")[-3000:] if self.logfile.exists() else ""
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}\n{log}"
            )
        return proc

    @staticmethod
    def _env() -> dict[str, str]:
        # Keep the caller's PG* variables (PGHOST, PGPORT, ...) from steering our tools.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C.UTF-8"
        return env

    @property
    def initialised(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def init(self) -> None:
        """Run initdb unless the data directory is already a cluster."""
        if self.initialised:
            version = (self.datadir / "PG_VERSION").read_text().strip()
            if version != self.bindir.parent.name:
                raise RuntimeError(
                    f"{self.datadir} holds a PostgreSQL {version} cluster but the server here is "
                    f"{self.bindir.parent.name}; remove it or upgrade it with pg_upgrade"
                )
            return
        if self.datadir.exists() and any(self.datadir.iterdir()):
            raise RuntimeError(f"{self.datadir} is neither empty nor a PostgreSQL cluster")
        self._as.own(self.datadir)
        self._pg(
            "initdb", "-D", str(self.datadir), "-U", PG_SUPERUSER, "--auth=trust",
            "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions",
        )  # fmt: skip
        with (self.datadir / "postgresql.conf").open("a") as f:
            f.write("\n# settings written by sim/devstack.py at every start\ninclude 'jishi.conf'\n")

    def _socket_dir(self) -> Path:
        """Unix socket directory: the datadir, or a short private one if its path is too long."""
        if len(str(self.datadir)) + len("/.s.PGSQL.65535") <= _SOCKET_PATH_MAX:
            return self.datadir
        if self._socketdir is None:
            self._socketdir = Path(tempfile.mkdtemp(prefix="jishi-pg-"))
            self._as.own(self._socketdir)
        return self._socketdir

    def _write_conf(self) -> None:
        settings: dict[str, str | int] = {
            "listen_addresses": "127.0.0.1",
            "port": self.port,
            "unix_socket_directories": str(self._socket_dir()),
            "shared_preload_libraries": "timescaledb",
            "timescaledb.telemetry_level": "off",
            "timescaledb.license": "apache",
            "max_connections": 200,
            "shared_buffers": "256MB",
            "max_worker_processes": 24,
            "timescaledb.max_background_workers": 16,
            "log_min_messages": "warning",
            "log_timezone": "UTC",
            "timezone": "UTC",
        }
        if self.fast:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        lines = []
        for key, value in settings.items():
            lines.append(f"{key} = {value}" if isinstance(value, int) else f"{key} = '{value}'")
        conf = self.datadir / "jishi.conf"
        conf.write_text("\n".join(lines) + "\n")
        if self._as.uid is not None and self._as.gid is not None:
            os.chown(conf, self._as.uid, self._as.gid)

    def is_running(self) -> bool:
        if not self.initialised:
            return False
        cmd = [str(self.bindir / "pg_ctl"), "status", "-D", str(self.datadir)]
        rc = subprocess.run(cmd, capture_output=True, env=self._env(), **self._as.kwargs()).returncode
        return rc == 0

    def start(self) -> Self:
        """Initialise if needed and start; a server left running on this datadir is restarted."""
        self.init()
        if self.is_running():
            self.stop()
        self._write_conf()
        self._pg("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.datadir), "-l", str(self.logfile))
        wait_for_port(self.host, self.port, timeout=30)
        self.create_app_roles()
        return self

    def create_app_roles(self) -> None:
        """The application roles as login roles (trust auth), before any migration grants them rights.
        A hot standby is read-only and has them from its primary already."""
        from psycopg import sql

        if self._admin("SELECT pg_is_in_recovery()")[0][0]:
            return
        for role in APP_ROLES:
            verb = "ALTER" if self._admin("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)) else "CREATE"
            self._admin(sql.SQL(verb + " ROLE {} LOGIN").format(sql.Identifier(role)))

    def stop(self) -> None:
        """Fast shutdown (rolls back open transactions, disconnects clients)."""
        if self.is_running():
            self._pg("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.datadir))
        if self._socketdir is not None:
            shutil.rmtree(self._socketdir, ignore_errors=True)
            self._socketdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- databases -------------------------------------------------------------------------------

    def dsn(self, dbname: str = "postgres", role: str = PG_SUPERUSER) -> str:
        return f"postgresql://{role}@{self.host}:{self.port}/{dbname}"

    def _admin(self, statement: Any, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import psycopg  # the server extra; imported late so the agent side never needs it

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def database_exists(self, name: str) -> bool:
        return bool(self._admin("SELECT 1 FROM pg_database WHERE datname = %s", (name,)))

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create ``name`` unless it exists (optionally as a copy of ``template``); return its DSN."""
        from psycopg import sql

        if not self.database_exists(name):
            stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template is not None:
                stmt = sql.SQL("{} TEMPLATE {}").format(stmt, sql.Identifier(template))
            self._admin(stmt)
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name`` if it exists, disconnecting its sessions (TimescaleDB's workers too)."""
        from psycopg import sql

        if self.database_exists(name):
            ident = sql.Identifier(name)
            self._admin(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(ident))
            self._admin(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(ident))

    def freeze_template(self, name: str, timeout: float = 10) -> None:
        """Make ``name`` a template that nobody is connected to, so it can be copied at any time.

        CREATE DATABASE ... TEMPLATE fails while anyone is connected to the template, and
        TimescaleDB's scheduler connects to every database that allows connections.
        """
        from psycopg import sql

        ident = sql.Identifier(name)
        self._admin(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(ident))
        deadline = time.monotonic() + timeout
        query = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
        while self._admin(query, (name,)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"sessions on {name} did not end within {timeout:.0f} s")
            time.sleep(0.05)


class MosquittoServer:
    """A private Mosquitto broker with on-disk persistence in ``workdir``.

    ``kill()`` simulates a crash (SIGKILL): queued messages survive only if the broker saved them,
    which it does every ``autosave_interval`` seconds and at a clean ``stop()``.
    """

    host = "127.0.0.1"
    binary = Path("/usr/sbin/mosquitto")

    def __init__(self, workdir: Path, port: int | None = None, *, autosave_interval: int = 5) -> None:
        self.workdir = Path(workdir).absolute()
        self.port = port if port is not None else free_port()
        self.autosave_interval = autosave_interval
        self.conffile = self.workdir / "mosquitto.conf"
        self.logfile = self.workdir / "mosquitto.log"
        self.stderrfile = self.workdir / "mosquitto.stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self._as = RunAs("mosquitto")

    def _write_conf(self) -> None:
        conf = f"""\
# written by sim/devstack.py; rewritten at every start
per_listener_settings false
listener {self.port} {self.host}
allow_anonymous true
persistence true
persistence_location {self.workdir}/
persistence_file mosquitto.db
autosave_interval {self.autosave_interval}
autosave_on_changes false
persistent_client_expiration 14d
max_inflight_messages 100
max_queued_messages 100000
max_packet_size 1048576
set_tcp_nodelay true
log_dest file {self.logfile}
log_type error
log_type warning
log_type notice
log_type information
log_timestamp_format %Y-%m-%dT%H:%M:%S
connection_messages true
"""
        self.conffile.write_text(conf)

    def start(self) -> Self:
        if self.running:
            return self
        if not self.binary.exists():
            raise RuntimeError(f"{self.binary} is missing; run deploy/install.sh")
        self._as.own(self.workdir, 0o755)
        self._write_conf()
        # Output beyond the log file (e.g. config errors) goes to a file: a pipe could fill up.
        with self.stderrfile.open("ab") as err:
            self.proc = subprocess.Popen(
                [str(self.binary), "-c", str(self.conffile)],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, **self._as.kwargs(),
            )  # fmt: skip
        proc = self.proc
        try:
            wait_for_port(self.host, self.port, timeout=15, alive=lambda: proc.poll() is None)
        except (RuntimeError, TimeoutError) as e:
            self._reap()
            out = "".join(
                f.read_text(errors="replace")[-3000:] for f in (self.stderrfile, self.logfile) if f.exists()
            )
            raise RuntimeError(f"mosquitto did not start: {e}\n{out}") from None
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _reap(self, timeout: float = 15) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        """Clean shutdown: the broker writes its persistence file before exiting."""
        if self.running and self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
        self._reap()

    def kill(self) -> None:
        """Crash the broker (SIGKILL): nothing is saved beyond the last autosave."""
        if self.running and self.proc is not None:
            self.proc.kill()
        self._reap()

    def restart(self) -> Self:
        """Start again on the same port and with the same persistence file."""
        self.stop()
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class TcpProxy:
    """A TCP forwarder on 127.0.0.1 in front of a service, for fault tests and benchmarks.

    ``cut()`` is a network cut: every open connection is closed at once and new ones are accepted
    and closed straight away (what a client sees when a link or a firewall drops it) until
    ``restore()``. Threads only; meant for a handful of connections.
    """

    host = "127.0.0.1"

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", port: int | None = None) -> None:
        import threading

        self.target = (target_host, target_port)
        self.port = port if port is not None else free_port()
        self.is_cut = False
        self.cuts = 0
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self) -> Self:
        import threading

        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((self.host, self.port))
        ls.listen(64)
        ls.settimeout(0.2)  # so that stop() ends the accept loop
        self._listener = ls
        self._stopping = False
        self._thread = threading.Thread(target=self._accept, name=f"proxy-{self.port}", daemon=True)
        self._thread.start()
        return self

    def _accept(self) -> None:
        import threading

        ls = self._listener
        assert ls is not None
        while not self._stopping:
            try:
                client, _ = ls.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # listener closed by stop()
            client.settimeout(None)
            if self.is_cut:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._pairs.append((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()
        with self._lock:
            self._pairs = [p for p in self._pairs if src not in p]

    def cut(self) -> None:
        """Drop every connection now and refuse new ones until restore()."""
        self.is_cut = True
        self.cuts += 1
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in pair:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()

    def restore(self) -> None:
        self.is_cut = False

    def stop(self) -> None:
        self._stopping = True
        self.cut()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
            self._listener = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
