"""Reconcile isolation: apply -> Running of N VMs while one VM is stuck in a graceful shutdown,
against the same run without it.

A node's VM controller must wait out a guest's shutdownTimeout without holding a
worker, so one VM stuck in a 30 s ACPI shutdown delays no other VM (issue 3). The
stuck VM has to be a real KVM guest: on the libvirt test driver shutdown() completes
at once. So this runs one local cluster with one node on the host's libvirtd
(qemu:///system, reused when it answers, else started as a plain process and stopped
after) and 64 MiB diskless KVM guests, which have no OS and ignore ACPI.

Two phases in one cluster, in this order:

1. baseline: apply N VMs (one POST /api/v1/apply each, sequential), time each from its
   apply to the first GET /api/v1/vms that shows it Running; delete them and wait
   until libvirt has none left.
2. stuck: start one more VM, set it Halted with shutdownTimeout 30s (its guest ignores
   ACPI, so it stays Stopping for 30 s), then the same N applies and timing. The run
   checks that the stuck VM was still Stopping when the last of the N was Running.

Where KVM is unavailable (no root, no /dev/kvm, no libvirtd) it says why and exits 0.

    .venv/bin/python bench/reconcile_isolation.py             # 50 VMs, 30 s shutdown
    .venv/bin/python bench/reconcile_isolation.py --vms 10 --shutdown-timeout 20
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from benchlib import nan_to_none

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for entry in (str(REPO_ROOT), str(BENCH_DIR)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

from apply_latency import (  # noqa: E402  (bench/ is not a package)
    Poller,
    Target,
    apply_one,
    delete_vms,
    kvm_unavailable_reason,
    local_cluster,
    log_problems,
    ms,
    system_libvirtd,
    vm_object,
    wait_domains_gone,
)
from benchlib import git_commit, git_dirty, now_iso, nproc, percentile, summary  # noqa: E402

DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "reconcile_isolation.json"
MERGE_PATCH = {"content-type": "application/merge-patch+json"}


def vm_status(client: httpx.Client, name: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/vms/{name}")
    response.raise_for_status()
    return dict(response.json().get("status") or {})


def wait_phase(client: httpx.Client, name: str, phase: str, timeout: float) -> float:
    """Wait until the VM shows `phase`; returns time.monotonic() when it did."""
    deadline = time.monotonic() + timeout
    while True:
        if vm_status(client, name).get("phase") == phase:
            return time.monotonic()
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{name} did not reach {phase} within {timeout:g} s")
        time.sleep(0.05)


def measure(
    args: argparse.Namespace, target: Target, names: list[str], label: str
) -> dict[str, Any]:
    """Apply `names` one by one and time apply -> Running of each."""
    client = httpx.Client(base_url=target.server, timeout=30.0)
    poll_client = httpx.Client(base_url=target.server, timeout=30.0)
    poller = Poller(poll_client, interval=args.poll_interval)
    poller.watch(names)
    poller.start()
    sent_at: dict[str, float] = {}
    print(f"[{label}] applying {len(names)} VMs ...")
    first = time.monotonic()
    try:
        for name in names:
            sent, _latency, _outcome = apply_one(client, name)
            sent_at[name] = sent
        applied = time.monotonic()
        deadline = applied + args.timeout
        while poller.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        poller.stop()
        poll_client.close()
        client.close()
    latencies = {n: poller.running_at[n] - sent_at[n] for n in names if n in poller.running_at}
    missing = sorted(set(names) - latencies.keys())
    last_running = max(poller.running_at.values(), default=math.nan)
    result = {
        **summary(list(latencies.values())),
        "reached_running": len(latencies),
        "missing": missing,
        "missing_last_phase": {n: poller.last_phase.get(n) for n in missing},
        "first_apply_at": first,
        "last_running_at": last_running,
        "wall_s": last_running - first if latencies else math.nan,
        "applies_wall_s": applied - first,
        "per_vm_s": latencies,
        "poll_errors": poller.errors,
    }
    print(
        f"[{label}] apply->Running p50 {ms(percentile(list(latencies.values()), 50))} "
        f"p99 {ms(percentile(list(latencies.values()), 99))} "
        f"({len(latencies)}/{len(names)} Running)"
    )
    return result


def clear(target: Target, names: list[str], prefix: str) -> dict[str, Any]:
    """Delete the VMs and wait until their domains are gone from libvirt."""
    assert target.libvirt_uri is not None
    with httpx.Client(base_url=target.server, timeout=30.0) as client:
        started = time.monotonic()
        cleanup = delete_vms(client, names, timeout=60.0)
    cleanup["domains_left"] = wait_domains_gone(target.libvirt_uri, prefix, timeout=180.0)
    cleanup["took_s"] = time.monotonic() - started
    return cleanup


def run(args: argparse.Namespace, target: Target, token: str) -> dict[str, Any]:
    base_names = [f"bench-{token}-b{i:03d}" for i in range(1, args.vms + 1)]
    stuck_names = [f"bench-{token}-s{i:03d}" for i in range(1, args.vms + 1)]
    stuck = f"bench-{token}-stuck"

    baseline = measure(args, target, base_names, "baseline")
    baseline_cleanup = clear(target, base_names, f"bench-{token}-b")

    client = httpx.Client(base_url=target.server, timeout=30.0)
    try:
        print(
            f"[stuck] starting {stuck}, then Halted with shutdownTimeout {args.shutdown_timeout}s"
        )
        response = client.post("/api/v1/apply", json=[vm_object(stuck)])
        response.raise_for_status()
        wait_phase(client, stuck, "Running", 60.0)
        patched = time.monotonic()
        response = client.patch(
            f"/api/v1/vms/{stuck}",
            json={
                "spec": {"runStrategy": "Halted", "shutdownTimeout": f"{args.shutdown_timeout}s"}
            },
            headers=MERGE_PATCH,
        )
        response.raise_for_status()
        stopping_at = wait_phase(client, stuck, "Stopping", 10.0)
        with_stuck = measure(args, target, stuck_names, "stuck")
        stuck_after = vm_status(client, stuck)
        # Its node forces it off shutdownTimeout after it saw the patch, no earlier.
        deadline = patched + args.shutdown_timeout
        last = with_stuck["last_running_at"]
        covered = not math.isnan(last) and last < deadline
        stuck_info = {
            "name": stuck,
            "shutdown_timeout_s": args.shutdown_timeout,
            "stopping_after_patch_s": stopping_at - patched,
            "phase_after_the_applies": stuck_after.get("phase"),
            "reason_after_the_applies": stuck_after.get("reason"),
            "last_running_before_its_deadline": covered,
            "margin_to_deadline_s": deadline - last if not math.isnan(last) else None,
        }
        print(
            f"[stuck] {stuck} after the applies: {stuck_after.get('phase')}/"
            f"{stuck_after.get('reason')}; last Running "
            + (
                f"{deadline - last:.1f} s before its deadline"
                if covered
                else "AFTER its deadline: the window did not cover the run"
            )
        )
        stuck_forced_at: float | None = None
        if not args.no_wait_stuck:
            # The deadline itself, for the record: forced off after shutdownTimeout.
            wait_phase(client, stuck, "Stopped", args.shutdown_timeout + 30.0)
            stuck_forced_at = time.monotonic() - patched
            stuck_info["stopped_after_patch_s"] = stuck_forced_at
            print(f"[stuck] {stuck} Stopped {stuck_forced_at:.1f} s after the patch")
    finally:
        client.close()
    stuck_cleanup = clear(target, [stuck, *stuck_names], f"bench-{token}-")

    b99, s99 = baseline.get("p99_s", math.nan), with_stuck.get("p99_s", math.nan)
    b50, s50 = baseline.get("p50_s", math.nan), with_stuck.get("p50_s", math.nan)
    return {
        "benchmark": "reconcile_isolation",
        "config": {
            "vms": args.vms,
            "shutdown_timeout_s": args.shutdown_timeout,
            "vm_spec": vm_object("x")["spec"],
            "libvirt_uri": target.libvirt_uri,
            "nodes": target.nodes,
            "poll_interval_s": args.poll_interval,
            "timeout_s": args.timeout,
            "order": ["baseline", "stuck"],
            "name_prefix": f"bench-{token}-",
        },
        "baseline": baseline,
        "with_stuck": with_stuck,
        "stuck_vm": stuck_info,
        "ratio": {
            "p50_stuck_over_baseline": s50 / b50 if b50 else math.nan,
            "p99_stuck_over_baseline": s99 / b99 if b99 else math.nan,
        },
        "cleanup": {"baseline": baseline_cleanup, "stuck": stuck_cleanup},
        "log_problems": log_problems(target.state_dir),
    }


def print_summary(result: dict[str, Any], out: Path) -> None:
    cfg = result["config"]
    nan = math.nan
    print()
    print(
        f"reconcile_isolation: {cfg['vms']} VMs on {cfg['libvirt_uri']} "
        f"({cfg['nodes']} node, {result['machine']['nproc']} CPUs), "
        f"one VM stuck in a {cfg['shutdown_timeout_s']:g} s shutdown"
    )
    for label, key in (("without stuck VM", "baseline"), ("with stuck VM   ", "with_stuck")):
        r = result[key]
        print(
            f"  {label}  apply->Running p50 {ms(r.get('p50_s', nan))}  "
            f"p99 {ms(r.get('p99_s', nan))}  max {ms(r.get('max_s', nan))}  "
            f"wall {r.get('wall_s', nan):.1f} s  ({r['reached_running']}/{cfg['vms']} Running)"
        )
    ratio = result["ratio"]
    print(
        f"  stuck/baseline    p50 {ratio['p50_stuck_over_baseline']:.2f}x  "
        f"p99 {ratio['p99_stuck_over_baseline']:.2f}x"
    )
    stuck = result["stuck_vm"]
    phase, why = stuck["phase_after_the_applies"], stuck["reason_after_the_applies"]
    print(
        f"  stuck VM          {phase}/{why} after the applies; "
        f"window covered the run: {stuck['last_running_before_its_deadline']}"
    )
    if result["log_problems"]:
        print(f"  {len(result['log_problems'])} error-looking lines in the cluster logs:")
        for line in result["log_problems"][:10]:
            print(f"    {line}")
    print(f"  wrote {out}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--vms", type=int, default=50, help="VMs to start (default 50)")
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        help="the stuck VM's shutdownTimeout in seconds (default 30)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON result path")
    parser.add_argument("--poll-interval", type=float, default=0.05, help="GET /vms period (s)")
    parser.add_argument(
        "--timeout", type=float, default=180.0, help="seconds to wait for all VMs Running"
    )
    parser.add_argument(
        "--no-wait-stuck",
        action="store_true",
        help="do not wait for the stuck VM's forced off before cleaning up",
    )
    parser.add_argument("--keep-state", action="store_true", help="keep the cluster's logs")
    args = parser.parse_args(argv)
    if args.vms < 1 or args.shutdown_timeout <= 0 or args.poll_interval <= 0:
        parser.error("--vms must be >= 1, --shutdown-timeout and --poll-interval > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reason = kvm_unavailable_reason()
    if reason is not None:
        print(
            "reconcile_isolation: skipped: the stuck VM must be a real KVM guest (on the "
            f"libvirt test driver shutdown completes at once), and {reason}"
        )
        return 0
    started_at = now_iso()
    token = secrets.token_hex(2)
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="pvc-bench-libvirtd-"))
        stack.callback(shutil.rmtree, workdir, True)
        daemon = stack.enter_context(system_libvirtd(workdir))
        target = stack.enter_context(
            local_cluster(2 * args.vms + 1, args.keep_state, daemon.uri, f"bench-{token}-")
        )
        result = run(args, target, token)
    result["machine"] = {
        "nproc": nproc(),
        "cpu_count": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
    }
    result["git"] = {"commit": git_commit(), "dirty": git_dirty()}
    result["started_at"] = started_at
    result["finished_at"] = now_iso()
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(nan_to_none(result), indent=2) + "\n")
    print_summary(result, out)
    ok = not result["baseline"]["missing"] and not result["with_stuck"]["missing"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
