"""The floor beside a latency figure, measured on the same machine in the same run: raw
libvirt define+start on the test driver (or on qemu:///system for --kvm, with a libvirtd
started when none answers) and raw ZooKeeper sets. Shared by bench/apply_latency.py,
flush.py and migration.py."""

from __future__ import annotations

import os
import pwd
import secrets
import statistics
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from benchlib import summary

VM_MEMORY_MIB = 64
NODE_CPUS = 4


def libvirt_floor(count: int, workdir: Path) -> dict[str, Any]:
    """Time define+start of `count` 64 MiB domains on a fresh libvirt test-driver host,
    rendered by the project's own XML code, as the node daemons use it."""
    import libvirt

    from hypervisor import DomainSpec, render_domain_xml, write_test_host_xml

    host_mib = count * VM_MEMORY_MIB + 1024
    uri = write_test_host_xml(workdir / "floor-host.xml", host_mib, NODE_CPUS)
    conn = libvirt.open(uri)
    samples: list[float] = []
    try:
        for index in range(count):
            spec = DomainSpec(
                name=f"floor-{index:04d}",
                uuid=str(uuid.uuid4()),
                vcpus=1,
                memory_mib=VM_MEMORY_MIB,
            )
            xml = render_domain_xml(spec, "test")
            start = time.perf_counter()
            dom = conn.defineXML(xml)
            dom.create()
            samples.append(time.perf_counter() - start)
        for dom in conn.listAllDomains():
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    finally:
        conn.close()
    return {
        "uri": uri,
        "samples_s": samples,
        "median_s": statistics.median(samples),
        **summary(samples),
    }


def kvm_unavailable_reason() -> str | None:
    """Why KVM benchmarks cannot run here, or None when they can."""
    from localcluster.libvirtd import find_program

    if os.geteuid() != 0:
        return "KVM needs root (libvirtd at qemu:///system)"
    if not os.path.exists("/dev/kvm"):
        return "this machine has no /dev/kvm"
    try:
        qemu = pwd.getpwnam("libvirt-qemu")
    except KeyError:
        qemu = None
    if qemu is not None:
        from hypervisor.domaintype import qemu_kvm_access_problem

        problem = qemu_kvm_access_problem(f"+{qemu.pw_uid}:+{qemu.pw_gid}")
        if problem is not None:
            return problem
    for program in ("libvirtd", "virtlogd", "qemu-system-x86_64"):
        if find_program(program) is None:
            return (
                f"{program} is not installed "
                "(apt-get install libvirt-daemon-system qemu-system-x86 qemu-utils)"
            )
    return None


@contextmanager
def system_libvirtd(workdir: Path) -> Iterator[Any]:
    """The host's libvirtd at qemu:///system: reused when it answers, else started here
    as a plain process and stopped on the way out."""
    from localcluster.libvirtd import LibvirtDaemon

    daemon = LibvirtDaemon.system(workdir)
    daemon.start()
    how = "reused the running one" if daemon.reused else f"started PID {daemon.pid}"
    print(f"system libvirtd: {how}, answered after {daemon.ready_seconds or 0:.2f} s")
    try:
        yield daemon
    finally:
        daemon.stop()


def remove_domains(uri: str, prefix: str, timeout: float = 120.0) -> list[str]:
    """Destroy and undefine every domain whose name starts with `prefix`, in parallel
    (a KVM destroy takes 1-2 s); returns the names removed."""
    import libvirt

    conn = libvirt.open(uri)
    try:
        domains = [d for d in conn.listAllDomains(0) if str(d.name()).startswith(prefix)]

        def remove(domain: Any) -> str:
            with suppress(libvirt.libvirtError):
                if domain.isActive():
                    domain.destroy()
            with suppress(libvirt.libvirtError):
                domain.undefine()
            return str(domain.name())

        with ThreadPoolExecutor(max_workers=8) as pool:
            removed = list(pool.map(remove, domains))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(
            str(d.name()).startswith(prefix) for d in conn.listAllDomains(0)
        ):
            time.sleep(0.2)
    finally:
        conn.close()
    return removed


def kvm_floor(count: int, uri: str, prefix: str) -> dict[str, Any]:
    """Time define+start of `count` 64 MiB diskless domains on a real libvirt, with the XML
    rendered for "kvm" by the project's own code; all destroyed and undefined after.

    The domains stay up until the end, as the VMs of the run do, so each start sees the
    same number of guests already running as the matching apply."""
    import libvirt

    from hypervisor import DomainSpec, render_domain_xml

    conn = libvirt.open(uri)
    samples: list[float] = []
    try:
        for index in range(count):
            spec = DomainSpec(
                name=f"{prefix}{index:04d}",
                uuid=str(uuid.uuid4()),
                vcpus=1,
                memory_mib=VM_MEMORY_MIB,
                # Not the cluster's root: its node must not take these for its own strays.
                owner_tag="bench-floor",
            )
            xml = render_domain_xml(spec, "kvm")
            start = time.perf_counter()
            dom = conn.defineXML(xml)
            dom.create()
            samples.append(time.perf_counter() - start)
    finally:
        conn.close()
        remove_domains(uri, prefix)
    return {
        "uri": uri,
        "domain_type": "kvm",
        "samples_s": samples,
        "median_s": statistics.median(samples),
        **summary(samples),
    }


