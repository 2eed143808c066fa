"""A real libvirtd (QEMU/KVM) as a plain process, without systemd, for tests and local clusters.

Two modes:

- ``system``: the host's own daemon (/run/libvirt, /var/lib/libvirt, ...), reached at
  ``qemu:///system``. ``virtlogd -d --pid-file X`` then ``libvirtd -d --pid-file Y``. When
  a libvirtd already answers there, it is reused and left running by ``stop()``.
- ``isolated``: a second, independent libvirtd in its own mount namespace, with its
  configuration and state in a node folder (``run``, ``lib``, ``cache``, ``log``, ``etc``
  bind-mounted over /run/libvirt, /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt
  and /etc/libvirt) and its own ``host_uuid``, so two of them on one machine can live
  migrate domains to each other. Reached at
  ``qemu+unix:///system?socket=<node>/run/libvirt-sock``. QEMU's output goes to files
  (``stdio_handler = "file"``), so no virtlogd is needed, and cgroups are off, so it does
  not fight the host's daemon over them.

Processes are stopped by the PID recorded at start: SIGTERM, a deadline, then SIGKILL.
``stop()`` never destroys domains of the host's daemon; an isolated daemon's running
domains are destroyed through its URI first, and any QEMU it still left behind (QEMU
outlives libvirtd by design) is killed by the PID file libvirtd kept for it.

The first start on a host takes ~9 s while libvirtd probes QEMU's capabilities; the
result is cached in /var/cache/libvirt, and an isolated daemon starts from a copy of it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from localcluster.process import pid_alive, spawn, stop_pid, wait_until

SYSTEM_URI = "qemu:///system"
SYSTEM_RUN_DIR = Path("/run/libvirt")
SYSTEM_SOCKET = SYSTEM_RUN_DIR / "libvirt-sock"
VIRTLOGD_SOCKET = SYSTEM_RUN_DIR / "virtlogd-sock"

# Where the host keeps libvirt's state, and the node folder's subfolder that stands in
# for each in an isolated daemon's mount namespace.
HOST_DIRS: dict[str, Path] = {
    "run": Path("/run/libvirt"),
    "lib": Path("/var/lib/libvirt"),
    "cache": Path("/var/cache/libvirt"),
    "log": Path("/var/log/libvirt"),
    "etc": Path("/etc/libvirt"),
}

# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107

_SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin"

Mode = Literal["system", "isolated"]

# Run by `unshare -m` in the new mount namespace; "$1" is the node folder, "$2" libvirtd.
_ISOLATED_SCRIPT = """
set -e
mount --make-rprivate /
mkdir -p /run/libvirt /var/lib/libvirt /var/cache/libvirt /var/log/libvirt /etc/libvirt
mount --bind "$1/run" /run/libvirt
mount --bind "$1/lib" /var/lib/libvirt
mount --bind "$1/cache" /var/cache/libvirt
mount --bind "$1/log" /var/log/libvirt
mount --bind "$1/etc" /etc/libvirt
exec "$2" --pid-file "$1/libvirtd.pid"
"""


class LibvirtdError(RuntimeError):
    """libvirtd could not be started or reached; ``log_path`` says where to look."""

    def __init__(self, message: str, log_path: Path | None = None) -> None:
        super().__init__(message if log_path is None else f"{message}; see {log_path}")
        self.log_path = log_path


class LibvirtdMissing(LibvirtdError):
    """A program this mode needs (libvirtd, virtlogd, unshare, mount) is not installed."""


class LibvirtdExited(LibvirtdError):
    """libvirtd (or virtlogd) exited during start, or never answered."""


def find_program(name: str) -> str | None:
    """``name`` on PATH or in the sbin folders, which a non-login PATH may lack."""
    search = os.pathsep.join(p for p in (os.environ.get("PATH", ""), _SBIN_PATH) if p)
    return shutil.which(name, path=search)


def libvirtd_installed() -> bool:
    return find_program("libvirtd") is not None and find_program("virtlogd") is not None


def probe(uri: str) -> bool:
    """Whether a libvirtd answers at ``uri`` (open + version, then close).

    While libvirtd initialises its drivers it accepts connections but answers them
    only when done, so this call may block until then; a dead daemon fails it at once.
    """
    import libvirt  # third-party; imported here so the module loads without it

    libvirt.registerErrorHandler(_silence, None)
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        return False
    try:
        conn.getLibVersion()
        return True
    except libvirt.libvirtError:
        return False
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


def _silence(_ctx: object, _err: object) -> None:
    # libvirt prints every error to stderr besides raising it; a failed probe is normal.
    return None


def _unix_socket_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _mount_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def _pids_in_mount_namespace(namespace: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _mount_namespace(int(entry)) == namespace:
            pids.append(int(entry))
    return pids


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    last = text.strip().splitlines()[-lines:]
    return "\n".join(last)


class LibvirtDaemon:
    """One libvirtd, started with ``start()`` (or as a context manager), stopped by ``stop()``.

    ``workdir`` holds the PID files and logs (system mode) or is the node folder (isolated
    mode). ``start()`` is ``launch()`` then ``wait_ready()``; callers starting several
    daemons launch them all first so their QEMU probes overlap.
    """

    def __init__(
        self,
        workdir: Path,
        mode: Mode = "system",
        *,
        start_timeout: float = 120.0,
        stop_timeout: float = 15.0,
    ) -> None:
        if mode not in ("system", "isolated"):
            raise ValueError(f"unknown libvirtd mode {mode!r}")
        self.workdir = Path(workdir).absolute()
        self.mode: Mode = mode
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.pid: int | None = None
        self.virtlogd_pid: int | None = None
        self.reused = False
        """True when a daemon already answered at start: stop() leaves it alone."""
        self._namespace: str | None = None
        self._launched_at: float | None = None
        self.ready_seconds: float | None = None
        """How long the last start took, from launch to the first answer."""

    @classmethod
    def system(cls, workdir: Path, **kwargs: Any) -> LibvirtDaemon:
        return cls(workdir, "system", **kwargs)

    @classmethod
    def isolated(cls, node_dir: Path, **kwargs: Any) -> LibvirtDaemon:
        return cls(node_dir, "isolated", **kwargs)

    # -- where things are ------------------------------------------------------

    @property
    def socket_path(self) -> Path:
        if self.mode == "system":
            return SYSTEM_SOCKET
        return self.workdir / "run" / "libvirt-sock"

    @property
    def uri(self) -> str:
        if self.mode == "system":
            return SYSTEM_URI
        return f"qemu+unix:///system?socket={self.socket_path}"

    @property
    def pid_file(self) -> Path:
        return self.workdir / "libvirtd.pid"

    @property
    def log_path(self) -> Path:
        """libvirtd's stdout/stderr; an isolated daemon also logs to ``log/libvirtd.log``."""
        name = "libvirtd.log" if self.mode == "system" else "libvirtd.out"
        return self.workdir / name

    @property
    def virtlogd_log_path(self) -> Path:
        return self.workdir / "virtlogd.log"

    def alive(self) -> bool:
        return self.pid is not None and pid_alive(self.pid)

    def answers(self) -> bool:
        return probe(self.uri)

    # -- start -----------------------------------------------------------------

    def start(self) -> Self:
        """Launch and wait until it answers; on failure, stop whatever was started."""
        try:
            self.launch()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def launch(self) -> None:
        """Start the processes (or find a running daemon to reuse); returns before it answers."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._launched_at = time.monotonic()
        self.ready_seconds = None
        if self.mode == "system":
            self._launch_system()
        else:
            self._launch_isolated()

    def wait_ready(self) -> None:
        """Block until the daemon answers at ``uri``; LibvirtdExited if it dies or times out."""
        started = self._launched_at if self._launched_at is not None else time.monotonic()
        if self.reused:
            self.ready_seconds = 0.0
            return
        pid = self.pid

        def ready() -> bool:
            if pid is None or not pid_alive(pid):
                # Someone else's daemon may have won the race for the system socket.
                # It is not ours to stop, nor is a virtlogd we started, which it now uses.
                if self.mode == "system" and probe(self.uri):
                    self.reused = True
                    self.pid = self.virtlogd_pid = None
                    return True
                raise LibvirtdExited(
                    f"libvirtd ({self.mode}) exited during start:\n{self._logs_tail()}",
                    self.log_path,
                )
            return probe(self.uri)

        try:
            wait_until(ready, self.start_timeout, f"libvirtd at {self.uri}", interval=0.1)
        except TimeoutError as err:
            raise LibvirtdExited(
                f"libvirtd ({self.mode}) did not answer at {self.uri} within "
                f"{self.start_timeout:g}s:\n{self._logs_tail()}",
                self.log_path,
            ) from err
        if self.mode == "isolated" and self.pid is not None:
            self._namespace = _mount_namespace(self.pid)
        self.ready_seconds = time.monotonic() - started

    def _launch_system(self) -> None:
        if probe(SYSTEM_URI):
            self.reused = True
            return
        self.reused = False
        libvirtd = find_program("libvirtd")
        virtlogd = find_program("virtlogd")
        if libvirtd is None or virtlogd is None:
            raise LibvirtdMissing(
                "libvirtd/virtlogd are not installed: "
                "apt-get install libvirt-daemon-system qemu-system-x86"
            )
        if not _unix_socket_answers(VIRTLOGD_SOCKET):
            self.virtlogd_pid = self._daemonize(
                [virtlogd, "-d", "--pid-file", str(self.workdir / "virtlogd.pid")],
                self.workdir / "virtlogd.pid",
                self.virtlogd_log_path,
                "virtlogd",
            )
        self.pid = self._daemonize(
            [libvirtd, "-d", "--pid-file", str(self.pid_file)],
            self.pid_file,
            self.log_path,
            "libvirtd",
        )

    def _daemonize(self, argv: list[str], pid_file: Path, log_path: Path, name: str) -> int:
        """Run a ``-d`` daemon, whose parent exits once the child is set up; the child's PID."""
        pid_file.unlink(missing_ok=True)
        with open(log_path, "ab") as log:
            try:
                result = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=self.start_timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired as err:
                raise LibvirtdExited(f"{name} did not daemonize", log_path) from err
        if result.returncode != 0:
            raise LibvirtdExited(
                f"{name} exited with status {result.returncode}:\n{_tail(log_path)}", log_path
            )
        try:
            wait_until(lambda: _read_pid(pid_file) is not None, 10.0, f"{name} PID file {pid_file}")
        except TimeoutError as err:
            raise LibvirtdExited(f"{name} wrote no PID file {pid_file}", log_path) from err
        pid = _read_pid(pid_file)
        assert pid is not None
        return pid

    def _launch_isolated(self) -> None:
        self.reused = False
        libvirtd = find_program("libvirtd")
        unshare = find_program("unshare")
        mount = find_program("mount")
        if libvirtd is None:
            raise LibvirtdMissing(
                "libvirtd is not installed: apt-get install libvirt-daemon-system qemu-system-x86"
            )
        if unshare is None or mount is None:
            raise LibvirtdMissing("unshare/mount are not installed (util-linux, mount)")
        if len(str(self.socket_path)) > _MAX_SOCKET_PATH:
            raise LibvirtdError(
                f"node folder {self.workdir} is too deep: its socket path "
                f"{self.socket_path} is longer than {_MAX_SOCKET_PATH} bytes"
            )
        # A daemon already running on this node folder (a crashed run) is ours to adopt.
        existing = _read_pid(self.pid_file)
        if existing is not None and pid_alive(existing) and probe(self.uri):
            self.pid = existing
            return
        self.prepare_node_folder()
        self.pid_file.unlink(missing_ok=True)
        script_args = [str(self.workdir), libvirtd]
        self.pid = spawn(
            [unshare, "--mount", "--", "/bin/sh", "-c", _ISOLATED_SCRIPT, "sh", *script_args],
            self.log_path,
        )

    def prepare_node_folder(self) -> None:
        """Copy the host's libvirt configuration into the node folder, once.

        Later starts keep what is there: the domains defined on this node and its host UUID.
        """
        marker = self.workdir / "host-uuid"
        if marker.exists():
            return
        host_uuid = str(uuid.uuid4())
        etc = self.workdir / "etc"
        if etc.exists():
            shutil.rmtree(etc)
        _copy_tree(HOST_DIRS["etc"], etc, files=True, skip=_skip_host_definitions)
        _set_options(etc / "libvirtd.conf", {"host_uuid": f'"{host_uuid}"'})
        _set_options(etc / "qemu.conf", {"stdio_handler": '"file"', "cgroup_controllers": "[ ]"})
        # State folders: the layout and owners (QEMU runs as libvirt-qemu), no state.
        _copy_tree(HOST_DIRS["lib"], self.workdir / "lib", files=False, skip=_skip_domain_dirs)
        # The QEMU capabilities cache saves the ~9 s probe; libvirtd checks it is current.
        _copy_tree(HOST_DIRS["cache"], self.workdir / "cache", files=True, skip=None)
        for name in ("run", "log"):
            (self.workdir / name).mkdir(mode=0o755, exist_ok=True)
        marker.write_text(host_uuid + "\n")

    # -- stop ------------------------------------------------------------------

    def stop(self) -> None:
        """Stop what start() started; a reused system daemon is left running."""
        if self.reused:
            self.reused = False
            return
        if self.pid is not None:
            namespace = None
            if self.mode == "isolated":
                self._destroy_domains()
                namespace = self._namespace or _mount_namespace(self.pid)
            stop_pid(self.pid, self.stop_timeout)
            self.pid = None
            if self.mode == "isolated":
                self._kill_leftovers(namespace)
        if self.virtlogd_pid is not None:
            stop_pid(self.virtlogd_pid, self.stop_timeout)
            self.virtlogd_pid = None

    def _destroy_domains(self) -> None:
        """Force off every running domain of an isolated daemon, so no QEMU outlives it."""
        if self.pid is None or not pid_alive(self.pid):
            return
        import libvirt

        libvirt.registerErrorHandler(_silence, None)
        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError:
            return
        try:
            for domain in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                with contextlib.suppress(libvirt.libvirtError):
                    domain.destroy()
        except libvirt.libvirtError:
            pass
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()

    def _kill_leftovers(self, namespace: str | None) -> None:
        """Kill the QEMU processes and helpers an isolated daemon left behind.

        QEMU outlives libvirtd by design, reparented to init, and runs in a mount
        namespace of its own (libvirt's private /dev), so it is found by the PID file
        libvirtd keeps for each running domain in run/qemu/NAME.pid; helpers still in
        the daemon's own namespace are found by that.
        """
        leftovers: set[int] = set()
        for pid_file in sorted((self.workdir / "run" / "qemu").glob("*.pid")):
            pid = _read_pid(pid_file)
            # The PID may have been reused since: it must still be that guest's QEMU.
            if pid is not None and f"guest={pid_file.stem}," in _cmdline(pid):
                leftovers.add(pid)
        if namespace is not None and namespace != _mount_namespace(os.getpid()):
            leftovers.update(_pids_in_mount_namespace(namespace))
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            wait_until(
                lambda: not any(pid_alive(pid) for pid in leftovers),
                10.0,
                f"processes {sorted(leftovers)} to die",
            )

    def _logs_tail(self) -> str:
        parts = [_tail(self.log_path)]
        if self.mode == "isolated":
            parts.append(_tail(self.workdir / "log" / "libvirtd.log"))
        return "\n".join(p for p in parts if p) or "(no output)"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def isolated_daemons(base: Path, names: tuple[str, ...]) -> Iterator[dict[str, LibvirtDaemon]]:
    """Isolated libvirtd daemons, one per name under ``base`` (as separate hosts a domain can
    live-migrate between), ready on entry and stopped on the way out. All are launched before
    any is waited for, so their QEMU probes (when not cached) overlap."""
    daemons = {name: LibvirtDaemon.isolated(base / name) for name in names}
    try:
        for daemon in daemons.values():
            daemon.launch()
        for daemon in daemons.values():
            daemon.wait_ready()
        yield daemons
    finally:
        for daemon in daemons.values():
            daemon.stop()


