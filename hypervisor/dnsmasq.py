"""dnsmasq for a PVC managed network: DHCP (and optionally DNS for the network's domain).

One ``Dnsmasq`` runs one dnsmasq process per network, bound to the network's gateway
address, with its files in one run folder, named after the network:

- ``<network>.conf``   the configuration, written before each start;
- ``<network>.hosts``  the reservations (``dhcp-hostsfile``), reread on SIGHUP;
- ``<network>.opts``   DHCP options that may change while it runs (``dhcp-optsfile``,
  reread on SIGHUP): the domain name when dnsmasq serves no DNS;
- ``<network>.leases`` the lease file, kept across restarts;
- ``<network>.pid``    written by dnsmasq once its sockets are bound;
- ``<network>.log``    dnsmasq's output, appended to.

Binding is by address (``listen-address`` + ``bind-interfaces`` + ``except-interface=lo``),
never by ``interface=``, which makes dnsmasq bind a wildcard DNS socket as well. DHCP still
binds 0.0.0.0:67 (dnsmasq needs broadcasts; with ``bind-interfaces`` it shares the port with
other dnsmasqs and answers only on the interface that holds its address).

dnsmasq runs as root (``user=root``): by default it drops to an unprivileged user, which
can then no longer reread the hosts file on SIGHUP when the run folder is root's alone.

A dnsmasq is recognised by its command line, which names its conf file: a PID (from the pid
file or remembered) is signalled only while that holds, since PIDs are reused.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Defaults of Dnsmasq's keyword arguments; the daemon passes its config's values.
DEFAULT_RELOAD_TIMEOUT = 5.0  # SIGHUP until dnsmasq logs that it reread the hosts file
# How often start/stop/update look at the process and its files while they wait.
POLL_INTERVAL = 0.05
FIRST_POLL = 0.002
"""Polls start at 2 ms and double up to POLL_INTERVAL: dnsmasq is up in ~10 ms."""


def _pause(last: float | None) -> float:
    """Sleep the next step of a poll's back-off; returns it (give None the first time)."""
    step = FIRST_POLL if last is None else min(last * 2, POLL_INTERVAL)
    time.sleep(step)
    return step


# After SIGKILL, the kernel frees the process within milliseconds; this only bounds a hang.
KILL_TIMEOUT = 5.0
# Bounds the `ip addr show` that checks the bridge holds the address.
IP_COMMAND_TIMEOUT = 10.0
# Lines of dnsmasq's log quoted in a DnsmasqError.
LOG_TAIL_LINES = 15

_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^{_LABEL}\Z")
_DOMAIN = re.compile(rf"^({_LABEL}\.)*{_LABEL}\Z")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z")
_LEASE_TIME = re.compile(r"^(infinite|[1-9][0-9]*[smhdw]?)\Z")
_INTERFACE = re.compile(r"^[A-Za-z0-9_.@-]{1,15}$")


class DnsmasqError(Exception):
    """dnsmasq did not start, stop or reload; the message names the log file."""


