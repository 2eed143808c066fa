"""The TCP forwarder between each daemon incarnation and ZooKeeper: how the chaos harness cuts,
stalls and heals a daemon's connections (``ZkProxy``)."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Sequence


class ZkProxy:
    """A thread-per-direction TCP forwarder from a loopback port to ZooKeeper: each new
    connection goes to the next member in rotation (from ``first``) that accepts it."""

    def __init__(self, upstream_ports: int | Sequence[int], name: str, first: int = 0) -> None:
        self.name = name
        ports = [upstream_ports] if isinstance(upstream_ports, int) else list(upstream_ports)
        if not ports:
            raise ValueError("ZkProxy needs at least one upstream port")
        self.upstreams = [("127.0.0.1", port) for port in ports]
        self._next = first % len(self.upstreams)
        self.member: int | None = None
        """The index of the member the newest connection went to."""
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._flowing = threading.Event()
        self._flowing.set()
        self.cut_off = False
        self.closed = False
        self._thread = threading.Thread(target=self._accept, name=f"zkproxy-{name}", daemon=True)
        self._thread.start()

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def stalled(self) -> bool:
        return not self._flowing.is_set()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self.cut_off or self.closed:
                    client.close()  # refused: closed before a byte is read
                    continue
                upstream = self._connect_upstream()
                if upstream is None:
                    client.close()  # every member refused
                    continue
                self._pairs.append((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(src, dst), name=f"zkproxy-{self.name}", daemon=True
                ).start()

    def _connect_upstream(self) -> socket.socket | None:
        """The next member in rotation that accepts a connection (a dead one refuses at
        once on loopback), and the rotation moves past it."""
        count = len(self.upstreams)
        for k in range(count):
            index = (self._next + k) % count
            try:
                upstream = socket.create_connection(self.upstreams[index], timeout=2.0)
            except OSError:
                continue
            upstream.settimeout(None)
            self._next = (index + 1) % count
            self.member = index
            return upstream
        return None

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                self._flowing.wait()
                ready, _, _ = select.select([src], [], [], 0.1)
                if not ready:
                    if self._gone(src):
                        return
                    continue
                if not self._flowing.is_set():
                    continue  # stalled after select: the data waits in the kernel
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except (OSError, ValueError):
            pass
        self._drop(src, dst)

    def _gone(self, sock: socket.socket) -> bool:
        with self._lock:
            return not any(sock in pair for pair in self._pairs)

    def _drop(self, a: socket.socket, b: socket.socket) -> None:
        with self._lock:
            self._pairs = [p for p in self._pairs if a not in p and b not in p]
        for sock in (a, b):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _drop_all(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        self._flowing.set()  # wake the pumps so they see their sockets are gone

    def cut(self) -> None:
        """A partition: every connection dropped, new ones refused, until ``heal``."""
        self.cut_off = True
        self._drop_all()

    def stall(self) -> None:
        """Nothing forwarded either way, connections left open (a frozen process)."""
        self._flowing.clear()

    def heal(self) -> None:
        if self.closed:
            return
        self.cut_off = False
        self._flowing.set()

    def close(self) -> None:
        self.closed = self.cut_off = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        with contextlib.suppress(OSError):
            self._listener.close()
        self._drop_all()
