"""A real ZooKeeper server as a plain java process (Debian's package), for tests and demos."""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from localcluster.process import free_port, pid_alive, spawn, stop_pid, wait_until

ZOOKEEPER_JAR = Path("/usr/share/java/zookeeper.jar")
ZOOKEEPER_CONF_DIR = Path("/etc/zookeeper/conf")
# The secure client port's TLS handler needs Netty's codec, which Debian's zookeeper.jar
# does not name on its Class-Path (libnetty-java ships it).
NETTY_CODEC_JAR = Path("/usr/share/java/netty-codec.jar")
NETTY_FACTORY = "org.apache.zookeeper.server.NettyServerCnxnFactory"


@dataclass(frozen=True)
class ServerTls:
    """A secure client port: the server's key and certificate in one PEM file, and the CA
    (PEM) its clients' certificates must chain to (clients must present one)."""

    port: int
    key_and_cert: Path
    ca: Path

    def config_lines(self) -> list[str]:
        return [
            f"secureClientPort={self.port}",
            "secureClientPortAddress=127.0.0.1",
            f"serverCnxnFactory={NETTY_FACTORY}",
            f"ssl.keyStore.location={self.key_and_cert}",
            "ssl.keyStore.type=PEM",
            f"ssl.trustStore.location={self.ca}",
            "ssl.trustStore.type=PEM",
            "ssl.clientAuth=need",
        ]


class ZooKeeperMissing(RuntimeError):
    pass


class PortClash(RuntimeError):
    """The server exited at start, most likely because its port was taken."""


def four_letter(port: int, word: str, timeout: float = 1.0) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(word.encode())
            chunks = []
            while data := sock.recv(4096):
                chunks.append(data)
            return b"".join(chunks).decode(errors="replace")
    except OSError:
        return ""


@dataclass
class ZooKeeperServer:
    """One standalone server on a loopback port, with its data in ``workdir``."""

    workdir: Path
    port: int = 0
    pid: int | None = None
    myid: int = 0
    """With ``ensemble``: this member's id (1-based)."""
    ensemble: list[tuple[int, int, int]] | None = None
    """(client, quorum, election) ports of every member, this one included."""
    tls: ServerTls | None = None
    """Also serve TLS clients (the plain port stays, for the readiness check)."""

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        cfg = self.workdir / "zoo.cfg"
        cfg.write_text(
            "\n".join(
                [
                    "tickTime=500",
                    "initLimit=10",
                    "syncLimit=5",
                    f"dataDir={data}",
                    f"clientPort={self.port}",
                    "clientPortAddress=127.0.0.1",
                    "admin.enableServer=false",
                    "4lw.commands.whitelist=*",
                    # Short ticks keep test session timeouts short; allow up to 30 s sessions.
                    "maxSessionTimeout=30000",
                    # Every local node, daemon and tool connects from 127.0.0.1, and
                    # ZooKeeper's default allows one address 60 connections: a 64-node local
                    # cluster (bench/scale.py) had its last nodes' sessions dropped at once.
                    "maxClientCnxns=0",
                    *self._ensemble_lines(data),
                    *(self.tls.config_lines() if self.tls else []),
                    "",
                ]
            )
        )
        return cfg

    def _ensemble_lines(self, data: Path) -> list[str]:
        if not self.ensemble:
            return []
        (data / "myid").write_text(f"{self.myid}\n")
        return [
            f"server.{i}=127.0.0.1:{quorum}:{election}"
            for i, (_client, quorum, election) in enumerate(self.ensemble, start=1)
        ]

    def serving(self) -> bool:
        """In quorum and serving clients (a lone ensemble member answers ruok but not this)."""
        return "Mode: " in four_letter(self.port, "srvr")

    def start(self, timeout: float = 60.0) -> None:
        """Start and wait until it serves. A port we picked ourselves that another process
        takes before ZooKeeper binds it is replaced by a new one (up to three tries)."""
        chosen = not self.port
        for attempt in range(3):
            if chosen:
                self.port = 0
            try:
                self._start_once(timeout)
                return
            except PortClash:
                if not chosen or attempt == 2:
                    raise

    def _start_once(self, timeout: float) -> None:
        java = shutil.which("java")
        if java is None or not ZOOKEEPER_JAR.exists():
            raise ZooKeeperMissing(
                "ZooKeeper is not installed: run `make setup` (apt-get install zookeeper)"
            )
        if not self.port:
            self.port = free_port()
        cfg = self.write_config()
        classpath = f"{ZOOKEEPER_CONF_DIR}:{ZOOKEEPER_JAR}"
        options = []
        if self.tls is not None:
            classpath += f":{NETTY_CODEC_JAR}"
            options.append(f"-Dzookeeper.serverCnxnFactory={NETTY_FACTORY}")
        self.pid = spawn(
            [
                java,
                "-Xmx256m",
                *options,
                "-cp",
                classpath,
                "org.apache.zookeeper.server.quorum.QuorumPeerMain",
                str(cfg),
            ],
            self.workdir / "zookeeper.log",
        )
        pid = self.pid

        def ready() -> bool:
            # It logs nothing, so a port clash shows only as a dead PID.
            if not pid_alive(pid):
                raise PortClash(
                    f"ZooKeeper exited at start (port {self.port} in use?); "
                    f"see {self.workdir / 'zookeeper.log'}"
                )
            if self.ensemble:
                return four_letter(self.port, "ruok") == "imok"  # serves once in quorum
            return self.owns_port()

        wait_until(ready, timeout, f"ZooKeeper on port {self.port}", interval=0.1)

    def owns_port(self) -> bool:
        """The server answering on our port is ours: another test's server that grabbed the
        same free port between our check and our bind would answer ruok too."""
        return f"dataDir={self.workdir / 'data'}" in four_letter(self.port, "conf")

    def alive(self) -> bool:
        return (
            self.pid is not None
            and pid_alive(self.pid)
            and four_letter(self.port, "ruok") == "imok"
        )

    def stop(self) -> None:
        if self.pid is not None:
            stop_pid(self.pid, marker=str(self.workdir))
            self.pid = None


def start_ensemble(workdir: Path, members: int, timeout: float = 60.0) -> list[ZooKeeperServer]:
    """A quorum of ``members`` servers on loopback; returns once they serve clients."""
    ports = [(free_port(), free_port(), free_port()) for _ in range(members)]
    servers = [
        ZooKeeperServer(workdir / f"zookeeper{i}", port=ports[i - 1][0], myid=i, ensemble=ports)
        for i in range(1, members + 1)
    ]
    try:
        for server in servers:
            server.start(timeout)
        wait_until(
            lambda: all(s.serving() and s.owns_port() for s in servers),
            timeout,
            f"a {members}-member ZooKeeper ensemble to elect a leader",
            interval=0.1,
        )
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers
