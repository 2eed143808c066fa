"""DomainDriver over libvirt: QEMU/KVM in production, the test driver in tests."""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import stat
import subprocess
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

import libvirt

from hypervisor.domain import (
    DiskSpec,
    DomainDriver,
    DomainInfo,
    DomainSpec,
    DomainState,
    HostFacts,
    LifecycleCallback,
    StopReason,
)
from hypervisor.domainxml import find_owner_tag, render_domain_xml
from hypervisor.errors import (
    DomainNotFound,
    HypervisorError,
    HypervisorUnavailable,
    InvalidDomain,
    OperationFailed,
)
from hypervisor.events import ensure_event_loop

T = TypeVar("T")

log = logging.getLogger(__name__)

QEMU_IMG = "qemu-img"
KVM_DEVICE = "/dev/kvm"

_INVALID_CODES = frozenset(
    {libvirt.VIR_ERR_XML_ERROR, libvirt.VIR_ERR_CONFIG_UNSUPPORTED, libvirt.VIR_ERR_XML_DETAIL}
)
# Not VIR_ERR_SYSTEM_ERROR: libvirt reports any failed syscall on the host
# with it, e.g. starting a domain whose bridge does not exist ("Cannot get
# interface MTU"). A system error means the hypervisor is gone only when the
# connection is gone too, and _run checks that separately.
_UNAVAILABLE_CODES = frozenset({libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_RPC})

# A domain may carry state that blocks a plain undefine (a managed save
# image, snapshots, checkpoints, UEFI variables); PVC's spec is the whole
# truth, so all of it goes.
_UNDEFINE_ALL = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
)
# The test driver rejects the checkpoint and NVRAM flags (libvirt 9.0).
_UNDEFINE_BASIC = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
)

_STOP_REASONS = {
    libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN: StopReason.GUEST_SHUTDOWN,
    libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED: StopReason.DESTROYED,
    libvirt.VIR_DOMAIN_SHUTOFF_CRASHED: StopReason.CRASHED,
    libvirt.VIR_DOMAIN_SHUTOFF_FAILED: StopReason.CRASHED,
    libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED: StopReason.MIGRATED,
}

_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: DomainState.RUNNING,
    # Blocked means waiting on a resource (idle vCPUs, I/O): the guest runs.
    libvirt.VIR_DOMAIN_BLOCKED: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: DomainState.PAUSED,
    # Suspended to RAM by the guest: its memory is alive, so it is held, like paused.
    libvirt.VIR_DOMAIN_PMSUSPENDED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: DomainState.SHUTTING_DOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: DomainState.SHUTOFF,
    libvirt.VIR_DOMAIN_CRASHED: DomainState.CRASHED,
}


def _silence_libvirt(_ctx: object, _err: object) -> None:
    return None


# libvirt's default handler prints every error to stderr as well as raising
# it; drivers translate errors and the caller logs them once, structured.
libvirt.registerErrorHandler(_silence_libvirt, None)


@dataclass(frozen=True)
class DomainTypeChoice:
    """The type this driver gives domains, and why; type None: the host can run none."""

    type: str | None
    why: str


def default_domain_type(uri: str) -> str | None:
    """The type the URI alone decides ("test" for libvirt's test driver), else None:
    then libvirt's capabilities decide, once connected (choose_domain_type)."""
    # The scheme may carry a transport: test+unix:///... is the test driver too.
    driver = uri.split(":", 1)[0].split("+", 1)[0]
    return "test" if driver == "test" else None


def is_local_uri(uri: str) -> bool:
    """Whether the hypervisor behind ``uri`` runs on this machine (and so uses its /dev/kvm)."""
    return urlsplit(uri).hostname in (None, "", "localhost", "127.0.0.1", "::1")


