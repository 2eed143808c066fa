"""VM lifecycle end to end on real QEMU/KVM: a 1-node local cluster whose pvcnoded runs
against qemu:///system, driving small diskless domains (64 MiB) through the API.

Guests have no OS (and firmware hangs under this nested KVM), so ACPI shutdown does
nothing: every graceful stop runs into its shutdownTimeout, which is what the timeout,
abort (PVC #49) and isolation tests rely on. A "crash" is ``kill -9`` of the domain's
QEMU process, whose PID libvirt keeps in /run/libvirt/qemu/NAME.pid.

Skips, saying why, without root, /dev/kvm or libvirtd (the ``system_libvirtd`` fixture),
and fails at once, with QEMU's reason, where QEMU cannot use /dev/kvm.
Every domain the module creates carries its name prefix and is removed at the end.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import libvirt
import pytest

from hypervisor import DomainSpec, render_domain_xml
from localcluster.libvirtd import LibvirtDaemon
from tests.helpers import holds_for, wait_for
from tests.kvm_fixtures import system_libvirtd
from tests.localcluster_fixture import RunningCluster, start_cluster

__all__ = ["system_libvirtd"]  # a fixture, imported for pytest

pytestmark = pytest.mark.kvm

T = TypeVar("T")

NODE = "node1"
SYSTEM_URI = "qemu:///system"
QEMU_RUN_DIR = Path("/run/libvirt/qemu")
# QEMU runs as libvirt-qemu: disks must sit where it can reach them (not pytest's tmp).
IMAGES_DIR = Path("/var/lib/libvirt/images")
PREFIX = f"e2ek-{uuid.uuid4().hex[:4]}"
MERGE_PATCH = {"content-type": "application/merge-patch+json"}
# pvcnoded's default crash-loop base (controllers/config.py CrashLoopConfig.base): the
# second unexpected stop in a row waits base x 1^2 before the next start.
CRASH_LOOP_BASE_S = 10.0


# -- helpers ------------------------------------------------------------------------------


def vm_name(label: str) -> str:
    return f"{PREFIX}-{label}"


def vm_doc(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "labels": {"pvc-e2e": "kvm-lifecycle"}},
        "spec": {"memory": "64Mi", "vcpus": 1, **spec},
    }


def apply(cluster: RunningCluster, doc: dict[str, Any]) -> None:
    response = cluster.api("POST", "/api/v1/apply", json=[doc])
    assert response.status_code == 200, response.text


def patch(cluster: RunningCluster, name: str, body: dict[str, Any]) -> dict[str, Any]:
    response = cluster.api("PATCH", f"/api/v1/vms/{name}", json=body, headers=MERGE_PATCH)
    assert response.status_code == 200, response.text
    return dict(response.json())


def verb(cluster: RunningCluster, name: str, action: str) -> dict[str, Any]:
    response = cluster.api("POST", f"/api/v1/vms/{name}/{action}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def get_vm(cluster: RunningCluster, name: str) -> dict[str, Any]:
    response = cluster.api("GET", f"/api/v1/vms/{name}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def status(cluster: RunningCluster, name: str) -> dict[str, Any]:
    return dict(get_vm(cluster, name).get("status") or {})


def delete_vm(cluster: RunningCluster, name: str) -> None:
    """Delete at once (force): these guests ignore ACPI, so a graceful delete would wait out
    each one's shutdownTimeout; its node destroys the domain when it sees the VM gone."""
    response = cluster.api("DELETE", f"/api/v1/vms/{name}", params={"force": "true"})
    assert response.status_code in (200, 404), response.text


def libvirt_state(conn: libvirt.virConnect, name: str) -> int | None:
    """libvirt's VIR_DOMAIN_* state, None when the domain is not defined."""
    try:
        return int(conn.lookupByName(name).state()[0])
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


def libvirt_running(conn: libvirt.virConnect, name: str) -> bool:
    return bool(libvirt_state(conn, name) == libvirt.VIR_DOMAIN_RUNNING)