def _ipv4(value: str, what: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not an IPv4 address") from None


@dataclass(frozen=True)
class DhcpHost:
    """A reservation: the client with ``mac`` always gets ``ip`` (and ``hostname``)."""

    mac: str
    ip: str
    hostname: str | None = None

    def __post_init__(self) -> None:
        if not _MAC.match(self.mac):
            raise ValueError(f"reservation MAC {self.mac!r} is not like 52:54:00:ab:cd:ef")
        _ipv4(self.ip, "reservation address")
        if self.hostname is not None and not _HOSTNAME.match(self.hostname):
            raise ValueError(f"reservation hostname {self.hostname!r} is not a DNS label")


@dataclass(frozen=True)
class Lease:
    mac: str
    ip: str
    hostname: str | None
    expires: int  # unix seconds; 0 = infinite


@dataclass(frozen=True)
class DnsmasqConfig:
    network: str  # the Network's name (used in file names, a DNS label)
    interface: str  # the bridge, e.g. "vmbr100"
    address: str  # gateway IP: dnsmasq listens on this address only
    prefixlen: int
    range_start: str | None  # None: no dynamic range (reservations only)
    range_end: str | None
    hosts: tuple[DhcpHost, ...] = ()
    domain: str | None = None
    router: str | None = None  # DHCP option 3; default: address
    lease_time: str = "1h"
    dns_port: int = 0  # 0: DHCP only; 53 to serve DNS for `domain` on `address` only

    def __post_init__(self) -> None:
        if not _DNS_LABEL.match(self.network):
            raise ValueError(f"network name {self.network!r} is not a DNS label")
        if not _INTERFACE.match(self.interface):
            raise ValueError(f"interface name {self.interface!r} is not a Linux interface name")
        subnet = self.subnet  # checks address and prefixlen
        if (self.range_start is None) != (self.range_end is None):
            raise ValueError("range_start and range_end are given together or not at all")
        for what, value in (
            ("range_start", self.range_start),
            ("range_end", self.range_end),
            ("router", self.router),
            *(("reservation address", host.ip) for host in self.hosts),
        ):
            if value is not None and _ipv4(value, what) not in subnet:
                raise ValueError(f"{what} {value} is outside {subnet}")
        if self.range_start is not None and self.range_end is not None:
            if _ipv4(self.range_start, "range_start") > _ipv4(self.range_end, "range_end"):
                raise ValueError(f"range {self.range_start}-{self.range_end} is reversed")
        if self.domain is not None and not _DOMAIN.match(self.domain):
            raise ValueError(f"domain {self.domain!r} is not a domain name")
        if not _LEASE_TIME.match(self.lease_time):
            raise ValueError(f"lease time {self.lease_time!r} is not like 1h, 3600 or infinite")
        if not 0 <= self.dns_port <= 65535:
            raise ValueError(f"DNS port {self.dns_port} is not a port number")
        macs = [host.mac for host in self.hosts]
        if len(set(macs)) != len(macs):
            raise ValueError("two reservations have the same MAC")

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        address = _ipv4(self.address, "address")
        if not 0 < self.prefixlen <= 30:
            raise ValueError(f"prefix length {self.prefixlen} leaves no room for DHCP clients")
        return ipaddress.IPv4Network(f"{address}/{self.prefixlen}", strict=False)


@dataclass(frozen=True)
class _Files:
    conf: Path
    hosts: Path
    opts: Path
    leases: Path
    pid: Path
    log: Path

    @classmethod
    def of(cls, rundir: Path, network: str) -> _Files:
        return cls(
            *(
                rundir / f"{network}.{ext}"
                for ext in ("conf", "hosts", "opts", "leases", "pid", "log")
            )
        )


@dataclass(frozen=True)
class _Rendered:
    conf: str
    hosts: str
    opts: str


def _render(config: DnsmasqConfig, files: _Files) -> _Rendered:
    netmask = config.subnet.netmask
    if config.range_start is not None:
        dhcp_range = f"{config.range_start},{config.range_end},{netmask},{config.lease_time}"
    else:
        dhcp_range = f"{config.subnet.network_address},static,{netmask},{config.lease_time}"
    lines = [
        f"# PVC network {config.network}: written by PVC, rewritten on every start",
        "user=root",
        f"pid-file={files.pid}",
        f"dhcp-leasefile={files.leases}",
        f"dhcp-hostsfile={files.hosts}",
        f"dhcp-optsfile={files.opts}",
        "log-facility=-",
        f"listen-address={config.address}",
        "bind-interfaces",
        "except-interface=lo",
        f"port={config.dns_port}",
        "no-resolv",
        "no-hosts",
        f"dhcp-range={dhcp_range}",
        f"dhcp-option=option:router,{config.router or config.address}",
        "dhcp-authoritative",
    ]
    opts = ""
    if config.domain is not None:
        if config.dns_port:
            # With DNS, the domain also names the clients in DNS: only a restart changes it.
            lines += [f"domain={config.domain}", f"local=/{config.domain}/"]
        else:
            opts = f"option:domain-name,{config.domain}\n"
    hosts = "".join(
        f"{host.mac},{host.ip}{',' + host.hostname if host.hostname else ''}\n"
        for host in config.hosts
    )
    return _Rendered(conf="\n".join(lines) + "\n", hosts=hosts, opts=opts)


def _argv(pid: int) -> list[str]:
    """The process's arguments; [] when it is gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")[:-1] if raw else []


def _runs_conf(pid: int, conf: Path) -> bool:
    """``pid`` is a live process whose command line names ``conf`` as its conf file."""
    return pid > 0 and f"--conf-file={conf}" in _argv(pid)


def _gone(pid: int, conf: Path) -> bool:
    """``pid`` no longer runs ``conf``: it is gone, a zombie, or reused by another program.
    An exiting process's command line reads empty before it turns zombie: not gone yet."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    if state in ("Z", "X"):
        return True
    argv = _argv(pid)
    return bool(argv) and f"--conf-file={conf}" not in argv


def remove_files(rundir: Path, network: str) -> None:
    """Remove every file of ``network``'s dnsmasq from ``rundir`` (the network was deleted;
    its server was stopped before)."""
    files = _Files.of(rundir.absolute(), network)
    for path in (files.conf, files.hosts, files.opts, files.leases, files.pid, files.log):
        path.unlink(missing_ok=True)


def stale_instances(rundir: Path) -> list[int]:
    """PIDs of dnsmasq processes whose command line names a conf file in ``rundir``."""
    prefix = f"--conf-file={rundir.absolute()}/"
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        argv = _argv(int(entry.name))
        if "--keep-in-foreground" not in argv:
            continue
        for arg in argv:
            if arg.startswith(prefix) and arg.endswith(".conf") and "/" not in arg[len(prefix) :]:
                found.append(int(entry.name))
                break
    return sorted(found)


def _write(path: Path, text: str) -> None:
    """Replace ``path`` whole, so dnsmasq never reads half a file."""
    partial = path.with_name(f".{path.name}.new")
    partial.write_text(text)
    os.chmod(partial, 0o644)
    os.replace(partial, path)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _read_pid(path: Path) -> int | None:
    text = _read(path)
    if text is None or not text.strip().isdigit():
        return None
    return int(text.strip())


class Dnsmasq:
    """One network's dnsmasq: start, reload, stop, adopt after a restart, read its leases.

    The methods are safe to call from several threads.
    """

    def __init__(
        self,
        config: DnsmasqConfig,
        rundir: Path,
        netns: str | None = None,
        binary: str = "dnsmasq",
        *,
        reload_timeout: float = DEFAULT_RELOAD_TIMEOUT,
    ) -> None:
        self._config = config
        self._rundir = rundir.absolute()
        self._netns = netns
        self._binary = binary
        self._reload_timeout = reload_timeout
        self._lock = threading.RLock()
        self._pid: int | None = None
        self._child: subprocess.Popen[bytes] | None = None  # when we started it: to reap it

    @property
    def config(self) -> DnsmasqConfig:
        return self._config

    @property
    def pid(self) -> int | None:
        with self._lock:
            return self._pid if self.running() else None

    @property
    def _files(self) -> _Files:
        return _Files.of(self._rundir, self._config.network)

    def running(self) -> bool:
        with self._lock:
            if self._child is not None:
                self._child.poll()  # reap it if it exited, so its PID reads as gone
            return self._pid is not None and _runs_conf(self._pid, self._files.conf)

    def adopt(self) -> bool:
        """Keep a dnsmasq left running (by a daemon that restarted) if the pid file names a
        process that still runs our conf file."""
        with self._lock:
            if self.running():
                return True
            pid = _read_pid(self._files.pid)
            if pid is None or not _runs_conf(pid, self._files.conf):
                return False
            self._pid, self._child = pid, None
            log.info("event=dnsmasq_adopted network=%s pid=%d", self._config.network, pid)
            return True

    def start(self, timeout: float = 10.0) -> None:
        with self._lock:
            files = self._files
            rendered = _render(self._config, files)
            if self.adopt():
                if _read(files.conf) == rendered.conf:
                    self._reload(rendered)
                    return
                self._stop(timeout)
            self._launch(rendered, timeout)

    def update(self, config: DnsmasqConfig) -> None:
        """Apply ``config``: the reservations and (without DNS) the domain by rewriting the
        hosts and options files and SIGHUP; anything else by a restart. The lease file stays."""
        with self._lock:
            if not self.running():
                self._config = config
                self.start()
                return
            old = _render(self._config, self._files)
            new = _render(config, _Files.of(self._rundir, config.network))
            if new.conf == old.conf:
                self._config = config
                self._reload(new)
                return
            log.info("event=dnsmasq_restart network=%s reason=config_changed", config.network)
            self._stop(KILL_TIMEOUT)
            self._config = config
            self.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._stop(timeout)

    def seed_leases(self, leases: list[Lease]) -> None:
        """Before a start: the lease file holds ``leases`` (those another server handed out,
        carried through the store), so this server knows them and they stay taken. Refused
        while it runs (dnsmasq owns the file then)."""
        with self._lock:
            if self.running():
                raise DnsmasqError(f"{self._config.network}: leases are seeded before a start only")
            lines = [
                f"{lease.expires} {lease.mac} {lease.ip} {lease.hostname or '*'} *"
                for lease in leases
            ]
            self._rundir.mkdir(parents=True, exist_ok=True)
            _write(self._files.leases, "".join(f"{line}\n" for line in lines))

    def leases(self) -> list[Lease]:
        """The current IPv4 leases; those already expired are left out."""
        text = _read(self._files.leases) or ""
        now = time.time()
        found: list[Lease] = []
        for line in text.splitlines():
            fields = line.split()
            if len(fields) < 4 or not fields[0].isdigit() or not _MAC.match(fields[1]):
                continue  # a DHCPv6 "duid" line or its leases, or garbage
            expires = int(fields[0])
            if expires and expires <= now:
                continue
            hostname = None if fields[3] == "*" else fields[3]
            found.append(Lease(mac=fields[1], ip=fields[2], hostname=hostname, expires=expires))
        return found

    def lease_mtime(self) -> float | None:
        try:
            return self._files.leases.stat().st_mtime
        except FileNotFoundError:
            return None

    # The rest runs under self._lock.

    def _check_address(self) -> None:
        """The bridge holds the address: else dnsmasq serving DHCP only would start and
        quietly answer no one (it binds no socket to the address, so it cannot fail)."""
        config = self._config
        argv = ["ip", "-j", *(("-n", self._netns) if self._netns else ()), "addr", "show"]
        try:
            result = subprocess.run(
                [*argv, "dev", config.interface],
                capture_output=True,
                text=True,
                timeout=IP_COMMAND_TIMEOUT,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DnsmasqError(
                f"dnsmasq for network {config.network}: cannot run `ip` to read the "
                f"addresses of {config.interface}: {exc}"
            ) from exc
        if result.returncode != 0:
            raise DnsmasqError(
                f"dnsmasq for network {config.network}: cannot read the addresses of "
                f"{config.interface}: {result.stderr.strip()}"
            )
        held = {
            f"{entry['local']}/{entry['prefixlen']}"
            for link in json.loads(result.stdout or "[]")
            for entry in link.get("addr_info", ())
        }
        if f"{config.address}/{config.prefixlen}" not in held:
            holds = ", ".join(sorted(held)) or "no address"
            raise DnsmasqError(
                f"dnsmasq for network {config.network}: {config.interface} does not hold "
                f"{config.address}/{config.prefixlen} (it holds {holds})"
            )

    def _launch(self, rendered: _Rendered, timeout: float) -> None:
        files = self._files
        self._check_address()
        files.conf.parent.mkdir(parents=True, exist_ok=True)
        for pid in self._strays():
            self._terminate(pid, timeout)
        _write(files.hosts, rendered.hosts)
        _write(files.opts, rendered.opts)
        _write(files.conf, rendered.conf)
        files.pid.unlink(missing_ok=True)
        argv = [self._binary, "--keep-in-foreground", f"--conf-file={files.conf}"]
        if self._netns is not None:
            argv = ["ip", "netns", "exec", self._netns, *argv]
        log_start = self._log_size()
        with open(files.log, "ab") as output:
            try:
                child = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise DnsmasqError(
                    f"dnsmasq for network {self._config.network} did not run: {exc}"
                ) from exc
        self._pid, self._child = child.pid, child
        deadline = time.monotonic() + timeout
        pause: float | None = None
        while True:
            code = child.poll()
            if code is not None:
                self._pid, self._child = None, None
                raise DnsmasqError(
                    f"dnsmasq for network {self._config.network} exited with code {code} "
                    f"while starting; its log {files.log} says:\n{self._log_tail(log_start)}"
                )
            written = _read_pid(files.pid)
            if written is not None and _runs_conf(written, files.conf):
                self._pid = written  # the same PID unless `binary` is a wrapper that forks
                log.info(
                    "event=dnsmasq_started network=%s pid=%d interface=%s address=%s",
                    self._config.network,
                    written,
                    self._config.interface,
                    self._config.address,
                )
                return
            if time.monotonic() >= deadline:
                self._stop(KILL_TIMEOUT)
                raise DnsmasqError(
                    f"dnsmasq for network {self._config.network} wrote no pid file within "
                    f"{timeout:g}s; its log {files.log} says:\n{self._log_tail(log_start)}"
                )
            pause = _pause(pause)

    def _reload(self, rendered: _Rendered) -> None:
        """Rewrite the files dnsmasq rereads on SIGHUP; signal it if they changed, and wait
        until it logs that it reread them."""
        files = self._files
        if _read(files.hosts) == rendered.hosts and _read(files.opts) == rendered.opts:
            return
        _write(files.hosts, rendered.hosts)
        _write(files.opts, rendered.opts)
        log_start = self._log_size()
        pid = self._pid
        if pid is None or not _runs_conf(pid, files.conf):
            raise DnsmasqError(f"dnsmasq for network {self._config.network} is not running")
        os.kill(pid, signal.SIGHUP)
        reread = f"read {files.opts}"  # dnsmasq rereads the hosts file, then the options file
        deadline = time.monotonic() + self._reload_timeout
        pause: float | None = None
        while reread not in self._log_since(log_start):
            if time.monotonic() >= deadline:
                raise DnsmasqError(
                    f"dnsmasq for network {self._config.network} (PID {pid}) did not reread "
                    f"{files.hosts} within {self._reload_timeout:g}s of SIGHUP; its log "
                    f"{files.log} says:\n{self._log_tail(log_start)}"
                )
            pause = _pause(pause)
        log.info(
            "event=dnsmasq_reloaded network=%s pid=%d reservations=%d",
            self._config.network,
            pid,
            len(self._config.hosts),
        )

    def _stop(self, timeout: float) -> None:
        files = self._files
        pids = {pid for pid in (self._pid, _read_pid(files.pid)) if pid is not None}
        for pid in sorted(pids | set(self._strays())):
            self._terminate(pid, timeout)
        if self._child is not None:
            self._child.poll()
        self._pid, self._child = None, None
        written = _read_pid(files.pid)
        if written is not None and not _runs_conf(written, files.conf):
            files.pid.unlink(missing_ok=True)  # dnsmasq removes it itself unless killed

    def _terminate(self, pid: int, timeout: float) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; each only while ``pid`` runs our conf."""
        conf = self._files.conf
        for signum, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, KILL_TIMEOUT)):
            if not _runs_conf(pid, conf):
                return
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            pause: float | None = None
            while time.monotonic() < deadline:
                if self._child is not None and self._child.pid == pid:
                    self._child.poll()
                if _gone(pid, conf):
                    log.info(
                        "event=dnsmasq_stopped network=%s pid=%d signal=%s",
                        self._config.network,
                        pid,
                        signum.name,
                    )
                    return
                pause = _pause(pause)
        raise DnsmasqError(
            f"dnsmasq for network {self._config.network} (PID {pid}) outlived SIGKILL; "
            f"see {self._files.log}"
        )

    def _strays(self) -> list[int]:
        """dnsmasqs running our conf file that we do not know of (from before a crash)."""
        conf = self._files.conf
        return [pid for pid in stale_instances(self._rundir) if _runs_conf(pid, conf)]

    def _log_size(self) -> int:
        try:
            return self._files.log.stat().st_size
        except FileNotFoundError:
            return 0

    def _log_since(self, offset: int) -> str:
        try:
            with open(self._files.log, "rb") as output:
                output.seek(offset)
                return output.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _log_tail(self, offset: int) -> str:
        lines = self._log_since(offset).splitlines()[-LOG_TAIL_LINES:]
        return "\n".join(lines) if lines else "(nothing)"


__all__ = [
    "DhcpHost",
    "Dnsmasq",
    "DnsmasqConfig",
    "DnsmasqError",
    "Lease",
    "stale_instances",
]
