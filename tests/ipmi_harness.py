"""A real IPMI endpoint per test node: OpenStack's virtualbmc in front of a tiny libvirt
"chassis" domain, and a watcher that turns that chassis' power into the node's life.

- ``VirtualBmcDaemon``: ``vbmcd --foreground`` as a plain process with its own config
  file (``VIRTUALBMC_CONFIG``), HOME, BMC folder and ZeroMQ control port, so it never
  meets another vbmcd on the machine. ``vbmc`` (the CLI) talks to it through that port.
  vbmcd forks one child per started BMC; ``stop()`` stops the BMCs, then vbmcd, then
  any child left, each by its PID.
- ``IpmiHarness``: for each node, a diskless 64 MiB KVM domain on ``qemu:///system``
  (``pvc-chassis-<run>-<node>``) and a BMC on a free UDP port of 127.0.0.1 whose chassis
  is that domain (``vbmc add/start``). A watcher thread per node polls its chassis every
  100 ms (and its libvirt domain ID, new at every start, so no off/on pair is missed):
  running → off is a power loss (SIGKILL the node's pvcnoded through
  ``LocalCluster.kill_node``; a test-driver node's hypervisor dies with it), off →
  running is a boot (``LocalCluster.start_node``). Every transition is recorded with
  its monotonic time in ``events``; a failing reaction goes to ``errors``.

The harness owns what it creates and removes all of it: the BMCs, vbmcd and its
children, and the chassis domains (destroyed and undefined). It never touches other
domains of the host's libvirtd.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from localcluster.process import free_port, pid_alive, wait_until

SYSTEM_URI = "qemu:///system"
CHASSIS_MEMORY_MIB = 64
POLL_INTERVAL = 0.1
IPMI_USER = "pvcfence"


def find_tool(name: str) -> str | None:
    """``name`` next to this Python (the venv's console scripts) or on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name)


def ipmi_skip_reason() -> str | None:
    """Why the real-IPMI harness cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "the IPMI harness needs root (chassis domains on qemu:///system)"
    if not os.path.exists("/dev/kvm"):
        return "the IPMI harness needs /dev/kvm for its chassis domains"
    if find_tool("ipmitool") is None:
        return "the IPMI harness needs ipmitool (apt-get install ipmitool)"
    for tool in ("vbmc", "vbmcd"):
        if find_tool(tool) is None:
            return f"the IPMI harness needs {tool} (pip install virtualbmc, in the dev extra)"
    return None


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that is free now, and whose TCP twin is free as well."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        with socket.socket() as tcp:
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def ipmitool(
    port: int, user: str, password: str, *args: str, timeout: float = 10.0
) -> subprocess.CompletedProcess[str]:
    """Run ``ipmitool -I lanplus`` against 127.0.0.1:port, the password in the environment
    (``-E``) as the product's agent passes it, so it shows up in no process listing."""
    tool = find_tool("ipmitool") or "ipmitool"
    argv = [tool, "-I", "lanplus", "-H", "127.0.0.1", "-p", str(port), "-U", user, "-E", *args]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "IPMI_PASSWORD": password},
    )


