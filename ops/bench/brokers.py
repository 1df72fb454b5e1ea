"""Brokers a benchmark starts itself on free loopback ports, to ``kill -9`` and start again.

A Redis with AOF on (``appendfsync everysec``, ``noeviction``: the production broker's
settings) and a RabbitMQ node of its own (its own node name, ports and data folder), so a
restart never touches the machine's shared services.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from ops.bench.harness import free_port, wait_port

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


class Broker:
    """A server process in its own process group, with a folder that outlives restarts."""

    kind = ""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix=f"sluice-{self.kind}-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it accepts connections."""
        log = open(self.folder / "server.log", "ab")
        self.proc = subprocess.Popen(self.command(), cwd=self.folder, env=self.env(),
                                     stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_port(self.port, timeout)

    def kill9(self) -> None:
        """``kill -9`` the whole server (its process group), as a crashed host would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def restart(self, down_s: float = 2.0) -> float:
        """Kill, stay down ``down_s``, start again; returns the seconds it was unreachable."""
        t0 = time.monotonic()
        self.kill9()
        time.sleep(down_s)
        self.start()
        self.restarts += 1
        return time.monotonic() - t0

    def close(self) -> None:
        self.kill9()
        shutil.rmtree(self.folder, ignore_errors=True)


class AofRedis(Broker):
    """redis-server with the compose file's broker settings, its AOF in its own folder."""

    kind = "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
                "--dir", str(self.folder), "--appendonly", "yes", "--appendfsync", "everysec",
                "--maxmemory-policy", "noeviction", "--save", "", "--daemonize", "no"]


class RabbitNode(Broker):
    """A RabbitMQ node of its own: node name, AMQP and distribution ports, data and logs."""

    kind = "rabbitmq"

    def __init__(self) -> None:
        super().__init__()
        self.dist_port = free_port()
        self.node = f"sluicebench{self.port}@localhost"
        (self.folder / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n")
        (self.folder / "enabled_plugins").write_text("[].\n")
        (self.folder / "env.conf").write_text("")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def command(self) -> list[str]:
        return [RABBITMQ_SERVER]

    def env(self) -> dict[str, str]:
        f = self.folder
        # HOME holds the node's Erlang cookie: a folder of its own leaves the machine's alone.
        return {**os.environ, "HOME": str(f), "RABBITMQ_NODENAME": self.node,
                "RABBITMQ_NODE_PORT": str(self.port), "RABBITMQ_DIST_PORT": str(self.dist_port),
                "RABBITMQ_CONFIG_FILE": str(f / "rabbitmq.conf"),
                "RABBITMQ_CONF_ENV_FILE": str(f / "env.conf"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(f / "enabled_plugins"),
                "RABBITMQ_MNESIA_BASE": str(f / "mnesia"), "RABBITMQ_LOG_BASE": str(f / "log"),
                "ERL_EPMD_ADDRESS": "127.0.0.1"}

    def start(self, timeout: float = 120.0) -> None:
        super().start(timeout)

    @staticmethod
    def available() -> bool:
        """Whether this machine can start a RabbitMQ node (Debian's rabbitmq-server)."""
        return Path(RABBITMQ_SERVER).exists()