def _skip_host_definitions(relative: Path) -> bool:
    # The host's own domains and autostart links would start twice on one machine
    # (a second virbr0, the same guest twice); an isolated node starts empty.
    parts = relative.parts
    if len(parts) == 2 and parts[0] == "qemu" and parts[1].endswith(".xml"):
        return True
    return "autostart" in parts[:-1]


def _skip_domain_dirs(relative: Path) -> bool:
    return relative.name.startswith("domain-")


def _copy_tree(src: Path, dst: Path, *, files: bool, skip: Any) -> None:
    """Copy ``src`` to ``dst`` keeping modes and owners (and symlinks), files only if asked."""
    dst.mkdir(parents=True, exist_ok=True)
    _copy_meta(src, dst)
    if not src.is_dir():
        return
    for root, dirs, names in os.walk(src):
        base = Path(root)
        for name in sorted(dirs):
            source = base / name
            relative = source.relative_to(src)
            if skip is not None and skip(relative):
                dirs.remove(name)
                continue
            target = dst / relative
            if source.is_symlink():
                if files:
                    target.symlink_to(os.readlink(source))
                dirs.remove(name)
                continue
            target.mkdir(exist_ok=True)
            _copy_meta(source, target)
        if not files:
            continue
        for name in names:
            source = base / name
            relative = source.relative_to(src)
            if skip is not None and skip(relative):
                continue
            target = dst / relative
            if source.is_symlink():
                target.symlink_to(os.readlink(source))
            elif source.is_file():
                shutil.copy2(source, target)
                _copy_meta(source, target)


def _copy_meta(source: Path, target: Path) -> None:
    stat = source.stat()
    os.chmod(target, stat.st_mode & 0o7777)
    with contextlib.suppress(PermissionError):
        os.chown(target, stat.st_uid, stat.st_gid)


def _set_options(conf: Path, options: dict[str, str]) -> None:
    """Set ``key = value`` lines in a libvirt .conf file, replacing earlier settings."""
    lines = conf.read_text().splitlines() if conf.exists() else []
    kept = [line for line in lines if line.split("=", 1)[0].strip() not in options]
    kept.append("# Set by PVC for an isolated libvirtd")
    kept.extend(f"{key} = {value}" for key, value in options.items())
    mode = conf.stat().st_mode & 0o7777 if conf.exists() else 0o600
    conf.write_text("\n".join(kept) + "\n")
    os.chmod(conf, mode)
