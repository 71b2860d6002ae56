"""A RabbitMQ cluster on loopback (Debian's rabbitmq-server 3.10 with its MQTT plugin), for tests.

Each node has its own directory, node name (``jishi-<tag>-<n>@localhost``), AMQP, MQTT and Erlang
distribution ports; the nodes form one cluster at boot (classic peer discovery) and share an
Erlang cookie. ``kill(n)`` crashes a node (SIGKILL to its Erlang VM). Under root the nodes run as
the ``rabbitmq`` user (falling back to ``nobody``), like the other private services.

``partition(n)`` cuts a node away from the others while it stays reachable by its clients, and
``heal(n)`` joins it again. The cut is made where the nodes talk to each other, in the Erlang
distribution: each side is given a different cookie for the other (so every reconnection attempt
fails its handshake, as a connection refused by a firewall would), then the links are dropped. This
machine has no iptables/nftables, and the nodes share one loopback; RabbitMQ sees what it sees in
a network partition (peers down, not reachable again) and ``pause_minority`` acts on it.

RabbitMQ 3.10's MQTT plugin speaks MQTT 3.1.1 only: agents connect over MQTT; ingest consumes a
replicated quorum queue over AMQP (server/ingest/amqp.py), which the plugin feeds from the
``amq.topic`` exchange (topic ``jishi/v1/u/i/rec`` is routing key ``jishi.v1.u.i.rec``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Self

from sim.devstack import RunAs, free_port, wait_for_port

__all__ = ["RabbitCluster", "RabbitNode"]

_BIN = Path("/usr/lib/rabbitmq/bin")
_ERL_CALL = Path("/usr/lib/erlang/bin/erl_call")


class RabbitNode:
    host = "127.0.0.1"

    def __init__(self, root: Path, name: str, cookie: str, peers: list[str], runas: RunAs,
                 epmd_port: int) -> None:
        self.dir = root / name
        self.name = name
        self.node = f"{name}@localhost"
        self.amqp_port = free_port()
        self.port = free_port()  # MQTT: `port`, as MosquittoServer, so MQTT helpers take either
        self.dist_port = free_port()
        self.cookie = cookie
        self.peers = peers
        self.epmd_port = epmd_port
        self._as = runas
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env |= {
            "HOME": str(self.dir),  # .erlang.cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_PID_FILE": str(self.dir / "rabbit.pid"),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_NODE_IP_ADDRESS": self.host,
            "ERL_EPMD_PORT": str(self.epmd_port),  # the cluster's own port mapper, ended with it
            "LC_ALL": "C.UTF-8",
        }
        return env

    def _write(self) -> None:
        self._as.own(self.dir, 0o755)
        for sub in ("mnesia", "log"):
            self._as.own(self.dir / sub, 0o755)
        peers = "".join(f"cluster_formation.classic_config.nodes.{i} = {p}\n" for i, p in enumerate(self.peers, 1))
        files = {
            "rabbitmq.conf": (
                f"listeners.tcp.1 = {self.host}:{self.amqp_port}\n"
                f"mqtt.listeners.tcp.1 = {self.host}:{self.port}\n"
                "mqtt.allow_anonymous = true\n"
                "loopback_users = none\n"
                "cluster_formation.peer_discovery_backend = classic_config\n" + peers +
                "cluster_partition_handling = pause_minority\n"
                "log.console = false\nlog.file.level = warning\n"
                "vm_memory_high_watermark.absolute = 512MiB\n"
                "disk_free_limit.absolute = 50MB\n"
            ),
            "enabled_plugins": "[rabbitmq_mqtt].\n",
            ".erlang.cookie": self.cookie,
        }
        for fname, text in files.items():
            p = self.dir / fname
            p.write_text(text)
            if self._as.uid is not None and self._as.gid is not None:
                os.chown(p, self._as.uid, self._as.gid)
        (self.dir / ".erlang.cookie").chmod(0o400)

    def start(self) -> None:
        self._write()
        with (self.dir / "stdout.log").open("ab") as out:
            self.proc = subprocess.Popen([str(_BIN / "rabbitmq-server")], stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, env=self.env(), start_new_session=True,
                                         **self._as.kwargs())

    def wait_started(self, timeout: float = 120) -> None:
        proc = self.proc
        wait_for_port(self.host, self.port, timeout, alive=lambda: proc is not None and proc.poll() is None)

    def ctl(self, *args: str, timeout: float = 60) -> str:
        cmd = [str(_BIN / "rabbitmqctl"), "-n", self.node, *args]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.env(), **self._as.kwargs())
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stdout}{p.stderr}")
        return str(p.stdout)

    def eval(self, expr: str, timeout: float = 30) -> str:
        """Evaluate Erlang expressions on the node and return the last one's value as text, through
        ``erl_call`` (a small C client: ~10 ms, where each ``rabbitmqctl`` starts an Erlang VM, 3-20 s
        on a loaded machine; the partition tests call it several times)."""
        if not _ERL_CALL.exists():
            return self.ctl("eval", expr, timeout=timeout)
        deadline = time.monotonic() + timeout
        while True:
            p = subprocess.run([str(_ERL_CALL), "-sname", self.node, "-c", self.cookie, "-e"], input=expr + "\n",
                               capture_output=True, text=True, timeout=timeout, env=self.env())
            # a node busy on a loaded machine can miss erl_call's connection handshake; the expression
            # has not run then, so it is safe to try again (any other failure is raised below)
            if "failed to connect" not in p.stderr + p.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        out = p.stdout.strip()
        if p.returncode != 0 or not out.startswith("{ok, ") or not out.endswith("}"):
            raise RuntimeError(f"erl_call {self.node} {expr!r} failed ({p.returncode}): {out}{p.stderr}")
        return out[len("{ok, "):-1]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """Crash: SIGKILL to the node's whole process group (the Erlang VM and its helpers)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
        self.proc = None