def choose_domain_type(
    capabilities_xml: str, *, local: bool, kvm_device: str = KVM_DEVICE
) -> DomainTypeChoice:
    """kvm if libvirt offers it for the host's architecture and (on this machine) QEMU's
    user can open the KVM device; else qemu (TCG) if offered; else None.

    ``capabilities_xml`` is libvirt's getCapabilities(): the guest domain types it can
    run per architecture, from the same probe of QEMU as the domain capabilities, and
    the user and group QEMU runs as (the DAC security label). libvirt offers kvm when
    the device exists even where QEMU's user cannot open it (a host without udev's rule
    has /dev/kvm root-only), and every kvm guest then fails to start ("Could not access
    KVM kernel module: Permission denied"); hence the check of the device itself.
    """
    caps = ET.fromstring(capabilities_xml)
    arch = caps.findtext("host/cpu/arch") or os.uname().machine
    offered = {
        str(domain.get("type"))
        for guest in caps.iterfind("guest")
        if guest.findtext("os_type") == "hvm"
        for domain in guest.iterfind(f"arch[@name='{arch}']/domain")
    }
    if "kvm" in offered:
        label = caps.findtext("host/secmodel[model='dac']/baselabel[@type='kvm']")
        kvm_problem = qemu_kvm_access_problem(label, kvm_device) if local else None
        if kvm_problem is None:
            return DomainTypeChoice("kvm", f"libvirt offers kvm guests for {arch}")
    else:
        kvm_problem = f"libvirt offers no kvm guests for {arch}"
    if "qemu" in offered:
        return DomainTypeChoice("qemu", f"{kvm_problem}: guests are emulated (TCG), far slower")
    return DomainTypeChoice(None, f"{kvm_problem}, nor qemu (TCG) guests")


def qemu_kvm_access_problem(dac_label: str | None, kvm_device: str = KVM_DEVICE) -> str | None:
    """Why QEMU, run as libvirt's DAC label ("+UID:+GID"), cannot open the KVM device
    read-write; None when it can, or when that cannot be told from here."""
    try:
        uid, gid = (int(part.lstrip("+")) for part in (dac_label or "").split(":"))
    except ValueError:
        return None
    try:
        device = os.stat(kvm_device)
    except FileNotFoundError:
        return f"{kvm_device} does not exist"
    except OSError:
        return None
    if uid == 0 or _has_acl(kvm_device):
        return None  # root opens it; an ACL decides beyond the mode bits
    # As libvirt sets them (virGetGroupList): the user's groups, with its primary group
    # from passwd (on Debian, libvirt-qemu's is kvm), plus the label's group.
    try:
        entry = pwd.getpwuid(uid)
        user, groups = entry.pw_name, {gid, *os.getgrouplist(entry.pw_name, entry.pw_gid)}
    except KeyError:
        user, groups = str(uid), {gid}
    if device.st_uid == uid:
        shift = 6
    elif device.st_gid in groups:
        shift = 3
    else:
        shift = 0
    if (device.st_mode >> shift) & 0o6 == 0o6:
        return None
    return (
        f"QEMU runs as {user} (groups {_group_names(groups)}), which cannot open {kvm_device} "
        f"({stat.filemode(device.st_mode)} {_user_name(device.st_uid)}:"
        f"{_group_names({device.st_gid})}); Debian's udev rule makes it root:kvm 0660 "
        "(on a host without it: scripts/setup-host.sh)"
    )


def _has_acl(path: str) -> bool:
    try:
        return "system.posix_acl_access" in os.listxattr(path)
    except OSError:
        return False


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_names(gids: set[int]) -> str:
    names = []
    for gid in sorted(gids):
        try:
            names.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            names.append(str(gid))
    return ",".join(names)


