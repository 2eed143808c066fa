"""DomainDriver over libvirt: QEMU/KVM in production, the test driver in tests."""

from __future__ import annotations

import base64
import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar
from xml.sax.saxutils import escape as xml_escape

import libvirt

from hypervisor.console import ConsoleFiles, SimulatedConsoles, console_log_dir, console_log_path
from hypervisor.domain import (
    ConsoleTail,
    DiskSpec,
    DomainDriver,
    DomainInfo,
    DomainSpec,
    DomainState,
    HostFacts,
    LifecycleCallback,
    MigrationProgress,
    MigrationTarget,
    StopReason,
)
from hypervisor.domaintype import (
    DomainTypeChoice,
    choose_domain_type,
    default_domain_type,
    is_local_uri,
)
from hypervisor.domainxml import (
    PVC_METADATA_NS,
    find_owner_tag,
    owner_of_metadata,
    render_domain_xml,
)
from hypervisor.errors import (
    DomainNotFound,
    HypervisorError,
    HypervisorUnavailable,
    InvalidDomain,
    MigrationFailed,
    MigrationUnsupported,
    OperationFailed,
)
from hypervisor.events import ensure_event_loop
from hypervisor.images import create_image
from hypervisor.libvirt_states import domain_state_of, stop_reason_of
from hypervisor.owners import NOT_OURS, OwnerCache

T = TypeVar("T")

ECHO_WINDOW = 5.0
"""Seconds the lifecycle event of this driver's own define or start is held back at most."""

log = logging.getLogger(__name__)


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

_MIGRATE_FLAGS = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PEER2PEER
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
)
"""Live, libvirtd to libvirtd, the definition moved to the target (disks on shared storage)."""

_JOB_MIGRATION_IN = libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN
_JOB_MIGRATION_OUT = libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT


def _silence_libvirt(_ctx: object, _err: object) -> None:
    return None


