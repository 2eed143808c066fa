"""The primary's VM informer at scale: memory per VM, load time and ZooKeeper requests (issue 16).

    .venv/bin/python bench/informer_memory.py                    # 2,000 and 10,000 VMs
    .venv/bin/python bench/informer_memory.py --vms 500 --vms 2000
    .venv/bin/python bench/informer_memory.py --baseline-rev 027ad65   # the TreeCache one

A ZooKeeper of its own (localcluster's server, in a temporary folder). One VM is made
through the Store API (labels, two disks, a NIC; a Running status with its volumes, MACs and
boot record; a placement), and its three znodes (spec, status, placement) are copied, renamed,
to N VMs with async creates. Then, for each N and each informer ("old": zkstore/informer.py at
``--baseline-rev``, kazoo's TreeCache; "new": this tree's), a fresh process:

- with tracemalloc: the bytes the loaded informer holds (cache, watches kazoo keeps for it),
  per VM; then the parsed objects (``objects()``) on top, per VM;
- without tracemalloc: the load time (``start()``), the RSS it added, and the requests its
  session sent for the load (ZooKeeper's ``cons``: the connection's ``recved``, pings
  included), then the requests one new VM (spec, status, placement, written by another
  client) costs it until all three are in its cache.

Last line: ``new_bytes_per_vm=… old_bytes_per_vm=… new_load_s=… old_load_s=…`` at the largest N.
JSON: bench/results/informer_memory.json (``--out``).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from benchlib import REPO_ROOT, now_iso
from halib import environment, write_json

from localcluster.zookeeper import ZooKeeperServer, four_letter
from schemas import Placement, VirtualMachine, VirtualMachineStatus, VMPhase, parse_resource
from zkstore import ResourceInformer, Store, paths
from zkstore.codec import decode

ROOT = "/bench"
TEMPLATE = "tmpl-vm"
NEW_VM: tuple[tuple[str | None, bytes], ...] = (
    (None, b'{"kind":"VirtualMachine"}'),
    (paths.PLACEMENT, b'{"node":"hv01"}'),
    (paths.STATUS, b'{"phase":"Running"}'),
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- the data ---------------------------------------------------------------------------


def template(store: Store) -> dict[str, bytes]:
    """A VM as the cluster writes it, through the Store API: its three znodes' bytes."""
    vm = parse_resource(
        {
            "apiVersion": "pvc/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": TEMPLATE, "labels": {"app": "web", "tier": "frontend"}},
            "spec": {
                "memory": "2Gi",
                "vcpus": 2,
                "disks": [
                    {"name": "root", "pool": "ceph", "size": "20Gi", "from": "debian-12"},
                    {"name": "data", "pool": "ceph", "size": "100Gi"},
                ],
                "nics": [{"network": "lan"}],
                "placement": {"home": "hv01"},
            },
        }
    )
    assert isinstance(vm, VirtualMachine)
    store.create(vm)
    status = VirtualMachineStatus.model_validate(
        {
            "phase": VMPhase.RUNNING,
            "node": "hv01",
            "epoch": 7,
            "domain_uuid": "6f1c3a52-2b7e-4c8e-9d7a-0c4f2f6b9e11",
            "macs": ["52:54:00:3a:7c:1e"],
            "volumes": [
                {"disk": d, "pool": "ceph", "volume": f"{TEMPLATE}_{d}", "size": s << 30}
                | {"pool_type": "rbd", "created_by": "hv01"}
                for d, s in (("root", 20), ("data", 100))
            ],
            "booted": {"vcpus": "2", "memory": "2Gi", "disks": "root,data", "nics": "lan"},
        }
    )
    store.write_status(VirtualMachine, TEMPLATE, status)
    store.write_placement(TEMPLATE, Placement(node="hv01", reason="scheduled"), epoch=None)
    base = store.path(paths.resource("vms", TEMPLATE))
    found = {
        "spec": store.client.get(base)[0],
        "status": store.client.get(f"{base}/{paths.STATUS}")[0],
        "placement": store.client.get(f"{base}/{paths.PLACEMENT}")[0],
    }
    store.client.delete(store.path(paths.node_index("hv01")), recursive=True)
    store.client.delete(base, recursive=True)
    return found


