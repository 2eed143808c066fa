"""Creating a VM's volume through PVC's node path, next to the raw tools in the same run.

What one node does for each new disk in a storage pool (controllers/vm_disks.py
volumes_here, against a real ZooKeeper): read the create-once record after a sync,
create it (``creating``), make the volume (the pool's backend), read its size, mark the
record ``created`` (compare-and-set), and find the volume's source for the domain XML.
The floor, interleaved with it: the same pool's raw tool making a volume of the same size
(``qemu-img create`` for a folder; ``rbd create`` for Ceph), plus one ZooKeeper create
and one set (the record's two writes), with no PVC code.

    .venv/bin/python bench/volumes.py              # folder pool, 30 volumes each
    .venv/bin/python bench/volumes.py --runs 50 --rbd   # also a single-host Ceph

The last line: ``folder_p50_ms=… folder_floor_ms=… folder_ratio=…`` (and the rbd ones).
JSON to bench/results/volumes.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchlib import REPO_ROOT, now_iso, percentile, summary
from failover import environment, write_json

sys.path.insert(0, str(REPO_ROOT))

from controllers.vm_disks import volumes_here
from hypervisor import LibvirtDriver, write_test_host_xml
from localcluster.zookeeper import ZooKeeperServer
from schemas import StoragePool, VirtualMachine, parse_resource
from zkstore import Disks, Store
from zkstore.events import EventLog

DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "volumes.json"
SIZE = "64Mi"
SIZE_BYTES = 64 * 2**20


def vm(name: str, pool: str) -> VirtualMachine:
    obj = parse_resource(
        {
            "apiVersion": "pvc/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": name},
            "spec": {"memory": "64Mi", "disks": [{"name": "d", "pool": pool, "size": SIZE}]},
        }
    )
    assert isinstance(obj, VirtualMachine)
    return obj


def pvc_run(store: Store, driver: LibvirtDriver, pool: str, runs: int) -> list[float]:
    disks, events = Disks(store), EventLog(store)
    times = []
    for _ in range(runs):
        machine = vm(f"bench-{uuid.uuid4().hex[:8]}", pool)
        started = time.perf_counter()
        found = volumes_here(disks, driver, events, "node1", machine, {"d": "vda"})
        times.append(time.perf_counter() - started)
        if found.reason is not None:
            raise SystemExit(f"PVC's path failed: {found.reason}: {found.problem}")
    return times


def floor_run(store: Store, make: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        name = f"floor-{uuid.uuid4().hex[:8]}"
        znode = store.path(f"/bench-floor/{name}")
        command = [part.replace("{name}", name) for part in make]
        started = time.perf_counter()
        store.client.create(znode, b"{}", makepath=True)
        subprocess.run(command, check=True, capture_output=True)
        store.client.set(znode, b"{}")
        times.append(time.perf_counter() - started)
    return times


def measure(
    store: Store, driver: LibvirtDriver, pool: str, make: list[str], runs: int
) -> dict[str, Any]:
    pvc: list[float] = []
    floor: list[float] = []
    for batch in range(2):  # interleaved, alternately first
        half = runs // 2 + (runs % 2 if batch else 0)
        if batch % 2 == 0:
            pvc += pvc_run(store, driver, pool, half)
            floor += floor_run(store, make, half)
        else:
            floor += floor_run(store, make, half)
            pvc += pvc_run(store, driver, pool, half)
    p50, floor_p50 = percentile(pvc, 50), percentile(floor, 50)
    return {
        "pvc": summary(pvc),
        "floor": summary(floor),
        "ratio_p50": p50 / floor_p50,
        "p50_ms": p50 * 1000,
        "floor_p50_ms": floor_p50 * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rbd", action="store_true", help="also an rbd pool (single-host Ceph)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pvc-bench-volumes-"))
    zookeeper = ZooKeeperServer(work / "zookeeper")
    zookeeper.start()
    store = Store(zookeeper.hosts, "/bench", timeout=10.0)
    store.start()
    store.ensure_layout()
    driver = LibvirtDriver(write_test_host_xml(work / "host.xml", 4096, 4))
    result: dict[str, Any] = {"started": now_iso(), "runs": args.runs, "size": SIZE}
    ceph = None
    try:
        folder = work / "pool"
        folder.mkdir()
        store.create(
            StoragePool.model_validate(
                {
                    "metadata": {"name": "folder"},
                    "spec": {"type": "shared", "path": str(folder)},
                }
            )
        )
        make = ["qemu-img", "create", "-q", "-f", "qcow2", f"{folder}/{{name}}", str(SIZE_BYTES)]
        result["folder"] = measure(store, driver, "folder", make, args.runs)
        if args.rbd:
            from tests.ceph import CephNotStarted, free_port_pair, single_host_ceph

            try:
                ceph = single_host_ceph(work / "ceph", free_port_pair())
            except CephNotStarted as exc:
                result["rbd"] = {"skipped": str(exc)}
            else:
                store.create(StoragePool.model_validate(ceph.storage_pool("ceph")))
                size_mib = str(SIZE_BYTES // 2**20)
                conf = ["-c", str(ceph.conf)]
                make = ["rbd", *conf, "create", "--size", size_mib, f"{ceph.pool}/{{name}}"]
                result["rbd"] = measure(store, driver, "ceph", make, args.runs)
    finally:
        if ceph is not None:
            ceph.stop()
        driver.close()
        store.stop()
        zookeeper.stop()
        shutil.rmtree(work, ignore_errors=True)
    result["environment"] = environment()
    write_json(args.out, result)
    line = []
    for kind in ("folder", "rbd"):
        figures = result.get(kind)
        if figures and "p50_ms" in figures:
            print(
                f"{kind}: PVC p50 {figures['p50_ms']:.1f} ms, floor (raw tool + 2 ZooKeeper "
                f"writes) p50 {figures['floor_p50_ms']:.1f} ms, ratio {figures['ratio_p50']:.2f}"
            )
            line += [
                f"{kind}_p50_ms={figures['p50_ms']:.1f}",
                f"{kind}_floor_ms={figures['floor_p50_ms']:.1f}",
                f"{kind}_ratio={figures['ratio_p50']:.2f}",
            ]
        elif figures:
            print(f"{kind}: skipped: {figures['skipped']}")
    print(" ".join(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