# libvirt's default handler prints every error to stderr as well as raising
# it; drivers translate errors and the caller logs them once, structured.
libvirt.registerErrorHandler(_silence_libvirt, None)


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

    def __init__(
        self, uri: str, *, domain_type: str | None = None, console_dir: str | None = None
    ) -> None:
        """``console_dir``: where serial console logs go (default: console_log_dir)."""
        self._uri = uri
        self._console_dir = console_dir or console_log_dir(uri)
        self._console_files = ConsoleFiles()
        self._simulated_consoles = SimulatedConsoles()
        fixed = domain_type or default_domain_type(uri)
        why = "configured" if domain_type else "libvirt's test driver"
        self._fixed = DomainTypeChoice(fixed, why) if fixed else None
        self._choice: DomainTypeChoice | None = None
        self._conn: libvirt.virConnect | None = None
        self._closed = False
        self._conn_lock = threading.Lock()
        self._owners = OwnerCache()
        # Two workers creating one disk must not both run qemu-img on its
        # temporary file.
        self._disk_lock = threading.Lock()
        self._lifecycle: LifecycleCallback | None = None
        # (domain, lifecycle event) -> until when that event is the echo of this driver's
        # own define or start, which its caller already knows the outcome of.
        self._echoes: dict[tuple[str, int], float] = {}
        self._echo_lock = threading.Lock()
        # The test driver has no secrets: there they are kept here (uuid -> usage, value).
        self._simulated_secrets: dict[str, tuple[str, bytes]] = {}
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
            log_file = self._console_log(spec.name)
            xml = render_domain_xml(spec, choice.type, log_file)
            with self._echo(spec.name, libvirt.VIR_DOMAIN_EVENT_DEFINED):
                domain = conn.defineXML(xml)
            self._owners.forget(str(domain.UUIDString()))

        self._run("define", spec.name, define)

    def block_resize(self, name: str, target: str, size: int) -> bool:
        if self._uri.startswith("test:"):
            return False  # the test driver's guests hold no image open: grown in the pool

        def resize(conn: libvirt.virConnect) -> bool:
            domain = conn.lookupByName(name)
            if not _is_active(domain):
                return False
            domain.blockResize(target, size, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
            return True

        return self._run("block-resize", name, resize)

    def ensure_ceph_secret(self, uuid: str, usage: str, key: str) -> None:
        try:
            value = base64.b64decode(key.strip(), validate=True)
        except ValueError:  # binascii.Error is one; never show the key itself
            raise OperationFailed(
                f"ceph secret {uuid} ({usage}): the key is not base64",
                operation="ensure-ceph-secret",
            ) from None
        if self._uri.startswith("test:"):
            with self._conn_lock:
                changed = self._simulated_secrets.get(uuid) != (usage, value)
                self._simulated_secrets[uuid] = (usage, value)
            if changed:
                log.info(
                    "event=ceph_secret_simulated uri=%s uuid=%s usage=%s why=%r",
                    self._uri,
                    uuid,
                    usage,
                    "libvirt's test driver has no secrets: kept in this process",
                )
            return
        xml = (
            f"<secret ephemeral='no' private='yes'><uuid>{xml_escape(uuid)}</uuid>"
            f"<usage type='ceph'><name>{xml_escape(usage)}</name></usage></secret>"
        )

        def ensure(conn: libvirt.virConnect) -> None:
            # Defining again updates the definition; the value is set every time, so a
            # changed key takes effect (guests already running keep their connection).
            conn.secretDefineXML(xml).setValue(value)

        self._run("ensure-ceph-secret", "", ensure)

    def start(self, name: str) -> None:
        def start(conn: libvirt.virConnect) -> None:
            domain = conn.lookupByName(name)
            if _is_active(domain):
                return
            try:
                with self._echo(name, libvirt.VIR_DOMAIN_EVENT_STARTED):
                    domain.create()
            except libvirt.libvirtError:
                # Another worker may have started it between the check and
                # the call; that is the state we wanted.
                if _is_active(domain):
                    return
                raise
            if self._uri.startswith("test:"):
                self._simulated_consoles.started(name)

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
        self._simulated_consoles.forget(name)

    def defined_xml(self, name: str) -> str | None:
        def defined_xml(conn: libvirt.virConnect) -> str | None:
            try:
                return str(conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            except libvirt.libvirtError as err:
                if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return None
                raise

        return self._run("defined-xml", name, defined_xml)

    def console_tail(self, name: str, limit: int) -> ConsoleTail | None:
        path = self._console_log(name)
        if path is None:
            return self._simulated_consoles.tail(name, limit)
        return self._console_files.tail(path, limit)

    def _console_log(self, name: str) -> str | None:
        return console_log_path(self._console_dir, name) if self._console_dir else None

    def state(self, name: str) -> DomainState:
        def state(conn: libvirt.virConnect) -> DomainState:
            try:
                state, reason = conn.lookupByName(name).state()
            except libvirt.libvirtError as err:
                if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return DomainState.ABSENT
                raise
            return domain_state_of(int(state), int(reason))

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
            return stop_reason_of(int(reason))

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

    @contextlib.contextmanager
    def _echo(self, name: str, event: int) -> Iterator[None]:
        """Around this driver's own define or start of ``name``: the ``event`` libvirt sends
        for it is not passed on (watch_lifecycle), as its caller knows what it did. Marked
        before the call, as libvirt may deliver the event before the call returns; kept
        ECHO_WINDOW at most, so an event that never came hides no later one."""
        key = (name, event)
        now = time.monotonic()
        with self._echo_lock:
            listened = self._lifecycle is not None  # else nothing to hold back
            if listened:
                if len(self._echoes) > 1024:  # events that never came (libvirt lost them)
                    self._echoes = {k: t for k, t in self._echoes.items() if t >= now}
                self._echoes[key] = now + ECHO_WINDOW
        try:
            yield
        except BaseException:
            if listened:
                with self._echo_lock:
                    self._echoes.pop(key, None)
            raise

    def _is_echo(self, name: str, event: int) -> bool:
        with self._echo_lock:
            if event not in (libvirt.VIR_DOMAIN_EVENT_DEFINED, libvirt.VIR_DOMAIN_EVENT_STARTED):
                # Anything else happened to the domain since: what follows is news.
                self._echoes.pop((name, libvirt.VIR_DOMAIN_EVENT_DEFINED), None)
                self._echoes.pop((name, libvirt.VIR_DOMAIN_EVENT_STARTED), None)
                return False
            until = self._echoes.pop((name, event), None)
        return until is not None and time.monotonic() <= until

    def _on_lifecycle(
        self, _conn: object, domain: libvirt.virDomain, _event: int, _detail: int, _opaque: object
    ) -> None:
        if _event == libvirt.VIR_DOMAIN_EVENT_DEFINED:
            with contextlib.suppress(libvirt.libvirtError):
                self._owners.forget(str(domain.UUIDString()))
        callback = self._lifecycle
        if callback is None:
            return
        try:
            name = str(domain.name())
            if self._is_echo(name, _event):
                return  # this driver's own define or start: its caller knows (issue 16)
            callback(name)
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
                state=domain_state_of(int(state), int(reason)),
                owner_tag=owner,
            )

        return self._run("info", name, info)

    def list_managed(self) -> list[DomainInfo]:
        def list_managed(conn: libvirt.virConnect) -> list[DomainInfo]:
            managed: list[DomainInfo] = []
            listed = []
            for domain in conn.listAllDomains(0):
                # The owner once per domain (hypervisor/owners.py), not on every listing.
                try:
                    uuid = str(domain.UUIDString())
                    listed.append(uuid)
                    owner = self._owners.owner(uuid, functools.partial(_owner_of, domain))
                    if owner is NOT_OURS:
                        continue
                    state, reason = domain.state()
                except libvirt.libvirtError as err:
                    # Undefined between the listing and this call.
                    if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                        continue
                    raise
                managed.append(
                    DomainInfo(
                        name=str(domain.name()),
                        uuid=uuid,
                        state=domain_state_of(int(state), int(reason)),
                        owner_tag=owner,
                    )
                )
            self._owners.keep_only(listed)
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

    def live_migration_problem(self) -> str | None:
        if self._uri.startswith("test:"):
            return f"libvirt's test driver ({self._uri}) cannot live-migrate"
        return None

    def migrate(self, name: str, target: MigrationTarget, *, max_downtime_ms: int) -> None:
        problem = self.live_migration_problem()
        if problem is not None:
            raise MigrationUnsupported(
                f"migrate domain {name!r} to {target.node}: {problem}",
                operation="migrate",
                domain=name,
            )
        # A connection of its own, not through _run: a migration is no idempotent call to
        # repeat, and it holds one of libvirtd's per-client request slots (5 by default) for
        # its whole length, which the shared connection's other calls must not wait for.
        with self._conn_lock:
            closed = self._closed
        if closed:
            raise HypervisorUnavailable(
                f"migrate domain {name!r}: driver for {self._uri} is closed",
                operation="migrate",
                domain=name,
            )
        conn = self._connect("migrate", name)
        params: dict[str, object] = {}
        if target.address:
            params[libvirt.VIR_MIGRATE_PARAM_URI] = target.address
        try:
            domain = conn.lookupByName(name)
            try:
                domain.migrateSetMaxDowntime(max_downtime_ms, 0)
            except libvirt.libvirtError as err:
                log.warning(
                    "event=max_downtime_not_set vm=%s error=%s", name, err.get_error_message()
                )
            domain.migrateToURI3(target.uri, params, _MIGRATE_FLAGS)
        except libvirt.libvirtError as err:
            message = f"migrate domain {name!r} to {target.node}: {err.get_error_message()}"
            if not _is_alive(conn):
                raise HypervisorUnavailable(message, operation="migrate", domain=name) from err
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise DomainNotFound(message, operation="migrate", domain=name) from err
            raise MigrationFailed(message, operation="migrate", domain=name) from err
        finally:
            _close_quietly(conn)

    def migration_progress(self, name: str) -> MigrationProgress | None:
        def progress(conn: libvirt.virConnect) -> MigrationProgress | None:
            try:
                stats = conn.lookupByName(name).jobStats(0)
            except libvirt.libvirtError as err:
                # Absent, or not running (QEMU refuses job stats of an inactive domain): no
                # migration either way.
                if err.get_error_code() in (
                    libvirt.VIR_ERR_NO_DOMAIN,
                    libvirt.VIR_ERR_OPERATION_INVALID,
                ):
                    return None
                raise
            if not stats or stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) in (
                libvirt.VIR_DOMAIN_JOB_NONE,
                libvirt.VIR_DOMAIN_JOB_COMPLETED,
            ):
                return None
            operation = stats.get("operation")
            if operation not in (_JOB_MIGRATION_IN, _JOB_MIGRATION_OUT):
                return None  # a save, dump, snapshot: no migration

            def number(key: str) -> int | None:
                value = stats.get(key)
                return int(value) if value is not None else None

            return MigrationProgress(
                data_total=number("data_total"),
                data_processed=number("data_processed"),
                data_remaining=number("data_remaining"),
                elapsed_ms=number("time_elapsed"),
                outgoing=operation == _JOB_MIGRATION_OUT,
            )

        if self.live_migration_problem() is not None:
            return None
        return self._run("migration-progress", name, progress)

    def abort_migration(self, name: str) -> bool:
        def abort(conn: libvirt.virConnect) -> bool:
            try:
                conn.lookupByName(name).abortJob()
            except libvirt.libvirtError as err:
                if err.get_error_code() in (
                    libvirt.VIR_ERR_NO_DOMAIN,
                    libvirt.VIR_ERR_OPERATION_INVALID,
                ):
                    return False  # gone, or no job running
                raise
            return True

        if self.live_migration_problem() is not None:
            return False
        return self._run("abort-migration", name, abort)

    def close(self) -> None:
        with self._conn_lock:
            self._closed = True
            conn, self._conn = self._conn, None
        if conn is not None:
            _close_quietly(conn)

    def create_disk(self, disk: DiskSpec) -> None:
        with self._disk_lock:
            create_image(disk)

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

    def _connect(self, operation: str, domain: str) -> libvirt.virConnect:
        """A new bare connection (no events, no domain type chosen)."""
        try:
            return libvirt.open(self._uri)
        except libvirt.libvirtError as err:
            raise HypervisorUnavailable(
                f"{_describe(operation, domain)}: cannot connect to {self._uri}: "
                f"{err.get_error_message()}",
                operation=operation,
                domain=domain,
            ) from err

    def _open(self, operation: str, domain: str) -> libvirt.virConnect:
        conn = self._connect(operation, domain)
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


def _owner_of(domain: libvirt.virDomain) -> str | None:
    """The owner in ``domain``'s PVC metadata element; NOT_OURS without one."""
    try:
        element = domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, PVC_METADATA_NS, 0)
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
            return NOT_OURS
        raise
    return owner_of_metadata(str(element))


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