def zookeeper_floor(hosts: str, count: int) -> dict[str, Any]:
    """Median of `count` synchronous sets of a small value on a scratch znode."""
    from kazoo.client import KazooClient
    from kazoo.exceptions import NoNodeError, NotEmptyError

    path = f"/pvc-bench-scratch/{secrets.token_hex(4)}"
    value = b"x" * 64
    client = KazooClient(hosts=hosts, timeout=10.0)
    client.start(timeout=15)
    samples: list[float] = []
    try:
        client.create(path, value, makepath=True)
        client.set(path, value)  # warm-up, not timed
        for _ in range(count):
            start = time.perf_counter()
            client.set(path, value)
            samples.append(time.perf_counter() - start)
        client.delete(path)
        # NotEmptyError when another run's scratch znode is still there: leave it.
        with suppress(NotEmptyError, NoNodeError):
            client.delete("/pvc-bench-scratch")
    finally:
        client.stop()
        client.close()
    return {
        "hosts": hosts,
        "path": path,
        "samples_s": samples,
        "median_s": statistics.median(samples),
        **summary(samples),
    }


def _jit_cpu_s(pid: int) -> float | None:
    """CPU seconds the JVM ``pid``'s JIT compiler threads used so far (None: not readable)."""
    ticks = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for task in tasks:
        try:
            stat = Path(f"/proc/{pid}/task/{task}/stat").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        if "Compiler" not in stat[stat.index("(") + 1 : stat.rindex(")")]:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def warm_zookeeper(
    hosts: str,
    pid: int | None,
    *,
    max_s: float = 60.0,
    blind_s: float = 25.0,
    window_s: float = 2.0,
    quiet_share: float = 0.05,
) -> dict[str, Any]:
    """Load a ZooKeeper with raw requests of every kind PVC sends (creates, reads with
    watches, persistent recursive watches, sets, multis, children, deletes) on a scratch
    path until its JVM has compiled its hot paths: a fresh server spends a third of a core
    on its JIT compiler for its first 15-25 s of load, and a server in service does not.

    With the server's ``pid`` (a local one) the load stops once its compiler threads used
    under ``quiet_share`` of a core over two ``window_s`` windows in a row, at most
    ``max_s``; without it, after ``blind_s``."""
    from kazoo.client import KazooClient
    from kazoo.exceptions import KazooException

    from zkstore.persistent import PersistentWatches

    root = f"/pvc-bench-warmup/{secrets.token_hex(4)}"
    clients = [KazooClient(hosts=hosts, timeout=10.0) for _ in range(2)]
    for client in clients:
        client.start(timeout=15)
    clients[0].ensure_path(root)
    PersistentWatches.of(clients[0]).add_async(root, lambda _event: None).get(timeout=10)
    stop = time.monotonic() + (max_s if pid else blind_s)
    done = [0, 0]
    finished = False

    def load(worker: int) -> None:
        client = clients[worker]
        value = b"w" * 512
        index = 0
        while not finished:
            path = f"{root}/w{worker}-{index}"
            client.create(path, value)
            client.get(path, watch=lambda _event: None)
            client.set(path, value, version=0)
            txn = client.transaction()
            txn.check(path, 1)
            txn.create(f"{path}-c", value)
            txn.set_data(path, value)
            txn.commit()
            client.exists(f"{path}-c", watch=lambda _event: None)
            if index % 20 == 0:
                client.get_children(root, watch=lambda _event: None)
            client.delete(f"{path}-c")
            client.delete(path)
            done[worker] += 8
            index += 1

    windows: list[float] = []
    settled = False
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(load, worker) for worker in range(2)]
        try:
            last = _jit_cpu_s(pid) if pid else None
            while time.monotonic() < stop and not any(f.done() for f in futures):
                time.sleep(window_s)
                if pid is None or last is None:
                    continue
                now = _jit_cpu_s(pid)
                if now is None:
                    break
                windows.append(round(now - last, 3))
                last = now
                if len(windows) >= 2 and max(windows[-2:]) < quiet_share * window_s:
                    settled = True
                    break
        finally:
            finished = True
        for future in futures:
            future.result()  # a request that failed is the run's error
    seconds = time.monotonic() - started
    with suppress(KazooException):  # another run's warm-up there: its own to remove
        clients[0].delete("/pvc-bench-warmup", recursive=True)
    for client in clients:
        client.stop()
        client.close()
    return {
        "seconds": round(seconds, 2),
        "requests": sum(done),
        "jit_cpu_s_per_window": windows,
        "window_s": window_s,
        "settled": settled if pid else None,
    }