class LibvirtDriver(DomainDriver):
    """A DomainDriver over one libvirt connection, shared by all threads.

    The connection opens on first use, so a node daemon can start before
    libvirtd and report HypervisorUnavailable until it is up. A connection
    found dead is reopened once per call. On test:// URIs a reopen starts
    from the host file again, since the test driver keeps state per
    connection.

    The domain type is chosen at every (re)open from what libvirt says it can
    run (choose_domain_type), unless the URI or ``domain_type`` fixes it, and
    logged when it changes.
    """

    def __init__(self, uri: str, *, domain_type: str | None = None) -> None:
        self._uri = uri
        fixed = domain_type or default_domain_type(uri)
        why = "configured" if domain_type else "libvirt's test driver"
        self._fixed = DomainTypeChoice(fixed, why) if fixed else None
        self._choice: DomainTypeChoice | None = None
        self._conn: libvirt.virConnect | None = None
        self._closed = False
        self._conn_lock = threading.Lock()
        # Two workers creating one disk must not both run qemu-img on its
        # temporary file.
        self._disk_lock = threading.Lock()
        self._lifecycle: LifecycleCallback | None = None
        # Before any connection opens: libvirt delivers events only on connections
        # opened after the loop is registered.
        ensure_event_loop()

    @property
    def uri(self) -> str:
        return self._uri

    @property
    def domain_type(self) -> str | None:
        """The type domains get; None until the first connection, or where none can run."""
        return self.domain_type_choice.type

    @property
    def domain_type_choice(self) -> DomainTypeChoice:
        """The domain type and why: made when the connection (re)opens."""
        return (
            self._choice
            or self._fixed
            or DomainTypeChoice(None, f"not connected to {self._uri} yet")
        )

    def define(self, spec: DomainSpec) -> None:
        def define(conn: libvirt.virConnect) -> None:
            choice = self.domain_type_choice
            if choice.type is None:
                raise OperationFailed(
                    f"define domain {spec.name!r}: {self._uri} can run no guests: {choice.why}",
                    operation="define",
                    domain=spec.name,
                )
            conn.defineXML(render_domain_xml(spec, choice.type))

        self._run("define", spec.name, define)

    def start(self, name: str) -> None:
        def start(conn: libvirt.virConnect) -> None:
            domain = conn.lookupByName(name)
            if _is_active(domain):
                return
            try:
                domain.create()
            except libvirt.libvirtError:
                # Another worker may have started it between the check and
                # the call; that is the state we wanted.
                if _is_active(domain):
                    return
                raise

        self._run("start", name, start)

    def shutdown(self, name: str) -> None:
        def shutdown(conn: libvirt.virConnect) -> None:
            domain = conn.lookupByName(name)
            if not _is_active(domain):
                return
            try:
                domain.shutdown()
            except libvirt.libvirtError:
                if not _is_active(domain):
                    return
                raise

        self._run("shutdown", name, shutdown)

    def destroy(self, name: str) -> None:
        self._run("destroy", name, lambda conn: _destroy(conn.lookupByName(name)))

    def undefine(self, name: str) -> None:
        def undefine(conn: libvirt.virConnect) -> None:
            try:
                domain = conn.lookupByName(name)
                _destroy(domain)
                try:
                    domain.undefineFlags(_UNDEFINE_ALL)
                except libvirt.libvirtError as err:
                    if err.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
                        raise
                    domain.undefineFlags(_UNDEFINE_BASIC)
            except libvirt.libvirtError as err:
                # Absent from the start, or a transient domain that the
                # destroy above already removed.
                if err.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise

        self._run("undefine", name, undefine)

    def state(self, name: str) -> DomainState:
        def state(conn: libvirt.virConnect) -> DomainState:
            try:
                state, reason = conn.lookupByName(name).state()
            except libvirt.libvirtError as err:
                if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return DomainState.ABSENT
                raise
            return _domain_state(int(state), int(reason))

        return self._run("state", name, state)

    def stop_reason(self, name: str) -> StopReason:
        def stop_reason(conn: libvirt.virConnect) -> StopReason:
            try:
                state, reason = conn.lookupByName(name).state()
            except libvirt.libvirtError as err:
                if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return StopReason.NOT_STOPPED
                raise
            if state == libvirt.VIR_DOMAIN_CRASHED:
                return StopReason.CRASHED
            if state != libvirt.VIR_DOMAIN_SHUTOFF:
                return StopReason.NOT_STOPPED
            return _STOP_REASONS.get(int(reason), StopReason.OTHER)

        return self._run("stop-reason", name, stop_reason)

    def watch_lifecycle(self, callback: LifecycleCallback) -> None:
        with self._conn_lock:
            self._lifecycle = callback
            conn = self._conn
        if conn is not None:
            self._register_events(conn)

    def _register_events(self, conn: libvirt.virConnect) -> None:
        if self._lifecycle is None:
            return
        try:
            conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None
            )
        except libvirt.libvirtError as err:
            # Without events the periodic resync still converges, only slower.
            log.warning(
                "event=lifecycle_events_unavailable uri=%s error=%s",
                self._uri,
                err.get_error_message(),
            )

    def _on_lifecycle(
        self, _conn: object, domain: libvirt.virDomain, _event: int, _detail: int, _opaque: object
    ) -> None:
        callback = self._lifecycle
        if callback is None:
            return
        try:
            callback(str(domain.name()))
        except Exception:  # never let a callback bug kill libvirt's event thread
            log.exception("event=lifecycle_callback_failed uri=%s", self._uri)

    def info(self, name: str) -> DomainInfo | None:
        def info(conn: libvirt.virConnect) -> DomainInfo | None:
            try:
                domain = conn.lookupByName(name)
                xml = str(domain.XMLDesc(0))
                state, reason = domain.state()
            except libvirt.libvirtError as err:
                if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return None
                raise
            owner = find_owner_tag(xml)
            if owner is None:
                return None
            return DomainInfo(
                name=name,
                uuid=str(domain.UUIDString()),
                state=_domain_state(int(state), int(reason)),
                owner_tag=owner,
            )

        return self._run("info", name, info)

    def list_managed(self) -> list[DomainInfo]:
        def list_managed(conn: libvirt.virConnect) -> list[DomainInfo]:
            managed: list[DomainInfo] = []
            for domain in conn.listAllDomains(0):
                try:
                    xml = str(domain.XMLDesc(0))
                    state, reason = domain.state()
                except libvirt.libvirtError as err:
                    # Undefined between the listing and this call.
                    if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                        continue
                    raise
                owner = find_owner_tag(xml)
                if owner is None:
                    continue
                managed.append(
                    DomainInfo(
                        name=str(domain.name()),
                        uuid=str(domain.UUIDString()),
                        state=_domain_state(int(state), int(reason)),
                        owner_tag=owner,
                    )
                )
            return managed

        return self._run("list", "", list_managed)

    def host_facts(self) -> HostFacts:
        def host_facts(conn: libvirt.virConnect) -> HostFacts:
            # getInfo(): [model, memory MiB, cpus, MHz, NUMA nodes, sockets, cores, threads]
            info = conn.getInfo()
            free = int(conn.getFreeMemory())
            choice = self.domain_type_choice
            return HostFacts(
                memory_total_bytes=int(info[1]) * 1024 * 1024,
                # 0 is how the test driver (and a failed call) says "unknown";
                # no real host that runs at all has 0 bytes free.
                memory_free_bytes=free or None,
                cpus=int(info[2]),
                # The load of the host this process runs on, which is the
                # hypervisor host for the local URIs PVC uses.
                load1=os.getloadavg()[0],
                hostname=str(conn.getHostname()),
                domain_type=choice.type,
                no_guests_reason=None if choice.type else choice.why,
            )

        return self._run("host-facts", "", host_facts)

    def close(self) -> None:
        with self._conn_lock:
            self._closed = True
            conn, self._conn = self._conn, None
        if conn is not None:
            _close_quietly(conn)

    def create_disk(self, disk: DiskSpec) -> None:
        def failed(why: str) -> OperationFailed:
            return OperationFailed(f"creating disk {disk.path}: {why}", operation="create-disk")

        if disk.size_bytes is None:
            raise failed("no size given")
        with self._disk_lock:
            # lexists: a dangling symlink is an operator's doing; never write through it.
            if os.path.lexists(disk.path):
                return
            folder, base = os.path.split(disk.path)
            partial = os.path.join(folder, f".{base}.creating")
            try:
                os.makedirs(folder, exist_ok=True)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(partial)  # left by a crash half-way: never used
            except OSError as err:
                raise failed(f"cannot prepare its folder: {err.strerror}") from None
            command = [QEMU_IMG, "create", "-q", "-f", disk.format, partial, str(disk.size_bytes)]
            try:
                subprocess.run(command, check=True, capture_output=True, text=True)
                os.rename(partial, disk.path)
            except FileNotFoundError as err:
                raise failed(f"{QEMU_IMG} not found") from err
            except subprocess.CalledProcessError as err:
                raise failed(err.stderr.strip()) from err
            except OSError as err:
                raise failed(f"cannot rename it into place: {err.strerror}") from None
        log.info("event=disk_image_created path=%s size=%d", disk.path, disk.size_bytes)

    def disk_exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def _run(self, operation: str, domain: str, call: Callable[[libvirt.virConnect], T]) -> T:
        """Run `call` on the connection, translating every libvirt error.

        If the call failed because the connection died, reopen it and try
        once more; every driver method is idempotent, so a repeat is safe.
        """
        conn = self._connection(operation, domain)
        try:
            return call(conn)
        except libvirt.libvirtError as err:
            if _is_alive(conn):
                raise _translate(err, operation, domain, alive=True) from err
        conn = self._reconnect(conn, operation, domain)
        try:
            return call(conn)
        except libvirt.libvirtError as err:
            raise _translate(err, operation, domain, alive=_is_alive(conn)) from err

    def _connection(self, operation: str, domain: str) -> libvirt.virConnect:
        with self._conn_lock:
            if self._closed:
                raise HypervisorUnavailable(
                    f"{_describe(operation, domain)}: driver for {self._uri} is closed",
                    operation=operation,
                    domain=domain,
                )
            if self._conn is None:
                self._conn = self._open(operation, domain)
            return self._conn

    def _reconnect(
        self, dead: libvirt.virConnect, operation: str, domain: str
    ) -> libvirt.virConnect:
        with self._conn_lock:
            if self._closed:
                raise HypervisorUnavailable(
                    f"{_describe(operation, domain)}: driver for {self._uri} is closed",
                    operation=operation,
                    domain=domain,
                )
            # Another thread saw the same failure first and already reopened.
            if self._conn is not None and self._conn is not dead:
                return self._conn
            self._conn = None
            _close_quietly(dead)
            self._conn = self._open(operation, domain)
            return self._conn

    def _open(self, operation: str, domain: str) -> libvirt.virConnect:
        try:
            conn = libvirt.open(self._uri)
        except libvirt.libvirtError as err:
            raise HypervisorUnavailable(
                f"{_describe(operation, domain)}: cannot connect to {self._uri}: "
                f"{err.get_error_message()}",
                operation=operation,
                domain=domain,
            ) from err
        try:
            self._choose_domain_type(conn)
        except libvirt.libvirtError as err:
            _close_quietly(conn)
            raise HypervisorUnavailable(
                f"{_describe(operation, domain)}: cannot read the capabilities of "
                f"{self._uri}: {err.get_error_message()}",
                operation=operation,
                domain=domain,
            ) from err
        self._register_events(conn)
        return conn

    def _choose_domain_type(self, conn: libvirt.virConnect) -> None:
        """Choose (again: libvirtd may have restarted on a changed host); log a change."""
        choice = self._fixed or choose_domain_type(
            str(conn.getCapabilities()), local=is_local_uri(self._uri)
        )
        if choice == self._choice:
            return
        self._choice = choice
        level = logging.INFO if choice.type == "kvm" or self._fixed else logging.WARNING
        log.log(
            level,
            "event=domain_type_chosen uri=%s type=%s why=%r",
            self._uri,
            choice.type or "none",
            choice.why,
        )