def populate(store: Store, znodes: dict[str, bytes], first: int, last: int) -> None:
    """VMs ``first``..``last - 1``: the template's znodes renamed, async creates in batches."""
    old = TEMPLATE.encode()
    vms = store.path(paths.kind_root("vms"))
    for start in range(first, last, 1000):
        pending = []
        for i in range(start, min(last, start + 1000)):
            name = f"vm-{i:05d}"
            data = znodes["spec"].replace(old, name.encode())
            pending.append(store.client.create_async(f"{vms}/{name}", data))
        for result in pending:
            result.get()
        pending = []
        for i in range(start, min(last, start + 1000)):
            renamed = f"vm-{i:05d}"
            for child in (paths.STATUS, paths.PLACEMENT):
                data = znodes[child].replace(old, renamed.encode())
                pending.append(store.client.create_async(f"{vms}/{renamed}/{child}", data))
        for result in pending:
            result.get()


# -- one measurement, in a fresh process ---------------------------------------------------


def load_impl(impl: str, baseline: Path) -> type[ResourceInformer[VirtualMachine]]:
    if impl == "new":
        return ResourceInformer
    spec = importlib.util.spec_from_file_location("informer_baseline", baseline)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ResourceInformer  # type: ignore[no-any-return]


def recved(port: int, session: int) -> int:
    """Packets ZooKeeper received on one session's connection (``cons``)."""
    for line in four_letter(port, "cons", timeout=5.0).splitlines():
        if f"sid=0x{session:x}," in line or f"sid=0x{session:x})" in line:
            found = re.search(r"recved=(\d+)", line)
            if found:
                return int(found.group(1))
    raise RuntimeError(f"session 0x{session:x} not in cons")


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def child(args: argparse.Namespace) -> dict[str, Any]:
    cls = load_impl(args.impl, Path(args.baseline))
    port = int(args.hosts.rsplit(":", 1)[1])
    store = Store(args.hosts, ROOT, timeout=30.0)
    store.start()
    gc.collect()
    result: dict[str, Any] = {"impl": args.impl, "vms": args.n}
    if args.trace:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        informer = cls(store, VirtualMachine)
        informer.start(600)
        gc.collect()
        cache = tracemalloc.get_traced_memory()[0] - before
        objects = informer.objects()
        gc.collect()
        parsed = tracemalloc.get_traced_memory()[0] - before - cache
        assert len(objects) == args.n, len(objects)
        result |= {"cache_bytes_per_vm": cache / args.n, "parsed_bytes_per_vm": parsed / args.n}
    else:
        session = store.client.client_id[0]
        rss0, sent0 = rss_kb(), recved(port, session)
        started = time.monotonic()
        informer = cls(store, VirtualMachine)
        informer.start(600)
        load_s = time.monotonic() - started
        sent1 = recved(port, session)
        gc.collect()
        assert len(informer.keys()) == args.n, len(informer.keys())
        result |= {
            "load_s": load_s,
            "rss_added_mb": (rss_kb() - rss0) / 1024,
            "load_requests": sent1 - sent0,
            "load_requests_per_vm": (sent1 - sent0) / args.n,
        }
        result["new_vm_requests"] = new_vm_requests(args.hosts, informer, port, session)
    informer.close()
    store.stop()
    return result


def new_vm_requests(hosts: str, informer: Any, port: int, session: int) -> int:
    """Requests one new VM (spec, then status, then placement, as the cluster writes them,
    from another client) costs the informer until all three are in its cache."""
    writer = Store(hosts, ROOT, timeout=30.0)
    writer.start()
    try:
        before = recved(port, session)
        base = f"{writer.path(paths.kind_root('vms'))}/zz-new"
        # As the cluster writes them, each after the informer saw the one before: the API's
        # spec, the scheduler's placement, the node's status.
        for child, data in NEW_VM:
            writer.client.create(f"{base}/{child}" if child else base, data)
            deadline = time.monotonic() + 30
            while informer.data("zz-new", child) is None:
                if time.monotonic() > deadline:
                    raise TimeoutError("the new VM never reached the informer")
                time.sleep(0.01)
        time.sleep(0.5)  # reads sent after the last one we saw
        spent = recved(port, session) - before
        writer.client.delete(base, recursive=True)
        return spent
    finally:
        writer.stop()