class RabbitCluster:
    """``size`` nodes under ``root``, started together, one cluster."""

    def __init__(self, root: Path, size: int = 3, tag: str | None = None) -> None:
        self.root = Path(root).absolute()
        tag = tag or secrets.token_hex(3)
        cookie = secrets.token_hex(16).upper()
        names = [f"jishi-{tag}-{i}" for i in range(1, size + 1)]
        runas = RunAs("rabbitmq")
        self.epmd_port = free_port()
        self.nodes = [RabbitNode(self.root, n, cookie, [f"{m}@localhost" for m in names], runas, self.epmd_port)
                      for n in names]

    def start(self, timeout: float = 180) -> Self:
        for n in self.nodes:
            n.start()
        deadline = time.monotonic() + timeout
        for n in self.nodes:
            n.wait_started(max(1.0, deadline - time.monotonic()))
        want = {n.node for n in self.nodes}
        while self.running_nodes(self.nodes[0]) != want:
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster not formed: {self.running_nodes(self.nodes[0])} of {want}")
            time.sleep(0.5)
        return self

    @staticmethod
    def running_nodes(via: RabbitNode) -> set[str]:
        out = via.eval("rabbit_nodes:all_running().")
        return {s.strip().strip("'") for s in out.strip().strip("[]").split(",") if s.strip()}

    def partition(self, node: RabbitNode) -> None:
        """Cut ``node`` away from every other node (see the module doc), in one call on ``node``:
        the others are given the wrong cookie for it first (over the links still there), then it
        takes a wrong one for them and drops its links."""
        names = ", ".join(f"'{n.node}'" for n in self.nodes if n is not node and n.running)
        node.eval(f"Others = [{names}],"
                         " [true = rpc:call(N, erlang, set_cookie, [node(), jishi_cut]) || N <- Others],"
                         " [erlang:set_cookie(N, jishi_cut_away) || N <- Others],"
                         " [erlang:disconnect_node(N) || N <- Others], ok.")

    def heal(self, node: RabbitNode) -> None:
        """Undo ``partition(node)``: every side takes the cluster's cookie for the other again (two
        calls at once: ``node``'s side, and the majority's through one of its members); the paused
        minority (``pause_minority``) then finds the majority and starts serving again."""
        others = [n for n in self.nodes if n is not node and n.running]
        names = ", ".join(f"'{n.node}'" for n in others)
        with ThreadPoolExecutor(2) as pool:
            calls = [
                pool.submit(node.eval, f"[erlang:set_cookie(N, erlang:get_cookie()) || N <- [{names}]], ok."),
                pool.submit(others[0].eval, "C = erlang:get_cookie(), [true = rpc:call(N, erlang, set_cookie,"
                            f" ['{node.node}', C]) || N <- [{names}]], ok."),
            ]
            for call in calls:
                call.result()

    @staticmethod
    def partitions(via: RabbitNode) -> list[str]:
        """The partitions ``via`` has recorded (RabbitMQ's own view; [] when whole)."""
        out = via.eval("rabbit_node_monitor:partitions().").strip()
        return [s.strip().strip("'") for s in out.strip("[]").split(",") if s.strip()]

    def alive(self) -> list[RabbitNode]:
        return [n for n in self.nodes if n.running]

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()

    def close(self) -> None:
        """Stop the nodes and the cluster's Erlang port mapper (started by the first node)."""
        self.stop()
        node = self.nodes[0]
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["epmd", "-port", str(self.epmd_port), "-kill"], capture_output=True, timeout=10,
                           env=node.env(), **node._as.kwargs())

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def addresses(cluster: RabbitCluster, kind: str = "mqtt") -> list[tuple[str, int]]:
    """(host, port) of every node: MQTT or AMQP."""
    return [(n.host, n.port if kind == "mqtt" else n.amqp_port) for n in cluster.nodes]