def _describe(operation: str, domain: str) -> str:
    return f"{operation} domain {domain!r}" if domain else operation


def _translate(
    err: libvirt.libvirtError, operation: str, domain: str, *, alive: bool
) -> HypervisorError:
    code = err.get_error_code()
    error_type: type[HypervisorError]
    if not alive or code in _UNAVAILABLE_CODES:
        error_type = HypervisorUnavailable
    elif code == libvirt.VIR_ERR_NO_DOMAIN:
        error_type = DomainNotFound
    elif code in _INVALID_CODES:
        error_type = InvalidDomain
    else:
        error_type = OperationFailed
    message = f"{_describe(operation, domain)}: {err.get_error_message()}"
    return error_type(message, operation=operation, domain=domain)


def _domain_state(state: int, reason: int) -> DomainState:
    # QEMU reports a guest crash with on_crash=destroy (libvirt's default) as
    # shut off for reason "crashed"; RerunOnFailure needs to see it as such.
    if state == libvirt.VIR_DOMAIN_SHUTOFF and reason == libvirt.VIR_DOMAIN_SHUTOFF_CRASHED:
        return DomainState.CRASHED
    return _STATES.get(state, DomainState.OTHER)


def _is_active(domain: libvirt.virDomain) -> bool:
    # A domain that vanished is not running; any other failure (a dead
    # connection) must not pass for "not running".
    try:
        return bool(domain.isActive())
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return False
        raise


def _destroy(domain: libvirt.virDomain) -> None:
    if not _is_active(domain):
        return
    try:
        domain.destroy()
    except libvirt.libvirtError:
        # Stopped on its own, or by another worker, since the check.
        if _is_active(domain):
            raise


def _is_alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def _close_quietly(conn: libvirt.virConnect) -> None:
    # Closing a connection that already died can fail; it is gone either way.
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()
