"""How fast pvcctl answers: shell completion of object names, `--help`, `get vms`, next to
floors measured in the same run on the same machine.

- completion: what the shell runs on `pvcctl get vms <TAB>` and `pvcctl vm start <TAB>`
  (click's bash protocol, `_PVCCTL_COMPLETE=bash_complete`), which must list every VM
  (goal: under 250 ms);
- help:       `pvcctl --help`;
- get:        `pvcctl get vms` (a table to a pipe);
- floors:     `python -c pass` (the interpreter alone), and a Python process doing one raw
              urllib GET of the same names (/api/v1/names/vms: the least a completion that
              asks the API needs), and one of the whole list (what `get vms` reads).

It starts its own ZooKeeper and pvcapid, fills VMS VMs, takes the median of REPEATS runs of
each, prints the figures and writes JSON (with each figure as a ratio to both floors) to
bench/results/cli_startup.json.

Then, for each of --get-sizes (default 1,000 and 10,000 VMs, each with a status, under a
root of its own and a pvcapid whose watch cache has loaded): `pvcctl get vms` (the table)
and `pvcctl get vms -o json`, each against its floor, a Python process doing one raw
urllib GET of /api/v1/vms and json.loads of it (goal: both under 1 s). The last line:
`completion_ms=… get_1000_ms=… get_json_1000_ms=… get_10000_ms=… get_json_10000_ms=…`.

    .venv/bin/python bench/cli_startup.py [--vms 100] [--repeats 9] [--get-sizes 1000,10000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

# api_throughput puts the repository on sys.path (bench/ is not a package).
from api_throughput import fill, start_api, stop_api
from benchlib import REPO_ROOT, git_commit, git_dirty, nan_to_none, now_iso, nproc, summary

from localcluster.zookeeper import ZooKeeperServer
from zkstore import Store

DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "cli_startup.json"
PVCCTL = str(Path(sys.executable).parent / "pvcctl")
GOAL_S = 0.250
GET_GOAL_S = 1.0

RAW_GET = (
    "import json, sys, urllib.request\n"
    "json.load(urllib.request.urlopen(sys.argv[1] + sys.argv[2], timeout=60))\n"
)


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall time, CPU time (user + system) and stdout of one run. On a busy machine the
    wall time swings with the load; the CPU time much less."""
    cpu_before = cpu_of_children()
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{argv} exited {done.returncode}: {done.stderr.strip()[-300:]}")
    return elapsed, cpu_of_children() - cpu_before, done.stdout


def measure(repeats: int, argv: list[str], env: dict[str, str]) -> tuple[dict[str, Any], str]:
    run_timed(argv, env)  # warm the page cache and .pyc files: every figure starts warm
    samples, cpu, out = [], [], ""
    for _ in range(repeats):
        elapsed, used, out = run_timed(argv, env)
        samples.append(elapsed)
        cpu.append(used)
    figure = {"median_s": statistics.median(samples), **summary(samples)}
    return {**figure, "cpu_median_s": statistics.median(cpu)}, out


def bench(url: str, vms: int, repeats: int) -> dict[str, Any]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PVC_", "_PVCCTL"))}
    env = {**base, "PVC_SERVER": url, "XDG_CONFIG_HOME": tempfile.mkdtemp(prefix="pvc-home-")}
    figures: dict[str, Any] = {}
    figures["floor_python"], _ = measure(repeats, [sys.executable, "-c", "pass"], env)
    for name, path in (("floor_raw_get", "/api/v1/names/vms"), ("floor_raw_list", "/api/v1/vms")):
        figures[name], _ = measure(repeats, [sys.executable, "-c", RAW_GET, url, path], env)
    listed: dict[str, int] = {}
    for name, words in (
        ("completion_get", "pvcctl get vms "),
        ("completion_vm", "pvcctl vm start "),
    ):
        complete_env = {
            **env,
            "_PVCCTL_COMPLETE": "bash_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split())),
        }
        figures[name], out = measure(repeats, [PVCCTL], complete_env)
        listed[name] = sum(1 for line in out.splitlines() if line.startswith("plain,vm-"))
    figures["help"], _ = measure(repeats, [PVCCTL, "--help"], env)
    figures["get_vms"], table = measure(repeats, [PVCCTL, "get", "vms"], env)
    if len(table.splitlines()) != vms + 1:
        raise RuntimeError(f"get vms printed {len(table.splitlines())} lines for {vms} VMs")
    floors = {
        k: figures[k]["median_s"] for k in ("floor_python", "floor_raw_get", "floor_raw_list")
    }
    cpu_floors = {k: figures[k]["cpu_median_s"] for k in floors}
    ratios = {
        name: {
            **{f"to_{floor}": fig["median_s"] / value for floor, value in floors.items()},
            **{
                f"cpu_to_{floor}": fig["cpu_median_s"] / value
                for floor, value in cpu_floors.items()
                if value > 0
            },
        }
        for name, fig in figures.items()
        if not name.startswith("floor")
    }
    return {"figures": figures, "ratios": ratios, "names_listed": listed}


