"""`get vms` and apply throughput of pvcapid, next to the floor of raw kazoo reads.

For each size (default 1,000 and 10,000 VMs, each with a status) it measures,
in one run on one machine:

- list:      GET /api/v1/vms (the whole list as JSON), median of a few;
- one by one: GET /api/v1/vms/NAME for every VM over one keep-alive connection;
- pvcctl:    `pvcctl get vms` end to end (process start, HTTP, table to a pipe),
             and the table rendering alone (in process);
- floor:     the same data read with raw kazoo: every spec and status znode
             pipelined (get_async, what a list needs), and one by one (sync get);
- and apply of 1,000 objects in one POST /api/v1/apply (created, then
  unchanged, then configured), next to 1,000 raw kazoo creates of the same bytes,
  one at a time and in transactions of as many as the bulk apply puts in one
  (zkstore/bulkwrite.py SEGMENT).

It starts its own ZooKeeper (a temp dir, a free port) and its own pvcapid
process, fills ZooKeeper directly (fast, pipelined), prints a summary and writes
JSON to bench/results/api_throughput.json.

    .venv/bin/python bench/api_throughput.py
    .venv/bin/python bench/api_throughput.py --sizes 1000 --apply 200
    .venv/bin/python bench/api_throughput.py --sizes "" --apply 1000   # the apply alone
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from cli.output import render  # noqa: E402
from localcluster.process import free_port  # noqa: E402
from localcluster.zookeeper import ZooKeeperServer  # noqa: E402
from zkstore import Store  # noqa: E402
from zkstore.bulkwrite import SEGMENT  # noqa: E402
from zkstore.codec import encode  # noqa: E402

DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "api_throughput.json"
PVCCTL = str(Path(sys.executable).parent / "pvcctl")
LIST_REPEATS = 5
BATCH = 2000  # pipelined kazoo requests in flight at once


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def median_of(repeats: int, fn: Callable[[], Any]) -> tuple[float, list[float]]:
    samples = [timed(fn)[0] for _ in range(repeats)]
    return statistics.median(samples), samples


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round((len(ordered) - 1) * q / 100))]


def vm_spec(name: str, memory: str = "64Mi") -> dict[str, Any]:
    return {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {
            "name": name,
            "labels": {"app": "bench", "tier": "web"},
            "annotations": {},
            "finalizers": [],
            "uid": str(uuid.uuid4()),
            "generation": 1,
            "creationTimestamp": "2026-01-01T00:00:00.000000Z",
        },
        "spec": {"vcpus": 1, "memory": memory, "runStrategy": "Always"},
    }


def vm_status(node: str) -> dict[str, Any]:
    return {
        "phase": "Running",
        "node": node,
        "observedGeneration": 1,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Running",
                "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00.000000Z",
            }
        ],
    }


def pipelined(start: Callable[[Any], Any], args: Sequence[Any]) -> list[Any]:
    """Run kazoo *_async calls with at most BATCH in flight; returns their results."""
    results: list[Any] = []
    for first in range(0, len(args), BATCH):
        pending = [start(arg) for arg in args[first : first + BATCH]]
        results.extend(p.get() for p in pending)
    return results


def fill(store: Store, names: Sequence[str]) -> None:
    root = store.path("/resources/vms")
    client = store.client
    specs = [(f"{root}/{n}", encode(vm_spec(n))) for n in names]
    statuses = [
        (f"{root}/{n}/status", encode(vm_status(f"node{i % 3 + 1}"))) for i, n in enumerate(names)
    ]
    pipelined(lambda item: client.create_async(*item), specs)
    pipelined(lambda item: client.create_async(*item), statuses)


def floor_pipelined(store: Store) -> int:
    """What a list needs from ZooKeeper: children, then every spec and status, pipelined."""
    root = store.path("/resources/vms")
    names = store.client.get_children(root)
    paths = [f"{root}/{n}" for n in names] + [f"{root}/{n}/status" for n in names]
    reads = pipelined(store.client.get_async, paths)
    return sum(len(data) for data, _ in reads)


def floor_one_by_one(store: Store, names: Sequence[str]) -> None:
    root = store.path("/resources/vms")
    for name in names:
        store.client.get(f"{root}/{name}")
        store.client.get(f"{root}/{name}/status")


def start_api(zookeeper: str, root: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "PVC_ZOOKEEPER": zookeeper, "PVC_ROOT": root}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "api.server", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"pvcapid exited {proc.returncode}; see {log}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"pvcapid did not answer within 300s; see {log}")


def stop_api(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def bench_size(zk: ZooKeeperServer, size: int, workdir: Path) -> dict[str, Any]:
    root = f"/bench-{uuid.uuid4().hex[:8]}"
    store = Store(zk.hosts, root, timeout=30.0)
    store.start()
    names = [f"vm-{i:05d}" for i in range(size)]
    fill_s, _ = timed(lambda: fill(store, names))
    started = time.perf_counter()
    proc, url = start_api(zk.hosts, root, workdir / f"api-{size}.log")
    http = httpx.Client(base_url=url, timeout=120)
    try:
        serving_s = time.perf_counter() - started
        # pvcapid serves from ZooKeeper until its watch cache is loaded (list
        # resourceVersion "0"); measure the cache, so wait for it.
        while http.get("/api/v1/vms").json()["metadata"]["resourceVersion"] == "0":
            time.sleep(0.1)
        startup_s = time.perf_counter() - started
        listed = http.get("/api/v1/vms").json()
        assert len(listed["items"]) == size, len(listed["items"])
        list_s, list_samples = median_of(LIST_REPEATS, lambda: http.get("/api/v1/vms").content)
        body_bytes = len(http.get("/api/v1/vms").content)
        floor_list_s, floor_samples = median_of(LIST_REPEATS, lambda: floor_pipelined(store))

        def pvcctl_table() -> None:
            out = subprocess.run(
                [PVCCTL, "--server", url, "get", "vms"], capture_output=True, check=True
            )
            assert out.stdout.count(b"\n") == size + 1

        pvcctl_s, pvcctl_samples = median_of(3, pvcctl_table)

        from rich.console import Console

        def render_only() -> None:
            render(
                "VirtualMachine",
                listed["items"],
                "table",
                Console(file=io.StringIO(), width=10_000),
            )

        render_s, _ = median_of(3, render_only)
        # Drop the parsed list before the one-by-one runs: a big heap in this process
        # would bill the client's garbage collection to the server and the floor alike.
        listed.clear()
        gc.collect()
        per_get: list[float] = []

        def one_by_one() -> None:
            for name in names:
                t0 = time.perf_counter()
                http.get(f"/api/v1/vms/{name}").raise_for_status()
                per_get.append(time.perf_counter() - t0)

        gets_s, _ = timed(one_by_one)
        floor_gets_s, _ = timed(lambda: floor_one_by_one(store, names))

        return {
            "vms": size,
            "fill_s": fill_s,
            "api_serving_s": serving_s,
            "api_startup_s": startup_s,
            "list": {"median_s": list_s, "samples_s": list_samples, "bytes": body_bytes},
            "floor_list": {"median_s": floor_list_s, "samples_s": floor_samples},
            "one_by_one": {
                "total_s": gets_s,
                "per_get_p50_s": pct(per_get, 50),
                "per_get_p99_s": pct(per_get, 99),
                "gets_per_s": size / gets_s,
            },
            "floor_one_by_one": {"total_s": floor_gets_s, "per_vm_s": floor_gets_s / size},
            "pvcctl_get_table": {"median_s": pvcctl_s, "samples_s": pvcctl_samples},
            "render_table_only_s": render_s,
            "ratio": {
                "list_over_floor": list_s / floor_list_s,
                "one_by_one_over_floor": gets_s / floor_gets_s,
                "pvcctl_over_floor": pvcctl_s / floor_list_s,
            },
        }
    finally:
        http.close()
        stop_api(proc)
        store.client.delete(root, recursive=True)
        store.stop()


def bench_apply(zk: ZooKeeperServer, count: int, workdir: Path) -> dict[str, Any]:
    root = f"/bench-{uuid.uuid4().hex[:8]}"
    store = Store(zk.hosts, root, timeout=30.0)
    store.start()
    proc, url = start_api(zk.hosts, root, workdir / "api-apply.log")
    http = httpx.Client(base_url=url, timeout=600)
    try:
        objects: list[dict[str, Any]] = [
            {
                "apiVersion": "pvc/v1",
                "kind": "VirtualMachine",
                "metadata": {"name": f"ap-{i:05d}", "labels": {"app": "bench"}},
                "spec": {"memory": "64Mi"},
            }
            for i in range(count)
        ]

        def apply(body: list[dict[str, Any]], outcome: str) -> None:
            result = http.post("/api/v1/apply", json=body)
            result.raise_for_status()
            outcomes = {i["outcome"] for i in result.json()["items"]}
            assert outcomes == {outcome}, outcomes

        created_s, _ = timed(lambda: apply(objects, "created"))
        unchanged_s, _ = timed(lambda: apply(objects, "unchanged"))
        changed = [{**o, "spec": {"memory": "128Mi"}} for o in objects]
        configured_s, _ = timed(lambda: apply(changed, "configured"))
        manifest = workdir / "apply.yaml"
        manifest.write_text(yaml.safe_dump_all(objects))
        pvcctl_s, _ = timed(
            lambda: subprocess.run(
                [PVCCTL, "--server", url, "apply", "-f", str(manifest)],
                capture_output=True,
                check=True,
            )
        )
        scratch = store.path("/bench-scratch")
        store.client.ensure_path(scratch)
        payloads = [encode(vm_spec(o["metadata"]["name"])) for o in objects]

        def raw_creates() -> None:
            for i, data in enumerate(payloads):
                store.client.create(f"{scratch}/{i}", data)

        floor_s, _ = timed(raw_creates)

        def multi_creates() -> None:
            for first in range(0, count, SEGMENT):
                txn = store.client.transaction()
                for i in range(first, min(first + SEGMENT, count)):
                    txn.create(f"{scratch}/multi-{i}", payloads[i])
                txn.commit()

        multi_floor_s, _ = timed(multi_creates)
        return {
            "objects": count,
            "created_s": created_s,
            "unchanged_s": unchanged_s,
            "configured_s": configured_s,
            "pvcctl_apply_configured_s": pvcctl_s,
            "floor_raw_creates_s": floor_s,
            "floor_multi_creates_s": multi_floor_s,
            "created_per_s": count / created_s,
            "per_object_s": {
                "created": created_s / count,
                "unchanged": unchanged_s / count,
                "configured": configured_s / count,
                "floor_create": floor_s / count,
                "floor_multi_create": multi_floor_s / count,
            },
            "ratio": {
                "created_over_floor": created_s / floor_s,
                "unchanged_over_floor": unchanged_s / floor_s,
                "configured_over_floor": configured_s / floor_s,
                "created_over_multi_floor": created_s / multi_floor_s,
            },
        }
    finally:
        http.close()
        stop_api(proc)
        store.client.delete(root, recursive=True)
        store.stop()


def print_summary(report: dict[str, Any]) -> None:
    def ms(s: float) -> str:
        return f"{s * 1000:.1f} ms" if s < 10 else f"{s:.1f} s"

    print(f"\npvcapid throughput ({report['machine']['nproc']} CPUs)")
    for r in report["sizes"]:
        print(
            f"\n  {r['vms']} VMs (pvcapid serving after {ms(r['api_serving_s'])}, "
            f"watch cache loaded after {ms(r['api_startup_s'])})"
        )
        print(
            f"    list GET /api/v1/vms   {ms(r['list']['median_s']):>10}   "
            f"floor (pipelined kazoo reads) {ms(r['floor_list']['median_s'])}   "
            f"x{r['ratio']['list_over_floor']:.2f}"
        )
        o = r["one_by_one"]
        print(
            f"    one-by-one GETs        {ms(o['total_s']):>10}   "
            f"({o['gets_per_s']:.0f}/s, p50 {ms(o['per_get_p50_s'])}, p99 {ms(o['per_get_p99_s'])})"
            f"   floor (sync kazoo gets) {ms(r['floor_one_by_one']['total_s'])}   "
            f"x{r['ratio']['one_by_one_over_floor']:.2f}"
        )
        print(
            f"    pvcctl get vms (table) {ms(r['pvcctl_get_table']['median_s']):>10}   "
            f"(render alone {ms(r['render_table_only_s'])})   "
            f"x{r['ratio']['pvcctl_over_floor']:.2f} of the list floor"
        )
    a = report["apply"]
    if a:
        p = a["per_object_s"]
        print(f"\n  apply of {a['objects']} objects in one request")
        print(
            f"    created {ms(a['created_s'])}, unchanged {ms(a['unchanged_s'])}, "
            f"configured {ms(a['configured_s'])}; "
            f"pvcctl apply -f {ms(a['pvcctl_apply_configured_s'])}"
        )
        print(
            f"    per object: created {ms(p['created'])}, configured {ms(p['configured'])}, "
            f"floor (raw kazoo create) {ms(p['floor_create'])}   "
            f"x{a['ratio']['created_over_floor']:.2f}"
        )
        print(
            f"    created {a['created_per_s']:.0f}/s; floor in transactions of {SEGMENT} "
            f"{ms(p['floor_multi_create'])} per object   "
            f"x{a['ratio']['created_over_multi_floor']:.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000", help="VM counts, comma-separated")
    parser.add_argument(
        "--apply", type=int, default=1000, help="objects in the apply test (0: skip)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    report: dict[str, Any] = {
        "started_at": now_iso(),
        "machine": {"nproc": os.cpu_count(), "platform": platform.platform()},
        "sizes": [],
        "apply": None,
    }
    with tempfile.TemporaryDirectory(prefix="pvc-bench-") as tmp:
        workdir = Path(tmp)
        zk = ZooKeeperServer(workdir / "zookeeper")
        zk.start()
        try:
            for size in sizes:
                print(f"measuring {size} VMs...", file=sys.stderr)
                report["sizes"].append(bench_size(zk, size, workdir))
            if args.apply:
                print(f"measuring apply of {args.apply} objects...", file=sys.stderr)
                report["apply"] = bench_apply(zk, args.apply, workdir)
        finally:
            zk.stop()
    report["finished_at"] = now_iso()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print_summary(report)
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