def chassis_xml(name: str, domain_uuid: str) -> str:
    """A diskless 64 MiB KVM guest: no OS, no devices; only its power state matters.

    Plain XML, without PVC's metadata, so no pvcnoded could take it for one of its VMs."""
    return f"""<domain type='kvm'>
  <name>{name}</name>
  <uuid>{domain_uuid}</uuid>
  <memory unit='MiB'>{CHASSIS_MEMORY_MIB}</memory>
  <currentMemory unit='MiB'>{CHASSIS_MEMORY_MIB}</currentMemory>
  <vcpu>1</vcpu>
  <os><type>hvm</type><boot dev='hd'/></os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices><memballoon model='none'/></devices>
</domain>
"""


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (through /proc/PID/task/*/children), deepest last."""
    found: list[int] = []
    queue = [pid]
    while queue:
        parent = queue.pop(0)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{parent}/task"):
                with contextlib.suppress(OSError):
                    text = Path(f"/proc/{parent}/task/{task}/children").read_text()
                    for child in text.split():
                        if int(child) not in found:
                            found.append(int(child))
                            queue.append(int(child))
    return found


def _wait_gone(pids: list[int], timeout: float) -> bool:
    try:
        wait_until(lambda: not any(pid_alive(pid) for pid in pids), timeout, f"{pids} to exit")
    except TimeoutError:
        return False
    return True


class HarnessError(RuntimeError):
    pass


class VirtualBmcDaemon:
    """One ``vbmcd --foreground`` with everything of its own under ``workdir``."""

    def __init__(self, workdir: Path, *, start_timeout: float = 20.0) -> None:
        self.workdir = Path(workdir).absolute()
        self.start_timeout = start_timeout
        self.control_port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_seconds: float | None = None
        self._children: set[int] = set()

    @property
    def config_file(self) -> Path:
        return self.workdir / "virtualbmc.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "vbmcd.log"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "VIRTUALBMC_CONFIG": str(self.config_file), "HOME": str(self.workdir)}

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> Self:
        vbmcd = find_tool("vbmcd")
        if vbmcd is None:
            raise HarnessError("vbmcd is not installed (pip install virtualbmc)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "bmcs").mkdir(exist_ok=True)
        self.control_port = free_port()
        self.config_file.write_text(
            "[default]\n"
            f"config_dir = {self.workdir / 'bmcs'}\n"
            f"pid_file = {self.workdir / 'vbmcd.pid'}\n"
            f"server_port = {self.control_port}\n"
            "server_response_timeout = 5000\n"
            "[log]\n"
            f"logfile = {self.log_path}\n"
            "debug = false\n"
        )
        started = time.monotonic()
        with open(self.workdir / "vbmcd.out", "ab") as out:
            self.process = subprocess.Popen(
                [vbmcd, "--foreground"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.workdir,
            )
        process = self.process

        def answers() -> bool:
            if process.poll() is not None:
                raise HarnessError(f"vbmcd exited with {process.returncode}: {self._tail()}")
            return self.vbmc("list", check=False).returncode == 0

        try:
            wait_until(answers, self.start_timeout, "vbmcd", 0.1)
        except TimeoutError:
            self.stop()
            raise HarnessError(f"vbmcd did not answer in {self.start_timeout:g}s") from None
        except BaseException:
            self.stop()
            raise
        self.ready_seconds = time.monotonic() - started
        return self

    def vbmc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        tool = find_tool("vbmc")
        if tool is None:
            raise HarnessError("vbmc is not installed (pip install virtualbmc)")
        result = subprocess.run(
            [tool, "--no-daemon", *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.workdir,
            timeout=30,
        )
        if check and result.returncode != 0:
            # The arguments may hold a password: report the command only.
            raise HarnessError(
                f"vbmc {args[0]} failed ({result.returncode}): {result.stderr.strip()[-500:]}"
            )
        self.note_children()
        return result

    def note_children(self) -> None:
        """Remember vbmcd's children (one per started BMC) while vbmcd can still be asked."""
        if self.process is not None and self.process.poll() is None:
            self._children.update(_children(self.process.pid))

    def stop(self, timeout: float = 10.0) -> None:
        process = self.process
        if process is None:
            return
        self.note_children()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        # Children vbmcd forked and left behind (it terminates them itself on a clean exit).
        for child in sorted(self._children):
            if pid_alive(child) and "vbmc" in _cmdline(child):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
        _wait_gone(sorted(self._children), 5.0)
        self._children.clear()
        self.process = None

    def _tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.workdir / "vbmcd.out").read_text(errors="replace")[-1000:]
        return ""


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


@dataclass
class Bmc:
    """One node's BMC: where it listens and how to log in."""

    node: str
    domain: str
    port: int
    user: str
    password: str

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def fence_config(self, password: str | None = None) -> dict[str, Any]:
        """The Node's ``spec.fence`` for this BMC (optionally with another password)."""
        return {
            "agent": "ipmi",
            "address": self.address,
            "user": self.user,
            "password": self.password if password is None else password,
        }

    def ipmitool(self, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        return ipmitool(self.port, self.user, self.password, *args, timeout=timeout)


PowerEvent = tuple[float, str, Literal["on", "off"]]


class IpmiHarness:
    """Virtual BMCs whose chassis power is the life of a local cluster's nodes.

    ``kill_node`` and ``start_node`` are the cluster's (``LocalCluster.kill_node`` and
    ``LocalCluster.start_node``). Use as a context manager, or ``start()`` / ``stop()``.
    """

    def __init__(
        self,
        workdir: Path,
        nodes: list[str],
        *,
        kill_node: Callable[[str], None],
        start_node: Callable[[str], None],
        uri: str = SYSTEM_URI,
        ready_timeout: float = 20.0,
    ) -> None:
        self.workdir = Path(workdir).absolute()
        self.nodes = list(nodes)
        self.kill_node = kill_node
        self.start_node = start_node
        self.uri = uri
        self.ready_timeout = ready_timeout
        self.run_id = uuid.uuid4().hex[:8]
        self.daemon = VirtualBmcDaemon(self.workdir / "vbmcd")
        self.bmcs: dict[str, Bmc] = {}
        self.events: list[PowerEvent] = []
        self.errors: list[str] = []
        self.ready_seconds: float | None = None
        """From launching vbmcd to every BMC answering ``chassis power status``."""
        self.max_poll_gap = 0.0
        """The longest pause between two polls of the watcher."""
        self._conn: Any = None
        self._conn_lock = threading.Lock()
        self._defined: list[str] = []
        self._power: dict[str, bool] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._react_lock = threading.Lock()

    # -- start -------------------------------------------------------------------

    def start(self) -> Self:
        started = time.monotonic()
        try:
            conn = self._connection()
            for node in self.nodes:
                name = f"pvc-chassis-{self.run_id}-{node}"
                conn.defineXML(chassis_xml(name, str(uuid.uuid4())))
                self._defined.append(name)
                self.bmcs[node] = Bmc(
                    node=node,
                    domain=name,
                    port=free_udp_port(),
                    user=IPMI_USER,
                    # IPMI 2.0 passwords are at most 20 bytes (ipmitool refuses longer).
                    password=f"pw{uuid.uuid4().hex[:16]}",
                )
            self.daemon.start()
            with ThreadPoolExecutor(len(self.bmcs)) as pool:
                list(pool.map(self._add_bmc, self.bmcs.values()))
            self.ready_seconds = time.monotonic() - started
            self._power = {node: self._chassis_on(node) for node in self.nodes}
            for node in self.nodes:
                thread = threading.Thread(
                    target=self._watch, args=(node,), name=f"chassis-{node}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        except BaseException:
            with contextlib.suppress(Exception):  # the start's own failure is the one to see
                self.stop()
            raise
        return self

    def _add_bmc(self, bmc: Bmc) -> None:
        self.daemon.vbmc(
            "add",
            bmc.domain,
            "--port",
            str(bmc.port),
            "--address",
            "127.0.0.1",
            "--username",
            bmc.user,
            "--password",
            bmc.password,
            "--libvirt-uri",
            self.uri,
        )
        self.daemon.vbmc("start", bmc.domain)
        last: list[subprocess.CompletedProcess[str]] = []

        def answers() -> bool:
            last[:] = [bmc.ipmitool("chassis", "power", "status", timeout=5.0)]
            return last[0].returncode == 0 and "power is" in last[0].stdout.lower()

        try:
            wait_until(answers, self.ready_timeout, f"the BMC of {bmc.node}", 0.2)
        except TimeoutError:
            out = (last[0].stderr or last[0].stdout).strip()[-300:] if last else ""
            raise HarnessError(
                f"the BMC of {bmc.node} on UDP {bmc.port} did not answer in "
                f"{self.ready_timeout:g}s: {out}"
            ) from None
        self.daemon.note_children()

    # -- power -------------------------------------------------------------------

    def _connection(self) -> Any:
        """The libvirt connection, opened again when libvirtd went away and came back."""
        import libvirt

        with self._conn_lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive():
                        return self._conn
                except libvirt.libvirtError:
                    pass
                with contextlib.suppress(libvirt.libvirtError):
                    self._conn.close()
                self._conn = None
            self._conn = libvirt.open(self.uri)
            return self._conn

    def _domain(self, node: str) -> Any:
        return self._connection().lookupByName(self.bmcs[node].domain)

    def _chassis_on(self, node: str) -> bool:
        return bool(self._domain(node).isActive())

    def power_on(self, node: str, timeout: float = 60.0) -> None:
        """Press the power button over IPMI, as an admin would, and wait for the chassis.

        The BMC answers only once libvirt has started the chassis domain: ~0.6 s on an
        idle host, over 10 s on a loaded one, when ipmitool may give up waiting ("Unable
        to set Chassis Power Control to Up/On") although the request arrived. So the
        chassis itself is the judge: it must be on within ``timeout``."""
        started = time.monotonic()
        result = self.bmcs[node].ipmitool("chassis", "power", "on", timeout=timeout)
        left = max(1.0, timeout - (time.monotonic() - started))
        try:
            self.wait_power(node, True, left)
        except HarnessError as err:
            raise HarnessError(f"{err}; ipmitool said: {result.stderr.strip()}") from None

    def power_on_all(self, timeout: float = 60.0) -> None:
        """Power every chassis on at once."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda node: self.power_on(node, timeout), self.nodes))

    def powered(self, node: str) -> bool:
        """The chassis power as the watcher last saw it."""
        with self._lock:
            return self._power[node]

    def wait_power(self, node: str, on: bool, timeout: float) -> float:
        """Wait until the watcher has seen ``node``'s chassis ``on`` (or off); monotonic time."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._power[node] != on:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HarnessError(
                        f"{node}'s chassis not {'on' if on else 'off'} after {timeout:g}s "
                        f"(power events {self._events_for(node)})"
                    )
                self._changed.wait(left)
        return time.monotonic()

    def wait_event(
        self, node: str, what: Literal["on", "off"], since: int, timeout: float
    ) -> float:
        """Wait for a power ``what`` of ``node``'s chassis among its events from index
        ``since`` on (``len(events_for(node))`` taken before acting); returns its time."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [t for t, w in self._events_for(node)[since:] if w == what]
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HarnessError(
                        f"no power {what} of {node}'s chassis after {timeout:g}s "
                        f"(power events {self._events_for(node)}, "
                        f"longest watcher pause {self.max_poll_gap:.2f}s)"
                    )
                self._changed.wait(left)

    def events_for(self, node: str) -> list[tuple[float, str]]:
        with self._lock:
            return self._events_for(node)

    def _events_for(self, node: str) -> list[tuple[float, str]]:
        return [(when, what) for when, who, what in self.events if who == node]

    def _chassis_id(self, node: str) -> int:
        """The chassis domain's libvirt ID: -1 while off, a new number at every power on."""
        return int(self._domain(node).ID())

    def _watch(self, node: str) -> None:
        # One thread per chassis: libvirt answers nothing about a domain while it is being
        # destroyed or started (~1-2 s here), and one chassis must not hold up the others.
        # For the same reason an off/on pair can fall between two polls: the domain ID,
        # new at every start, tells.
        last = self._chassis_id(node)
        last_poll = time.monotonic()
        while not self._stop.wait(POLL_INTERVAL):
            now = time.monotonic()
            self.max_poll_gap = max(self.max_poll_gap, now - last_poll)
            last_poll = now
            try:
                current = self._chassis_id(node)
            except Exception as exc:
                if not self._stop.is_set():
                    self.errors.append(f"reading {node}'s chassis: {exc}")
                continue
            if current == last:
                continue
            steps: list[Literal["on", "off"]] = []
            if last != -1:
                steps.append("off")
            if current != -1:
                steps.append("on")
            last = current
            for what in steps:
                self._react(node, what)

    def _react(self, node: str, what: Literal["on", "off"]) -> None:
        try:
            # Power loss kills the node's processes; power on boots it. One at a time: the
            # local cluster keeps its PIDs in one state file, rewritten by each boot.
            with self._react_lock:
                (self.start_node if what == "on" else self.kill_node)(node)
        except Exception as exc:
            self.errors.append(f"{node} chassis {what}: {exc!r}")
        with self._changed:
            self._power[node] = what == "on"
            self.events.append((time.monotonic(), node, what))
            self._changed.notify_all()

    # -- stop --------------------------------------------------------------------

    def stop(self) -> None:
        """Remove everything: the watcher, the BMCs, vbmcd and its children, the chassis.

        Each step runs even when an earlier one failed; the first failure is raised last."""
        failures: list[BaseException] = []
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        self._threads.clear()
        if self.daemon.process is not None:

            def remove(bmc: Bmc) -> None:
                for action in ("stop", "delete"):
                    try:
                        self.daemon.vbmc(action, bmc.domain, check=False)
                    except (OSError, subprocess.SubprocessError, HarnessError) as err:
                        failures.append(err)

            with ThreadPoolExecutor(max(1, len(self.bmcs))) as pool:
                list(pool.map(remove, self.bmcs.values()))
        try:
            self.daemon.stop()
        except Exception as err:
            failures.append(err)
        if self._defined:
            import libvirt

            try:
                conn = self._connection()
                for name in list(self._defined):
                    try:
                        domain = conn.lookupByName(name)
                    except libvirt.libvirtError as err:
                        if err.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                            raise
                    else:
                        if domain.isActive():
                            domain.destroy()
                        domain.undefine()
                    self._defined.remove(name)
            except libvirt.libvirtError as err:
                failures.append(HarnessError(f"chassis domains {self._defined} not removed: {err}"))
        if self._conn is not None:
            import libvirt

            with contextlib.suppress(libvirt.libvirtError):
                self._conn.close()
            self._conn = None
        if failures:
            raise failures[0]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
