"""A throwaway single-host Ceph for the RBD tests: one monitor, one manager and one memstore
OSD as plain root processes with cephx on, everything (config, keyrings, logs, data) in one
folder, on loopback only. From nothing to a pool that takes ``rbd create`` in ~8 s.

The session fixture ``ceph`` is registered once, in tests/conftest.py: a module that
imported it would define a fixture of its own, and start a Ceph of its own.

It skips, saying why, when a Ceph program is missing or the cluster is not up within
``START_TIMEOUT_S`` (naming the step and the last line of the daemon's log).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from localcluster.process import pid_alive, signal_ours, spawn

PROGRAMS = ("ceph-mon", "ceph-mgr", "ceph-osd", "ceph", "rbd", "ceph-authtool", "monmaptool")
INSTALL_HINT = "apt-get install --no-install-recommends ceph-mon ceph-mgr ceph-osd ceph-common"
START_TIMEOUT_S = 60.0
COMMAND_TIMEOUT_S = 30.0
POOL = "rbd"
USER = "pvc"
# What PVC's own cephx user may do: RBD images in one pool, nothing else.
USER_CAPS = (
    "mon",
    "profile rbd",
    "osd",
    f"profile rbd pool={POOL}",
    "mgr",
    f"profile rbd pool={POOL}",
)
# The OSD keeps its data in RAM: keep test images small.
OSD_BYTES = 2 * 1024**3

# The manager modules it does not need: each costs start time and memory.
_MGR_DISABLED = (
    "alerts,diskprediction_local,influx,insights,iostat,localpool,mirroring,nfs,osd_perf_query,"
    "osd_support,prometheus,restful,selftest,snap_schedule,stats,telegraf,test_orchestrator,zabbix"
)


class CephCommandFailed(RuntimeError):
    """A ceph/rbd/ceph-authtool command failed or hung; the message says which and why."""


class CephNotStarted(RuntimeError):
    """The single-host Ceph could not be started; the message says which step and why."""


@dataclass
class SingleHostCeph:
    base: Path
    conf: Path
    """The admin's ceph.conf (it names the admin keyring): for ``ceph -c``/``rbd -c``."""
    monitors: list[str]
    """The monitor's v1 (legacy msgr) address, "127.0.0.1:PORT": what a plain host:port
    means to librbd, QEMU and libvirt's ``<host port>``."""
    v2_port: int
    pool: str = POOL
    user: str = USER
    key: str = ""
    """``client.pvc``'s cephx key, base64."""
    pids: dict[str, int] = field(default_factory=dict)

    def storage_pool(self, name: str) -> dict[str, Any]:
        """A StoragePool manifest of type rbd for this cluster's pool, as client.pvc."""
        rbd = {"monitors": self.monitors, "pool": self.pool, "user": self.user, "key": self.key}
        return {
            "apiVersion": "pvc/v1",
            "kind": "StoragePool",
            "metadata": {"name": name},
            "spec": {"type": "rbd", "rbd": rbd},
        }

    def admin(self, *args: str, program: str = "ceph", check: bool = True) -> str:
        """Run ``ceph``/``rbd`` as client.admin; returns stdout."""
        return _run(program, "-c", str(self.conf), *args, check=check)

    def stop(self) -> None:
        """Kill this cluster's daemons (by PID, nothing else) and remove its folder."""
        for pid in self.pids.values():
            signal_ours(pid, signal.SIGKILL, str(self.conf))
        deadline = time.monotonic() + 10
        while any(pid_alive(pid) for pid in self.pids.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.pids.clear()
        shutil.rmtree(self.base, ignore_errors=True)


def missing_program() -> str | None:
    for program in PROGRAMS:
        if shutil.which(program) is None:
            return program
    return None


def new_key() -> str:
    """A fresh cephx key (base64), as ``ceph auth`` would make one."""
    return _run("ceph-authtool", "--gen-print-key").strip()


def single_host_ceph(base: Path, port: int) -> SingleHostCeph:
    """Start a cluster in ``base`` whose monitor listens on ``port`` (msgr2) and ``port + 1``
    (v1); returns it up, with pool ``rbd`` and user ``client.pvc``. Raises CephNotStarted
    (after stopping what it started) when it does not come up within START_TIMEOUT_S."""
    program = missing_program()
    if program is not None:
        raise CephNotStarted(f"{program} is not installed ({INSTALL_HINT})")
    base.mkdir(parents=True, exist_ok=True)
    for sub in ("mon/a", "mgr/x", "osd", "run", "log"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    mon_addrs = f"[v2:127.0.0.1:{port},v1:127.0.0.1:{port + 1}]"
    cluster = SingleHostCeph(
        base=base, conf=base / "ceph.conf", monitors=[f"127.0.0.1:{port + 1}"], v2_port=port
    )
    try:
        _bootstrap(cluster, mon_addrs)
    except CephCommandFailed as err:
        reason = f"{err}; {_daemons_said(cluster)}"
        cluster.stop()
        raise CephNotStarted(reason) from err
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _bootstrap(cluster: SingleHostCeph, mon_addrs: str) -> None:
    base, conf = cluster.base, str(cluster.conf)
    deadline = time.monotonic() + START_TIMEOUT_S
    fsid = str(uuid.uuid4())
    admin_keyring = str(base / "ceph.client.admin.keyring")
    cluster.conf.write_text(_config(base, fsid, mon_addrs, admin_keyring))
    mon_keyring, monmap = str(base / "mon.keyring"), str(base / "monmap")
    _run("ceph-authtool", "--create-keyring", mon_keyring, "--gen-key", "-n", "mon.",
         "--cap", "mon", "allow *")  # fmt: skip
    _run("ceph-authtool", "--create-keyring", admin_keyring, "--gen-key", "-n", "client.admin",
         "--cap", "mon", "allow *", "--cap", "osd", "allow *", "--cap", "mgr", "allow *",
         "--cap", "mds", "allow *")  # fmt: skip
    _run("ceph-authtool", mon_keyring, "--import-keyring", admin_keyring)
    _run("monmaptool", "--create", "--fsid", fsid, "--addv", "a", mon_addrs, monmap)
    _run("ceph-mon", "-c", conf, "-i", "a", "--mkfs", "--monmap", monmap, "--keyring", mon_keyring)
    cluster.pids["mon"] = _daemon(cluster, "ceph-mon", "-i", "a")
    cluster.admin("auth", "get-or-create", "mgr.x", "mon", "allow profile mgr", "osd", "allow *",
                  "-o", str(base / "mgr/x/keyring"))  # fmt: skip
    cluster.pids["mgr"] = _daemon(cluster, "ceph-mgr", "-i", "x")
    osd_uuid = str(uuid.uuid4())
    osd_key = new_key()
    osd_id = _run(
        "ceph", "-c", conf, "osd", "new", osd_uuid, "-i", "-",
        stdin=json.dumps({"cephx_secret": osd_key}),
    ).strip()  # fmt: skip
    (base / "osd" / osd_id).mkdir()
    _run("ceph-authtool", "--create-keyring", str(base / "osd" / osd_id / "keyring"),
         "-n", f"osd.{osd_id}", "--add-key", osd_key)  # fmt: skip
    _run("ceph-osd", "-c", conf, "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid)
    cluster.pids["osd"] = _daemon(cluster, "ceph-osd", "-i", osd_id)
    _wait_osd_up(cluster, deadline)
    cluster.admin("osd", "pool", "create", cluster.pool, "8")
    cluster.admin("pool", "init", cluster.pool, program="rbd")
    cluster.admin("auth", "get-or-create", f"client.{cluster.user}", *USER_CAPS)
    cluster.key = cluster.admin("auth", "print-key", f"client.{cluster.user}").strip()


def _config(base: Path, fsid: str, mon_addrs: str, admin_keyring: str) -> str:
    return f"""[global]
fsid = {fsid}
mon host = {mon_addrs}
public addr = 127.0.0.1
cluster addr = 127.0.0.1
run dir = {base}/run
log file = {base}/log/$name.log
mon cluster log file = {base}/log/cluster.log
mon data = {base}/mon/$id
mgr data = {base}/mgr/$id
osd data = {base}/osd/$id
osd objectstore = memstore
memstore device bytes = {OSD_BYTES}
osd pool default size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
auth allow insecure global id reclaim = false
mon data avail warn = 1
[mgr]
mgr disabled modules = {_MGR_DISABLED}
[client]
keyring = {admin_keyring}
"""


def _daemon(cluster: SingleHostCeph, program: str, *args: str) -> int:
    name = program.removeprefix("ceph-")
    return spawn(
        [program, "-c", str(cluster.conf), "-f", *args], cluster.base / "log" / f"{name}.stderr"
    )


def _wait_osd_up(cluster: SingleHostCeph, deadline: float) -> None:
    last = ""
    while time.monotonic() < deadline:
        for name, pid in cluster.pids.items():
            if not pid_alive(pid):
                raise CephNotStarted(f"ceph-{name} exited: {_log_tail(cluster, name)}")
        last = cluster.admin("osd", "stat", "-f", "json", check=False)
        with contextlib.suppress(ValueError):
            if json.loads(last).get("num_up_osds") == 1:
                return
        time.sleep(0.3)
    raise CephNotStarted(
        f"the OSD was not up within {START_TIMEOUT_S:g}s (osd stat: {last.strip()!r}); "
        f"its log: {_log_tail(cluster, 'osd')}"
    )


def _daemons_said(cluster: SingleHostCeph) -> str:
    """The last log line of each daemon that died, else the monitor's."""
    dead = [name for name, pid in cluster.pids.items() if not pid_alive(pid)]
    return "; ".join(
        f"ceph-{name} {'exited' if name in dead else 'runs'}: {_log_tail(cluster, name)}"
        for name in (dead or ["mon"])
    )


def _log_tail(cluster: SingleHostCeph, name: str) -> str:
    for log in (
        cluster.base / "log" / f"{name}.stderr",
        *sorted((cluster.base / "log").glob(f"{name}.*.log")),
    ):
        with contextlib.suppress(OSError):
            lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
            if lines:
                return f"{log}: {lines[-1]}"
    return f"nothing in {cluster.base / 'log'}"


def _run(*argv: str, check: bool = True, stdin: str | None = None) -> str:
    command = " ".join(argv[:4])
    try:
        done = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise CephCommandFailed(f"`{command}` did not end in {COMMAND_TIMEOUT_S:g}s") from err
    if check and done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise CephCommandFailed(f"`{command}` exited {done.returncode}: {tail}")
    return done.stdout


def free_port_pair() -> int:
    """A loopback port P with P + 1 free too (the monitor takes both)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no two consecutive free loopback ports")


@pytest.fixture(scope="session")
def ceph(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SingleHostCeph]:
    """One single-host Ceph for the test session; stopped and removed at its end."""
    started = time.monotonic()
    try:
        cluster = single_host_ceph(tmp_path_factory.mktemp("ceph"), free_port_pair())
    except CephNotStarted as err:
        pytest.skip(f"no single-host Ceph: {err}")
    print(f"\nsingle-host Ceph up in {time.monotonic() - started:.1f}s at {cluster.base}")
    try:
        yield cluster
    finally:
        cluster.stop()
