"""Ceph RBD pools: volumes are RBD images, driven by the ``rbd`` and ``ceph`` commands.

The commands, not the Python rados bindings: those exist only for the system Python. Each
command runs with ``-c /dev/null --no-mon-config`` (no host ceph.conf needed), the monitors
on its command line, and the cephx key in a 0600 file that lives for that one command: the
key never appears on a command line (where any local user could read it in /proc), in a
log or in an error message.

Every command is bounded: ``client_mount_timeout`` ends the monitor hunt (an unreachable
monitor, a closed port, or a wrong key, which Ceph answers by letting the client retry
until then), the rados op timeouts bound the work after that, and the process itself is
killed at ``timeout``.

Monitor addresses: a plain ``host:port`` is what librbd, QEMU and libvirt's ``<host
port>`` take. Ceph reads it as "try msgr2, then fall back to v1", so both a monitor's v1
port (6789 by default, what a bare ``host`` means here) and its v2 port (3300) work.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from hypervisor.storage.base import (
    PoolUnreachable,
    PoolUsage,
    RbdSource,
    StorageError,
    VolumeExists,
    VolumeInUse,
    VolumeMissing,
    VolumeStore,
)

log = logging.getLogger(__name__)

RBD = "rbd"
CEPH = "ceph"
DEFAULT_MON_PORT = 6789
CLONE_SNAPSHOT = "pvc-clone-base"
"""The snapshot of an origin that its clones are made from."""

# errno values as the rbd command reports them (its exit status is the errno).
_ENOENT = 2
_EPERM = 1
_EACCES = 13
_EEXIST = 17
_ETIMEDOUT = 110

# What Ceph prints when it refuses a client's key: the monitor offers no method the client
# can authenticate with, and the client hunts on until client_mount_timeout.
_AUTH_REFUSED = "handle_auth_bad_method"
# What it prints (with the key!) when the key is no cephx key at all.
_KEY_UNREADABLE = "failed to decode key"
# What it prints when no monitor accepted it within client_mount_timeout.
_NOT_CONNECTED = ("authenticate timed out", "error connecting to the cluster", "couldn't connect")
# Noise: a plain host:port is tried as msgr2 first; a v1 port answers so, and v1 is used.
_NOISE = ("is using msgr V1 protocol",)
_NOT_PERMITTED = "caps do not allow it"
_STDERR_LINES = 2
# Ceph's log prefix: timestamp, thread id, level; it may follow other text on one line.
_LOG_PREFIX = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\+\d{4} [0-9a-f]+ +-?\d+ ")


class _Failed(Exception):
    """One rbd/ceph command failed: its exit status and stderr, for the caller to judge."""

    def __init__(self, returncode: int, stderr: str) -> None:
        super().__init__(returncode, stderr)
        self.returncode = returncode
        self.stderr = stderr


def parse_monitor(address: str) -> tuple[str, int]:
    """ "host:port", "host" (port 6789), "[v6addr]:port" or a bare IPv6 address."""
    text = address.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":") if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"monitor address {address!r}: text after ']'")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"monitor address {address!r}: no host")
    if not port_text:
        return host, DEFAULT_MON_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"monitor address {address!r}: port {port_text!r} is no port number")
    return host, int(port_text)


class RbdVolumes(VolumeStore):
    """One RBD pool, reached as the cephx user ``user`` (without ``client.``) with ``key``
    (base64, as ``ceph auth print-key`` prints it); ``secret_uuid`` names the libvirt secret
    that holds the same key on every node (DomainDriver.ensure_ceph_secret).

    Clones hang from one snapshot of their origin, ``<origin>@pvc-clone-base``, made by the
    first clone and kept (protected) until the origin is deleted: every clone starts from
    the origin as it was at that first clone. Meant for origins that do not change (images
    a VM is cloned from); removing the snapshot to take a newer one would race with clones
    made on other nodes.

    ``timeout`` bounds each command; ``connect_timeout`` how long one waits for a monitor to
    accept it (so an unreachable cluster or a refused key fails in that time).

    Images are always raw: the ``fmt`` arguments are accepted for the interface and ignored.
    """

    def __init__(
        self,
        monitors: list[str],
        pool: str,
        user: str,
        key: str,
        secret_uuid: str,
        timeout: float = 20.0,
        *,
        connect_timeout: float = 5.0,
    ) -> None:
        if not monitors:
            raise ValueError("an RBD pool needs at least one monitor")
        self._hosts = tuple(parse_monitor(monitor) for monitor in monitors)
        self._pool = pool
        self._user = user.removeprefix("client.")
        self._key = key.strip()
        self._secret_uuid = secret_uuid
        self._timeout = timeout
        self._connect_timeout = min(connect_timeout, timeout)
        self._mon_host = ",".join(
            f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in self._hosts
        )

    @property
    def pool(self) -> str:
        return self._pool

    def volume_name(self, vm: str, disk: str, fmt: str) -> str:
        return f"{vm}_{disk}"

    def probe(self) -> PoolUsage:
        # Reaching the pool with this user's OSD caps: `ceph df` alone asks only the monitor.
        self._command("probe", "", RBD, "ls", "--format", "json", self._pool)
        # `ceph df` is a monitor command a `profile rbd` user may run (checked with Ceph 16:
        # `mon 'profile rbd'` includes the read it needs). A user that may not gets usage
        # None rather than an unreachable pool: the pool itself answered above.
        try:
            report = self._json("probe", "", CEPH, "df", "--format", "json")
        except PoolUnreachable as err:
            if _NOT_PERMITTED not in str(err):
                raise
            log.warning("event=rbd_pool_usage_unknown pool=%s why=%r", self._pool, str(err))
            return PoolUsage()
        for pool in report.get("pools", []):
            if pool.get("name") == self._pool:
                stats = pool.get("stats", {})
                free = int(stats.get("max_avail", 0))
                return PoolUsage(capacity=int(stats.get("stored", 0)) + free, free=free)
        raise PoolUnreachable(f"rbd pool {self._pool}: probe: `ceph df` does not list the pool")

    def exists(self, volume: str) -> bool:
        try:
            self._info(volume, "exists")
        except VolumeMissing:
            return False
        return True

    def create(self, volume: str, size: int, fmt: str) -> None:
        if size < 0:
            raise StorageError(f"rbd {self._spec(volume)}: create: negative size {size}")
        self._command("create", volume, RBD, "create", "--size", f"{size}B", self._spec(volume))
        log.info("event=rbd_volume_created pool=%s volume=%s size=%d", self._pool, volume, size)

    def clone(self, volume: str, origin: str, size: int | None, fmt: str) -> None:
        if self.exists(volume):
            raise VolumeExists(f"rbd {self._spec(volume)}: clone: the volume exists already")
        origin_size = int(self._info(origin, "clone")["size"])
        snapshot = f"{self._spec(origin)}@{CLONE_SNAPSHOT}"
        with contextlib.suppress(VolumeExists):  # made by an earlier clone
            self._command("clone", origin, RBD, "snap", "create", "--no-progress", snapshot)
        try:
            self._command("clone", origin, RBD, "snap", "protect", snapshot)
        except StorageError as err:
            if "already protected" not in str(err):
                raise
        self._command("clone", volume, RBD, "clone", snapshot, self._spec(volume))
        if size is not None and size > origin_size:
            try:
                self._grow(volume, size, "clone")
            except StorageError:
                # A volume that exists is whole: a clone not grown as asked goes again.
                with contextlib.suppress(StorageError):
                    self._command("clone", volume, RBD, "rm", "--no-progress", self._spec(volume))
                raise
        log.info(
            "event=rbd_volume_cloned pool=%s volume=%s origin=%s size=%d",
            self._pool,
            volume,
            origin,
            max(size or 0, origin_size),
        )

    def size(self, volume: str) -> int:
        return int(self._info(volume, "size")["size"])

    def resize(self, volume: str, size: int) -> None:
        current = self.size(volume)
        if size < current:
            raise StorageError(
                f"rbd {self._spec(volume)}: resize: {size} bytes is smaller than its "
                f"{current}: volumes never shrink"
            )
        if size > current:
            self._grow(volume, size, "resize")
            log.info("event=rbd_volume_grown pool=%s volume=%s size=%d", self._pool, volume, size)

    def delete(self, volume: str) -> None:
        try:
            self._info(volume, "delete")
        except VolumeMissing:
            return
        self._refuse_if_cloned(volume)
        self._refuse_if_open(volume)
        snapshots = self._json(
            "delete", volume, RBD, "snap", "ls", "--format", "json", self._spec(volume)
        )
        snapshot = f"{self._spec(volume)}@{CLONE_SNAPSHOT}"
        for found in snapshots:
            if found.get("name") != CLONE_SNAPSHOT:
                continue
            if str(found.get("protected")) == "true":
                try:
                    self._command("delete", volume, RBD, "snap", "unprotect", snapshot)
                except StorageError as err:
                    if "busy" in str(err).lower():  # a clone made since the check above
                        self._refuse_if_cloned(volume)
                    raise
            self._command("delete", volume, RBD, "snap", "rm", "--no-progress", snapshot)
        try:
            self._command("delete", volume, RBD, "rm", "--no-progress", self._spec(volume))
        except VolumeMissing:  # removed by another caller meanwhile
            pass
        except StorageError as err:
            if "watchers" in str(err):  # opened since the check above
                raise VolumeInUse(str(err)) from None
            raise
        log.info("event=rbd_volume_deleted pool=%s volume=%s", self._pool, volume)

    def source(self, volume: str, fmt: str | None) -> RbdSource:
        return RbdSource(
            image=self._spec(volume),
            hosts=self._hosts,
            user=self._user,
            secret_uuid=self._secret_uuid,
            format="raw",
        )

    # -- helpers ---------------------------------------------------------------------------

    def _spec(self, volume: str) -> str:
        return f"{self._pool}/{volume}"

    def _info(self, volume: str, operation: str) -> dict[str, Any]:
        info = self._json(operation, volume, RBD, "info", "--format", "json", self._spec(volume))
        if not isinstance(info, dict) or "size" not in info:
            raise StorageError(f"rbd {self._spec(volume)}: {operation}: `rbd info` gave no size")
        return info

    def _grow(self, volume: str, size: int, operation: str) -> None:
        self._command(
            operation,
            volume,
            RBD,
            "resize",
            "--no-progress",
            "--size",
            f"{size}B",
            self._spec(volume),
        )

    def _refuse_if_cloned(self, volume: str) -> None:
        children = self._json(
            "delete", volume, RBD, "children", "--all", "--format", "json", self._spec(volume)
        )
        if children:
            names = ", ".join(
                f"{child.get('pool')}/{child.get('image')}"
                + (" (in the trash)" if child.get("trash") else "")
                for child in children
            )
            raise VolumeInUse(f"rbd {self._spec(volume)}: delete: it has clones: {names}")

    def _refuse_if_open(self, volume: str) -> None:
        status = self._json("delete", volume, RBD, "status", "--format", "json", self._spec(volume))
        watchers = [str(w.get("address")) for w in status.get("watchers", [])]
        if watchers:
            raise VolumeInUse(
                f"rbd {self._spec(volume)}: delete: it is open (a running guest?) at "
                + ", ".join(watchers)
            )

    def _json(self, operation: str, volume: str, program: str, *args: str) -> Any:
        output = self._command(operation, volume, program, *args)
        try:
            return json.loads(output)
        except ValueError as err:
            raise StorageError(
                f"{self._what(operation, volume)}: `{program} {args[0]}` printed no JSON"
            ) from err

    def _command(self, operation: str, volume: str, program: str, *args: str) -> str:
        """Run ``program args`` as this pool's user; its stdout, or the StorageError (of the
        right kind) saying what failed and why."""
        try:
            return self._run(program, args)
        except _Failed as failed:
            raise self._error(operation, volume, program, args[0], failed) from None
        except subprocess.TimeoutExpired:
            raise PoolUnreachable(
                f"{self._what(operation, volume)}: `{program} {args[0]}` did not end within "
                f"{self._timeout:g}s (monitors {self._mon_host})"
            ) from None
        except OSError as err:
            raise PoolUnreachable(
                f"{self._what(operation, volume)}: cannot run {program}: {err.strerror}"
            ) from None

    def _run(self, program: str, args: tuple[str, ...]) -> str:
        with self._keyfile() as keyfile:
            argv = [
                program,
                "-c", "/dev/null",
                "--no-mon-config",
                "--id", self._user,
                "--keyfile", keyfile,
                "-m", self._mon_host,
                "--client_mount_timeout", f"{self._connect_timeout:g}",
                "--rados_mon_op_timeout", f"{self._timeout:g}",
                "--rados_osd_op_timeout", f"{self._timeout:g}",
                *args,
            ]  # fmt: skip
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=self._timeout,
                check=False,
            )
        if done.returncode != 0:
            raise _Failed(done.returncode, done.stderr)
        return done.stdout

    @contextlib.contextmanager
    def _keyfile(self) -> Iterator[str]:
        descriptor, path = tempfile.mkstemp(prefix="pvc-cephx-")  # mode 0600
        try:
            with os.fdopen(descriptor, "w") as file:
                file.write(self._key + "\n")
            yield path
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _what(self, operation: str, volume: str) -> str:
        target = self._spec(volume) if volume else f"pool {self._pool}"
        return f"rbd {target}: {operation}"

    def _error(
        self, operation: str, volume: str, program: str, verb: str, failed: _Failed
    ) -> StorageError:
        stderr = failed.stderr.replace(self._key, "<key>") if self._key else failed.stderr
        why = _stderr_tail(stderr) or f"exit status {failed.returncode}"
        message = f"{self._what(operation, volume)}: `{program} {verb}` failed: {why}"
        code = failed.returncode
        if _KEY_UNREADABLE in stderr:
            return PoolUnreachable(
                f"{self._what(operation, volume)}: the key of client.{self._user} is no cephx "
                "key (Ceph cannot decode it)"
            )
        if _AUTH_REFUSED in stderr:
            return PoolUnreachable(
                f"{self._what(operation, volume)}: the monitors at {self._mon_host} refused "
                f"to authenticate client.{self._user}: a wrong key or an unknown user"
            )
        if any(marker in stderr for marker in _NOT_CONNECTED):
            return PoolUnreachable(f"{self._what(operation, volume)}: {self._why_not_connected()}")
        if code == _ETIMEDOUT:
            return PoolUnreachable(f"{message} (no answer within {self._timeout:g}s)")
        if "error opening pool" in stderr:
            return PoolUnreachable(message)
        if code in (_EPERM, _EACCES):
            return PoolUnreachable(f"{message} (client.{self._user}'s {_NOT_PERMITTED})")
        if code == _EEXIST:
            return VolumeExists(message)
        if code == _ENOENT:
            return VolumeMissing(message)
        return StorageError(message)

    def _why_not_connected(self) -> str:
        """Why no monitor let the command in within client_mount_timeout. Over msgr v1 a
        refused key looks like a monitor that never answers (the client retries in silence),
        so whether the monitors accept TCP connections tells the two apart."""
        deadline = time.monotonic() + self._connect_timeout
        refusals: list[str] = []
        listening: list[str] = []
        for host, port in self._hosts:
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            left = max(deadline - time.monotonic(), 0.1)
            try:
                with socket.create_connection((host, port), timeout=left):
                    listening.append(address)
            except OSError as err:
                refusals.append(f"{address}: {err.strerror or 'timed out'}")
        if listening:
            return (
                f"the monitors at {', '.join(listening)} accept connections but did not "
                f"authenticate client.{self._user} within {self._connect_timeout:g}s: a wrong "
                "key or an unknown user (or monitors without quorum)"
            )
        return f"no monitor reachable within {self._connect_timeout:g}s ({'; '.join(refusals)})"


def _stderr_tail(stderr: str) -> str:
    """The last lines of a command's stderr that say something (no progress meters), without
    Ceph's log prefix (timestamp, thread, level)."""
    lines: list[str] = []
    for line in stderr.splitlines():
        text = line.strip()
        if not text or "% complete..." in text or any(noise in text for noise in _NOISE):
            continue
        # A log line may be written into the middle of another: split them apart.
        lines.extend(part.strip() for part in _LOG_PREFIX.split(text) if part.strip())
    return "; ".join(lines[-_STDERR_LINES:])