def measure(hosts: str, impl: str, n: int, baseline: Path, trace: bool) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--child",
        "--hosts",
        hosts,
        "--impl",
        impl,
        "--n",
        str(n),
        "--baseline",
        str(baseline),
    ] + (["--trace"] if trace else [])
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{impl} n={n} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# -- the run -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vms", type=int, action="append", help="N (repeat); 2000 and 10000")
    parser.add_argument("--baseline-rev", default="main", help="git rev of the old informer")
    out = REPO_ROOT / "bench/results/informer_memory.json"
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--repeat", type=int, default=3, help="load runs per N (best kept)")
    parser.add_argument("--only", choices=("old", "new"), help="measure one informer only")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--hosts", help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--baseline", help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    sizes = sorted(args.vms or [2000, 10000])
    with tempfile.TemporaryDirectory(prefix="bench-informer-") as tmp:
        baseline = Path(tmp) / "informer_baseline.py"
        baseline.write_text(
            subprocess.run(
                ["git", "show", f"{args.baseline_rev}:zkstore/informer.py"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        server = ZooKeeperServer(Path(tmp) / "zookeeper")
        server.start()
        runs: list[dict[str, Any]] = []
        try:
            store = Store(server.hosts, ROOT, timeout=30.0)
            store.start()
            store.client.ensure_path(store.path(paths.kind_root("vms")))
            znodes = template(store)
            sizes_of = {k: len(v) for k, v in znodes.items()}
            log(f"a VM's znodes: {sizes_of} bytes")
            made = 0
            for n in sizes:
                started = time.monotonic()
                populate(store, znodes, made, n)
                made = n
                log(f"{n} VMs written in {time.monotonic() - started:.1f}s")
                for impl in [args.only] if args.only else ["old", "new"]:
                    tries = [
                        measure(server.hosts, impl, n, baseline, False) for _ in range(args.repeat)
                    ]
                    loads = sorted(t["load_s"] for t in tries)
                    run = tries[0] | {
                        "load_s": loads[0],
                        "load_s_median": loads[len(loads) // 2],
                        "load_s_all": [t["load_s"] for t in tries],
                    }
                    run |= measure(server.hosts, impl, n, baseline, trace=True)
                    runs.append(run)
                    log(
                        f"{impl} n={n}: cache {run['cache_bytes_per_vm']:.0f} B/VM, parsed "
                        f"+{run['parsed_bytes_per_vm']:.0f} B/VM, load {run['load_s']:.2f}s "
                        f"(median {run['load_s_median']:.2f}s), "
                        f"RSS +{run['rss_added_mb']:.1f} MB, {run['load_requests']} requests "
                        f"({run['load_requests_per_vm']:.2f}/VM), a new VM "
                        f"{run['new_vm_requests']} requests"
                    )
            store.stop()
        finally:
            server.stop()
    result = {
        "bench": "informer_memory",
        "when": now_iso(),
        "baseline_rev": args.baseline_rev,
        "znode_bytes": sizes_of,
        "template_spec": decode(znodes["spec"]),
        "runs": runs,
        "environment": environment(),
    }
    write_json(args.out, result)
    last = {r["impl"]: r for r in runs if r["vms"] == sizes[-1]}
    print(
        " ".join(
            f"{impl}_bytes_per_vm={r['cache_bytes_per_vm']:.0f} {impl}_load_s={r['load_s']:.2f}"
            for impl, r in sorted(last.items(), reverse=True)
        )
    )


if __name__ == "__main__":
    main()