def qemu_pid(name: str) -> int | None:
    """The PID of the domain's QEMU, if libvirt recorded one and that process is it."""
    try:
        text = (QEMU_RUN_DIR / f"{name}.pid").read_text().strip()
    except OSError:
        return None
    if not text.isdigit():
        return None
    try:
        cmdline = Path(f"/proc/{text}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    return int(text) if f"guest={name}," in cmdline else None


def pid_running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return False


def until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """wait_for, typed for checks that return a value or None."""
    result = wait_for(check, timeout, what)
    assert result is not None
    return result


def status_until(
    cluster: RunningCluster,
    name: str,
    pred: Callable[[dict[str, Any]], bool],
    timeout: float,
    what: str,
) -> dict[str, Any]:
    """Wait until the VM's status satisfies ``pred``; returns that status."""

    def check() -> dict[str, Any] | None:
        st = status(cluster, name)
        return st if pred(st) else None

    return until(check, timeout, f"{name} {what}")


def wait_running(cluster: RunningCluster, name: str, timeout: float = 30.0) -> dict[str, Any]:
    return status_until(cluster, name, lambda s: s.get("phase") == "Running", timeout, "Running")


def node_log(cluster: RunningCluster) -> str:
    return (cluster.cluster.dir / f"{NODE}.log").read_text(errors="replace")


def log_lines(cluster: RunningCluster, event: str, vm: str) -> list[str]:
    pattern = re.compile(rf"event={re.escape(event)} vm={re.escape(vm)}(\s|$)")
    return [line for line in node_log(cluster).splitlines() if pattern.search(line)]


def virsh(*args: str) -> str:
    result = subprocess.run(
        ["virsh", "-c", SYSTEM_URI, *args], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def ours_in_libvirt(conn: libvirt.virConnect) -> list[str]:
    return sorted(
        n for n in (str(d.name()) for d in conn.listAllDomains(0)) if n.startswith(PREFIX)
    )


def start_vm(cluster: RunningCluster, label: str, **spec: Any) -> tuple[str, int]:
    """Apply a VM, wait until it runs; returns (name, QEMU PID)."""
    name = vm_name(label)
    apply(cluster, vm_doc(name, **spec))
    wait_running(cluster, name)
    pid = until(lambda: qemu_pid(name), 10, f"{name}'s QEMU PID")
    return name, pid


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def disk_dir() -> Iterator[Path]:
    path = IMAGES_DIR / f"pvc-{PREFIX}"
    path.mkdir(parents=True, exist_ok=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def conn(system_libvirtd: LibvirtDaemon) -> Iterator[libvirt.virConnect]:
    connection = libvirt.open(system_libvirtd.uri)
    yield connection
    # Safety net: whatever a failed test left behind goes, by our prefix only.
    for domain in connection.listAllDomains(0):
        if str(domain.name()).startswith(PREFIX):
            with contextlib.suppress(libvirt.libvirtError):
                if domain.isActive():
                    domain.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    connection.close()


@pytest.fixture(scope="module")
def cluster(
    system_libvirtd: LibvirtDaemon,
    conn: libvirt.virConnect,
    disk_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningCluster]:
    state_dir = tmp_path_factory.mktemp("kvm-lifecycle")
    started = time.monotonic()
    clusters: Generator[RunningCluster, None, None] = start_cluster(  # type: ignore[assignment]
        state_dir, nodes=1, libvirt_uris={NODE: system_libvirtd.uri}, disk_dir=disk_dir
    )
    running = next(clusters)
    print(f"\n1-node KVM cluster up in {time.monotonic() - started:.1f}s at {state_dir}")
    try:
        yield running
    finally:
        # Delete our VMs while the daemon still runs, so it undefines their domains.
        with contextlib.suppress(Exception):
            for item in running.items("vms"):
                if item["metadata"]["name"].startswith(PREFIX):
                    delete_vm(running, item["metadata"]["name"])
            deadline = time.monotonic() + 60
            while ours_in_libvirt(conn) and time.monotonic() < deadline:
                time.sleep(0.2)
        clusters.close()


# -- start, graceful stop, abort, force stop -----------------------------------------------


def test_start_runs_the_domain(cluster: RunningCluster, conn: libvirt.virConnect) -> None:
    started = time.monotonic()
    name, _pid = start_vm(cluster, "start")
    print(f"apply -> Running: {time.monotonic() - started:.2f}s")
    assert virsh("domstate", name).strip() == "running"
    st = status(cluster, name)
    assert st["node"] == NODE
    assert st["domainUuid"] == str(conn.lookupByName(name).UUIDString())
    assert {c["type"]: c["status"] for c in st["conditions"]} == {
        "Scheduled": "True",
        "Ready": "True",
        "Converged": "True",
        "RestartRequired": "False",
    }
    assert st["observedGeneration"] == get_vm(cluster, name)["metadata"]["generation"]
    delete_vm(cluster, name)


@pytest.fixture(scope="module")
def timed_out_stop(cluster: RunningCluster, conn: libvirt.virConnect) -> dict[str, Any]:
    """Halted with shutdownTimeout 3s on a guest that ignores ACPI: what status and libvirt
    show, sampled every ~50 ms from the patch until the status says Stopped."""
    name, pid = start_vm(cluster, "timeout")
    t0 = time.monotonic()
    patch(cluster, name, {"spec": {"runStrategy": "Halted", "shutdownTimeout": "3s"}})
    phases: list[tuple[float, str, str]] = []
    states: list[tuple[float, int | None]] = []
    libvirt_off_at: float | None = None
    deadline = t0 + 20
    while time.monotonic() < deadline:
        now = time.monotonic()
        st = status(cluster, name)
        if not phases or phases[-1][1:] != (st.get("phase"), st.get("reason")):
            phases.append((now - t0, str(st.get("phase")), str(st.get("reason"))))
        # Timed at the read itself (the status call before it can take a while under load),
        # from its start: the state read was true at some point after read_at.
        read_at = time.monotonic()
        state = libvirt_state(conn, name)
        if not states or states[-1][1] != state:
            states.append((read_at - t0, state))
        # Off means shut off or undefined (a destroy shows VIR_DOMAIN_SHUTDOWN on the way).
        if libvirt_off_at is None and state in (libvirt.VIR_DOMAIN_SHUTOFF, None):
            libvirt_off_at = read_at - t0
        if st.get("phase") == "Stopped":
            break
        time.sleep(0.05)
    print("phases after the patch: " + ", ".join(f"{p}/{r}@{t:.2f}s" for t, p, r in phases))
    print("libvirt states after the patch: " + ", ".join(f"{s}@{t:.2f}s" for t, s in states))
    result = {
        "name": name,
        "pid": pid,
        "phases": phases,
        "libvirt_off_at": libvirt_off_at,
        "libvirt_states": states,
        "libvirt_state": libvirt_state(conn, name),
        "forced_off_logged": len(log_lines(cluster, "domain_forced_off", name)),
    }
    delete_vm(cluster, name)
    return result


def test_graceful_stop_waits_out_the_timeout_then_forces_off(
    timed_out_stop: dict[str, Any],
) -> None:
    # Until the node has seen the patch the status still says Running.
    phases = [p for p in timed_out_stop["phases"] if p[1] != "Running"]
    assert phases[0][1:] == ("Stopping", "ShuttingDown"), phases
    stopping_at = phases[0][0]
    assert stopping_at < 3.0, phases
    assert phases[-1][1] == "Stopped", phases
    stopped_at = phases[-1][0]
    # Not before the timeout: libvirt kept running the guest for the full 3 s, counted
    # from the patch and (less a poll's slack) from the Stopping the node wrote after its
    # ACPI request.
    off_at = timed_out_stop["libvirt_off_at"]
    states = timed_out_stop["libvirt_states"]
    assert off_at is not None and off_at >= 3.0, (off_at, phases, states)
    assert off_at - stopping_at >= 3.0 - 0.2, (off_at, phases, states)
    assert 3.0 <= stopped_at < stopping_at + 8.0, phases
    assert not pid_running(timed_out_stop["pid"])
    assert timed_out_stop["libvirt_state"] == libvirt.VIR_DOMAIN_SHUTOFF
    assert timed_out_stop["forced_off_logged"] == 1


def test_graceful_stop_timeout_is_reported_as_forced_off(
    timed_out_stop: dict[str, Any],
) -> None:
    assert timed_out_stop["phases"][-1][1:] == ("Stopped", "ForcedOff")


def test_back_to_always_during_the_wait_aborts_the_shutdown(
    cluster: RunningCluster, conn: libvirt.virConnect
) -> None:
    """PVC #49: the domain whose stop is withdrawn is never forced off."""
    name, pid = start_vm(cluster, "abort")
    t0 = time.monotonic()
    patch(cluster, name, {"spec": {"runStrategy": "Halted", "shutdownTimeout": "4s"}})
    wait_for(lambda: status(cluster, name).get("phase") == "Stopping", 3, f"{name} Stopping")
    patch(cluster, name, {"spec": {"runStrategy": "Always"}})
    wait_running(cluster, name, timeout=3)
    # Past the withdrawn deadline (4 s) plus a destroy's worth: still the same guest.
    holds_for(
        lambda: qemu_pid(name) == pid and libvirt_running(conn, name),
        t0 + 4.0 + 2.5 - time.monotonic(),
        f"{name} running as QEMU {pid}",
    )
    assert status(cluster, name)["phase"] == "Running"
    assert log_lines(cluster, "domain_forced_off", name) == []
    delete_vm(cluster, name)


def test_force_stop_destroys_at_once(cluster: RunningCluster, conn: libvirt.virConnect) -> None:
    name, pid = start_vm(cluster, "force", shutdownTimeout="10m")
    t0 = time.monotonic()
    vm = verb(cluster, name, "force-stop")
    stamp = vm["metadata"]["annotations"]["pvc.io/force-stop"]
    assert vm["spec"]["runStrategy"] == "Halted"
    st = status_until(cluster, name, lambda s: s.get("phase") == "Stopped", 15, "Stopped")
    took = time.monotonic() - t0
    print(f"force-stop -> Stopped: {took:.2f}s")
    assert st["reason"] == "ForceStopped"
    assert st["forceStopHandled"] == stamp
    assert took < 8.0
    assert not pid_running(pid)
    assert libvirt_state(conn, name) == libvirt.VIR_DOMAIN_SHUTOFF
    delete_vm(cluster, name)


# -- restart ------------------------------------------------------------------------------


def test_restart_annotation_restarts_once_per_value(cluster: RunningCluster) -> None:
    name, pid = start_vm(cluster, "restart", shutdownTimeout="1s")
    vm = verb(cluster, name, "restart")
    stamp = vm["metadata"]["annotations"]["pvc.io/restart"]

    def restarted() -> int | None:
        st = status(cluster, name)
        new = qemu_pid(name)
        done = st.get("restartHandled") == stamp and st.get("phase") == "Running"
        return new if done and new is not None and new != pid else None

    new_pid = until(restarted, 20, f"{name} restarted with a new QEMU")
    assert not pid_running(pid)
    # A later spec change is reconciled without a second restart for the same value.
    generation = patch(cluster, name, {"spec": {"autostart": True}})["metadata"]["generation"]
    wait_for(
        lambda: status(cluster, name).get("observedGeneration") == generation,
        10,
        f"{name} generation {generation} observed",
    )
    assert qemu_pid(name) == new_pid
    assert status(cluster, name)["restartHandled"] == stamp
    assert len(log_lines(cluster, "domain_restarting", name)) == 1
    delete_vm(cluster, name)


# -- crashes ------------------------------------------------------------------------------


def kill_qemu(name: str) -> int:
    pid = qemu_pid(name)
    assert pid is not None, f"{name} has no QEMU"
    os.kill(pid, signal.SIGKILL)
    return pid


def new_qemu(name: str, old: int) -> Callable[[], int | None]:
    def check() -> int | None:
        pid = qemu_pid(name)
        return pid if pid is not None and pid != old and pid_running(pid) else None

    return check


def test_crash_under_always_restarts_then_backs_off(cluster: RunningCluster) -> None:
    name, _ = start_vm(cluster, "crash")
    t_kill = time.monotonic()
    first = kill_qemu(name)
    second = until(new_qemu(name, first), 10, f"{name} restarted after a crash")
    st = status_until(
        cluster,
        name,
        lambda s: s.get("phase") == "Running" and s.get("failures") == 1,
        10,
        "Running with failures=1",
    )
    print(f"first crash -> new QEMU: {time.monotonic() - t_kill:.2f}s")
    assert st["reason"] == "Running"

    t_kill = time.monotonic()
    kill_qemu(name)
    st = status_until(
        cluster, name, lambda s: s.get("reason") == "CrashLoopBackOff", 8, "in CrashLoopBackOff"
    )
    assert st["phase"] == "Failed"
    assert st["failures"] == 2
    assert qemu_pid(name) is None  # backing off, not running
    third = until(new_qemu(name, second), CRASH_LOOP_BASE_S + 15, f"{name} back after back-off")
    waited = time.monotonic() - t_kill
    print(f"second crash -> new QEMU after back-off: {waited:.2f}s")
    assert waited >= CRASH_LOOP_BASE_S - 1.0
    assert third != second
    wait_running(cluster, name, timeout=5)
    delete_vm(cluster, name)


def test_crash_under_rerun_on_failure_restarts(cluster: RunningCluster) -> None:
    name, _ = start_vm(cluster, "rerun", runStrategy="RerunOnFailure")
    first = kill_qemu(name)
    wait_for(new_qemu(name, first), 10, f"{name} restarted after a crash")
    st = wait_running(cluster, name, timeout=5)
    assert st["failures"] == 1
    delete_vm(cluster, name)


# -- disks --------------------------------------------------------------------------------


def qemu_img_info(path: Path) -> dict[str, Any]:
    import json

    # -U: QEMU holds a lock on the image while the guest runs.
    result = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return dict(json.loads(result.stdout))


def disk_sources(conn: libvirt.virConnect, name: str) -> list[str]:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(conn.lookupByName(name).XMLDesc(0))
    return [str(s.get("file")) for s in root.findall("./devices/disk/source")]


def test_sized_disk_is_created_as_qcow2(
    cluster: RunningCluster, conn: libvirt.virConnect, disk_dir: Path
) -> None:
    name, _ = start_vm(cluster, "disk", disks=[{"name": "root", "size": "64Mi"}])
    image = disk_dir / f"{name}-root.qcow2"  # the local cluster shares one folder
    info = qemu_img_info(image)
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == 64 * 1024 * 1024
    assert disk_sources(conn, name) == [str(image)]
    delete_vm(cluster, name)


def test_existing_image_is_used_by_path(
    cluster: RunningCluster, conn: libvirt.virConnect, disk_dir: Path
) -> None:
    image = disk_dir / f"{PREFIX}-existing.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "32M"], check=True)
    before = image.stat().st_ino
    name, _ = start_vm(cluster, "source", disks=[{"name": "data", "source": str(image)}])
    assert disk_sources(conn, name) == [str(image)]
    assert image.stat().st_ino == before  # used, not recreated
    assert qemu_img_info(image)["virtual-size"] == 32 * 1024 * 1024
    delete_vm(cluster, name)


# -- isolation ----------------------------------------------------------------------------


def test_a_long_shutdown_delays_no_other_vm(
    cluster: RunningCluster, conn: libvirt.virConnect
) -> None:
    stuck, stuck_pid = start_vm(cluster, "stuck")
    patch(cluster, stuck, {"spec": {"runStrategy": "Halted", "shutdownTimeout": "180s"}})
    wait_for(lambda: status(cluster, stuck).get("phase") == "Stopping", 5, f"{stuck} Stopping")

    names = [vm_name(f"iso{i}") for i in range(5)]
    sent: dict[str, float] = {}

    def apply_one(name: str) -> None:
        sent[name] = time.monotonic()
        apply(cluster, vm_doc(name))

    with ThreadPoolExecutor(max_workers=5) as pool:
        list(pool.map(apply_one, names))
    took: dict[str, float] = {}

    def all_running() -> bool:
        for item in cluster.items("vms"):
            name = item["metadata"]["name"]
            if (
                name in sent
                and name not in took
                and (item.get("status") or {}).get("phase") == "Running"
            ):
                took[name] = time.monotonic() - sent[name]
        return len(took) == len(names)

    wait_for(all_running, 60, "5 VMs Running next to one stuck in shutdown")
    print(
        "apply -> Running beside a 180 s shutdown: "
        + ", ".join(f"{t:.2f}s" for t in sorted(took.values()))
    )
    assert max(took.values()) < 20.0, took
    # The stuck one is still waiting out its timeout, its guest untouched.
    assert status(cluster, stuck)["phase"] == "Stopping"
    assert qemu_pid(stuck) == stuck_pid and libvirt_running(conn, stuck)
    for name in [stuck, *names]:
        delete_vm(cluster, name)
    # Deleting a VM mid-shutdown with force removes its domain at once, not after 180 s.
    wait_for(lambda: libvirt_state(conn, stuck) is None, 15, f"{stuck} undefined")


# -- daemon restart: adoption and strays -------------------------------------------------


@pytest.fixture(scope="module")
def daemon_restarted(cluster: RunningCluster, conn: libvirt.virConnect) -> dict[str, Any]:
    """SIGKILL pvcnoded with a VM running and a stray PVC domain defined, then start it."""
    name, pid = start_vm(cluster, "adopt")
    cluster.cluster.kill_node(NODE)
    log_mark = len(node_log(cluster))
    assert pid_running(pid), "a killed pvcnoded must leave its guests running"
    stray = vm_name("stray")
    spec = DomainSpec(
        name=stray,
        uuid=str(uuid.uuid4()),
        vcpus=1,
        memory_mib=64,
        owner_tag=cluster.state.root,
    )
    conn.defineXML(render_domain_xml(spec, "kvm")).create()
    stray_pid = until(lambda: qemu_pid(stray), 10, "the stray's QEMU")
    t0 = time.monotonic()
    cluster.cluster.start_node(NODE)
    wait_for(lambda: libvirt_state(conn, stray) is None, 45, f"stray domain {stray} removed")
    print(f"daemon restart -> stray removed: {time.monotonic() - t0:.2f}s")

    def node_ready() -> bool:
        node = cluster.api("GET", f"/api/v1/nodes/{NODE}").json()
        conds = (node.get("status") or {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    wait_for(node_ready, 30, f"{NODE} Ready again")
    return {"name": name, "pid": pid, "stray_pid": stray_pid, "log_mark": log_mark}


def test_restarted_daemon_adopts_running_domains(
    cluster: RunningCluster, daemon_restarted: dict[str, Any]
) -> None:
    name, pid = daemon_restarted["name"], daemon_restarted["pid"]
    assert qemu_pid(name) == pid
    assert status(cluster, name)["phase"] == "Running"
    # Give the resync no chance to find a reason either: the same guest throughout.
    holds_for(lambda: qemu_pid(name) == pid, 2.0, f"{name} running as QEMU {pid}")
    after = node_log(cluster)[daemon_restarted["log_mark"] :]
    assert "event=running node=node1" in after
    assert not re.search(rf"event=domain_started vm={re.escape(name)}\b", after)
    assert not re.search(rf"event=domain_forced_off vm={re.escape(name)}\b", after)


def test_restarted_daemon_removes_unplaced_domains(
    cluster: RunningCluster, daemon_restarted: dict[str, Any]
) -> None:
    stray = vm_name("stray")
    assert not pid_running(daemon_restarted["stray_pid"])
    after = node_log(cluster)[daemon_restarted["log_mark"] :]
    assert f"event=domain_removed vm={stray} node={NODE} reason=not_placed_here" in after


def test_restarted_daemon_logs_the_adoption(
    cluster: RunningCluster, daemon_restarted: dict[str, Any]
) -> None:
    name = daemon_restarted["name"]
    after = node_log(cluster)[daemon_restarted["log_mark"] :]
    assert f"event=domain_adopted vm={name} node={NODE}" in after


# -- cleanup ------------------------------------------------------------------------------


def test_deleting_every_vm_leaves_no_domain(
    cluster: RunningCluster, conn: libvirt.virConnect
) -> None:
    for item in cluster.items("vms"):
        if item["metadata"]["name"].startswith(PREFIX):
            delete_vm(cluster, item["metadata"]["name"])
    wait_for(lambda: not ours_in_libvirt(conn), 60, f"no {PREFIX}-* domain left in libvirt")
    listed = virsh("list", "--all", "--name").split()
    assert [n for n in listed if n.startswith(PREFIX)] == []