def get_figures(zk: ZooKeeperServer, size: int, repeats: int, workdir: Path) -> dict[str, Any]:
    """`get vms` and `get vms -o json` over ``size`` VMs, next to a raw GET + json.loads."""
    store = Store(zk.hosts, f"/bench-{uuid.uuid4().hex[:8]}", timeout=30.0)
    store.start()
    proc = None
    try:
        fill(store, [f"vm-{i:05d}" for i in range(size)])
        proc, url = start_api(zk.hosts, store.root, workdir / f"api-{size}.log")
        deadline = time.monotonic() + 300
        # Served from ZooKeeper until the watch cache has loaded (resourceVersion "0").
        while (
            json.load(urllib.request.urlopen(f"{url}/api/v1/vms"))["metadata"]["resourceVersion"]
            == "0"
            and time.monotonic() < deadline
        ):
            time.sleep(0.2)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PVC_", "_PVCCTL"))}
        env = {**base, "PVC_SERVER": url, "XDG_CONFIG_HOME": tempfile.mkdtemp(prefix="pvc-h-")}
        figures: dict[str, Any] = {}
        figures["floor_raw_list"], _ = measure(
            repeats, [sys.executable, "-c", RAW_GET, url, "/api/v1/vms"], env
        )
        figures["get_vms"], table = measure(repeats, [PVCCTL, "get", "vms"], env)
        figures["get_vms_json"], doc = measure(repeats, [PVCCTL, "get", "vms", "-o", "json"], env)
        if len(table.splitlines()) != size + 1 or len(json.loads(doc)["items"]) != size:
            raise RuntimeError(f"get vms did not list all {size} VMs")
        floor = figures["floor_raw_list"]["median_s"]
        for name in ("get_vms", "get_vms_json"):
            figures[name]["to_floor_raw_list"] = figures[name]["median_s"] / floor
        return figures
    finally:
        if proc is not None:
            stop_api(proc)
        store.stop()


def print_summary(report: dict[str, Any]) -> None:
    figures, ratios = report["figures"], report["ratios"]
    print(f"\npvcctl start-up, {report['vms']} VMs, median of {report['repeats']} runs")
    for name, fig in figures.items():
        line = (
            f"  {name:<14} {fig['median_s'] * 1000:7.1f} ms"
            f" (CPU {fig['cpu_median_s'] * 1000:6.1f} ms)"
        )
        if name in ratios:
            r = ratios[name]
            line += (
                f"   {r['to_floor_python']:.2f}x python -c pass,"
                f" {r['to_floor_raw_get']:.2f}x raw GET of names,"
                f" {r['to_floor_raw_list']:.2f}x of the list"
            )
        print(line)
    print(f"  names listed by completion: {report['names_listed']} (of {report['vms']})")
    verdict = "met" if report["completion_goal_met"] else "NOT met"
    print(f"  completion goal (< {GOAL_S * 1000:.0f} ms): {verdict}")
    last = [f"completion_ms={figures['completion_get']['median_s'] * 1000:.0f}"]
    for size, got in report.get("get", {}).items():
        floor = got["floor_raw_list"]["median_s"]
        print(f"  get over {size} VMs (goal < {GET_GOAL_S:.0f} s), raw GET + loads {floor:.3f} s:")
        for name in ("get_vms", "get_vms_json"):
            fig = got[name]
            print(
                f"    {name:<13} {fig['median_s']:.3f} s (CPU {fig['cpu_median_s']:.3f} s)"
                f"  {fig['to_floor_raw_list']:.2f}x the raw GET"
            )
        last += [
            f"get_{size}_ms={got['get_vms']['median_s'] * 1000:.0f}",
            f"get_json_{size}_ms={got['get_vms_json']['median_s'] * 1000:.0f}",
        ]
    print(f"  machine: {report['nproc']} CPUs, load average {report['loadavg']}")
    print(" ".join(last))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vms", type=int, default=100, help="VMs in the cluster listed")
    parser.add_argument("--repeats", type=int, default=9, help="runs of each, median taken")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--get-sizes",
        default="1000,10000",
        help="VM counts to time get vms over, comma-separated ('' for none)",
    )
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.get_sizes.split(",") if n.strip()]
    report: dict[str, Any] = {
        "started_at": now_iso(),
        "commit": git_commit(),
        "dirty": git_dirty(),
        "nproc": nproc(),
        "vms": args.vms,
        "repeats": args.repeats,
    }
    with tempfile.TemporaryDirectory(prefix="pvc-bench-") as tmp:
        workdir = Path(tmp)
        zk = ZooKeeperServer(workdir / "zookeeper")
        zk.start()
        store = Store(zk.hosts, f"/bench-{uuid.uuid4().hex[:8]}", timeout=30.0)
        store.start()
        proc = None
        try:
            fill(store, [f"vm-{i:05d}" for i in range(args.vms)])
            proc, url = start_api(zk.hosts, store.root, workdir / "api.log")
            report.update(bench(url, args.vms, args.repeats))
            stop_api(proc)
            proc = None
            report["get"] = {
                size: get_figures(zk, size, max(3, args.repeats // 2), workdir) for size in sizes
            }
        finally:
            if proc is not None:
                stop_api(proc)
            store.stop()
            zk.stop()
    report["completion_goal_s"] = GOAL_S
    report["completion_goal_met"] = all(
        report["figures"][name]["median_s"] < GOAL_S and count == args.vms
        for name, count in report["names_listed"].items()
    )
    report["finished_at"] = now_iso()
    report["loadavg"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(nan_to_none(report), indent=2))
    print_summary(report)
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
