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
