"""Soak: a local cluster on the fast fencing profile with every CPU busy, counting false fences.

Starts a fresh local cluster (3 nodes, temporary dir, api_port=0), applies the fast
profile (keepalive 1 s, 3 intervals, 3 saving throws) and VMs spread over the nodes,
starts one plain Python busy loop per CPU (`nproc` of them, --load-procs), and for
--minutes polls the API. No node is ever killed, so every sign of a fence is false:
an event=node_fenced (or fence_start) in a daemon log, a node with Fenced=True, a node
whose daemonState is dead or fenced. It also counts the near misses (event=node_dead,
event=saving_throw_passed) and measures the largest gap between two heartbeats of each
node, the margin that keeps the fences away. See docs/soak.md.

    .venv/bin/python bench/soak.py                   # 30 minutes
    .venv/bin/python bench/soak.py --minutes 3       # a short one (CI)
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from benchlib import now_iso, nproc
from failover import (
    NODES,
    PROFILES,
    RESULTS,
    Api,
    LocalRun,
    cluster_object,
    condition,
    environment,
    local_cluster,
    log_problems,
    read_events,
    seconds_of,
    settled_primary,
    vm_object,
    wait,
    wait_keepalive,
    write_json,
)

DEFAULT_OUT = RESULTS / "soak.json"
SESSION_TIMEOUT = "6s"
BUSY_LOOP = "while True:\n    pass\n"
# Log events that mean a fence happened or began (false here: nothing was killed).
FENCE_EVENTS = {"fence_start", "node_fenced", "fence_failed", "fence_aborted", "self_fence"}
# Near misses: a node looked dead for a while.
NEAR_MISS_EVENTS = {"node_dead", "saving_throw_passed", "self_fence_armed"}
# Other signs of trouble worth counting.
TROUBLE_EVENTS = {
    "heartbeat_failed",
    "relinquish",
    "election_failed",
    "lease_lost",
    "primary_failed",
    "fence_check_failed",
    "domain_stopped_unexpectedly",
}


def parse_rfc3339(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@dataclass
class NodeTrack:
    last_heartbeat: str | None = None
    gaps: list[float] = field(default_factory=list)
    not_run_polls: int = 0
    bad_states: dict[str, int] = field(default_factory=dict)
    fenced_true_polls: int = 0
    not_ready_polls: int = 0

    def see(self, status: dict[str, Any]) -> None:
        beat = status.get("lastHeartbeat")
        if beat and beat != self.last_heartbeat:
            if self.last_heartbeat:
                self.gaps.append(parse_rfc3339(beat) - parse_rfc3339(self.last_heartbeat))
            self.last_heartbeat = beat
        state = status.get("daemonState")
        if state != "run":
            self.not_run_polls += 1
            self.bad_states[str(state)] = self.bad_states.get(str(state), 0) + 1
        if condition(status, "Fenced").get("status") == "True":
            self.fenced_true_polls += 1
        if condition(status, "Ready").get("status") != "True":
            self.not_ready_polls += 1


def start_load(count: int) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [sys.executable, "-c", BUSY_LOOP],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def stop_load(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    for proc in procs:
        proc.wait(timeout=10)


def soak(run: LocalRun, api: Api, args: argparse.Namespace) -> dict[str, Any]:
    fencing = PROFILES["fast"]
    keepalive = seconds_of(fencing["keepaliveInterval"])
    dead_after = keepalive * fencing["fenceIntervals"]
    names = [f"soak-{i:02d}" for i in range(args.vms)]
    homes = [f"node{i % NODES + 1}" for i in range(args.vms)]
    api.apply(
        cluster_object(fencing), *[vm_object(n, h) for n, h in zip(names, homes, strict=True)]
    )
    wait(
        lambda: (
            len(vms := api.vms()) == len(names)
            and all(s.get("phase") == "Running" for s in vms.values())
        ),
        60,
        "every VM Running",
    )
    primary, epoch = settled_primary(api)
    wait_keepalive(run, keepalive)
    daemon_pids = {n: run.pid(n) for n in run.state.nodes}
    print(f"  primary {primary} (epoch {epoch}); {args.vms} VMs Running")

    load = start_load(args.load_procs)
    print(f"  {len(load)} busy loops started (pids {', '.join(str(p.pid) for p in load)})")
    started_wall = time.time()
    started = time.monotonic()
    deadline = started + args.minutes * 60
    tracks: dict[str, NodeTrack] = {}
    primaries: list[tuple[str | None, int | None, float]] = [(primary, epoch, 0.0)]
    vm_not_running_polls = 0
    vm_not_running: dict[str, int] = {}
    poll_errors = 0
    polls = 0
    loadavg: list[float] = []
    daemons_exited: dict[str, float] = {}
    next_report = started + 60
    try:
        while time.monotonic() < deadline:
            tick = time.monotonic()
            polls += 1
            try:
                nodes = api.nodes()
                status = api.cluster_status()
                vms = api.vms()
            except Exception:
                poll_errors += 1
                time.sleep(args.poll_interval)
                continue
            for name, node_status in nodes.items():
                tracks.setdefault(name, NodeTrack()).see(node_status)
            current = (status.get("primary"), status.get("epoch"))
            if current != primaries[-1][:2]:
                primaries.append((*current, tick - started))
            bad = [n for n, s in vms.items() if s.get("phase") != "Running"]
            if bad:
                vm_not_running_polls += 1
                for n in bad:
                    vm_not_running[n] = vm_not_running.get(n, 0) + 1
            for name, pid in daemon_pids.items():
                if name not in daemons_exited and run.pid(name) == pid:
                    try:
                        os.kill(pid, 0)
                    except ProcessLookupError:
                        daemons_exited[name] = tick - started
            loadavg.append(os.getloadavg()[0])
            if tick >= next_report:
                next_report += 60
                fences = sum(
                    1 for e in read_events(run.dir, started_wall) if e.event in FENCE_EVENTS
                )
                worst = max((max(t.gaps, default=0.0) for t in tracks.values()), default=0.0)
                print(
                    f"  {(tick - started) / 60:4.1f} min: fence events {fences}, largest "
                    f"heartbeat gap {worst:.2f} s (dead after {dead_after:g} s), load1 "
                    f"{loadavg[-1]:.2f}"
                )
            time.sleep(max(0.0, args.poll_interval - (time.monotonic() - tick)))
    finally:
        elapsed = time.monotonic() - started
        load_cpu = [cpu_seconds(p.pid) for p in load]
        stop_load(load)

    events = read_events(run.dir, started_wall)
    fence_events = [e for e in events if e.event in FENCE_EVENTS]
    near = [e for e in events if e.event in NEAR_MISS_EVENTS]
    trouble = [e for e in events if e.event in TROUBLE_EVENTS]
    before = [e for e in read_events(run.dir) if e.event in FENCE_EVENTS and e.wall < started_wall]

    def count(evts: list[Any]) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in evts:
            out[e.event] = out.get(e.event, 0) + 1
        return out

    fenced_nodes = sorted(n for n, t in tracks.items() if t.fenced_true_polls)
    dead_nodes = sorted(n for n, t in tracks.items() if t.bad_states.get("dead"))
    false_fences = len([e for e in fence_events if e.event == "node_fenced"]) + len(
        [n for n in fenced_nodes if not any(e.fields.get("node") == n for e in fence_events)]
    )
    gaps = {n: t.gaps for n, t in tracks.items()}
    all_gaps = [g for gs in gaps.values() for g in gs]
    over = {
        "over_1.5x_keepalive": sum(1 for g in all_gaps if g > 1.5 * keepalive),
        "over_2x_keepalive": sum(1 for g in all_gaps if g > 2 * keepalive),
        "over_dead_after": sum(1 for g in all_gaps if g > dead_after),
    }
    return {
        "duration_s": elapsed,
        "fencing": fencing,
        "dead_after_s": dead_after,
        "fence_after_s": dead_after + keepalive * fencing["savingThrows"],
        "load": {
            "procs": len(load),
            "cpu_s_each": load_cpu,
            "cpu_share_each": [c / elapsed for c in load_cpu] if elapsed else [],
            "loadavg1_mean": sum(loadavg) / len(loadavg) if loadavg else math.nan,
            "loadavg1_max": max(loadavg, default=math.nan),
        },
        "false_fences": false_fences,
        "target_false_fences": 0,
        "target_met": false_fences == 0 and not fence_events,
        "fence_events": count(fence_events),
        "fence_event_lines": [e.line for e in fence_events][:50],
        "fence_events_before_load": [e.line for e in before][:20],
        "near_misses": count(near),
        "near_miss_lines": [e.line for e in near][:50],
        "trouble_events": count(trouble),
        "trouble_lines": [e.line for e in trouble][:50],
        "nodes_seen_fenced": fenced_nodes,
        "nodes_seen_dead": dead_nodes,
        "nodes": {
            n: {
                "heartbeats": len(t.gaps) + 1,
                "gap_max_s": max(t.gaps, default=math.nan),
                "gap_mean_s": sum(t.gaps) / len(t.gaps) if t.gaps else math.nan,
                "not_run_polls": t.not_run_polls,
                "states_other_than_run": t.bad_states,
                "fenced_true_polls": t.fenced_true_polls,
                "not_ready_polls": t.not_ready_polls,
            }
            for n, t in sorted(tracks.items())
        },
        "heartbeat_gap_max_s": max(all_gaps, default=math.nan),
        "heartbeat_gaps": over,
        "primaries": [{"primary": p, "epoch": e, "at_s": t} for p, e, t in primaries],
        "vm_not_running_polls": vm_not_running_polls,
        "vm_not_running": vm_not_running,
        "daemons_exited": daemons_exited,
        "polls": polls,
        "poll_errors": poll_errors,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=30.0, help="soak length (default 30)")
    parser.add_argument("--vms", type=int, default=6, help="VMs spread over the nodes")
    parser.add_argument(
        "--load-procs",
        type=int,
        default=nproc() or 2,
        help="busy-loop processes (default: nproc)",
    )
    parser.add_argument("--session-timeout", default=SESSION_TIMEOUT)
    parser.add_argument(
        "--poll-interval", type=float, default=0.5, help="seconds between API polls"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--keep-state", action="store_true")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.vms < 1 or args.load_procs < 0:
        parser.error("--minutes must be > 0, --vms >= 1, --load-procs >= 0")
    started_at = now_iso()
    print(
        f"soak: {args.minutes:g} min, fast profile, {args.load_procs} busy loops on "
        f"{nproc()} CPUs, session {args.session_timeout}"
    )
    with local_cluster("soak", args.session_timeout, args.keep_state) as run:
        api = Api(run.server)
        try:
            figures = soak(run, api, args)
            figures["log_problems"] = log_problems(run.dir)
        finally:
            api.close()
    result = {
        "benchmark": "soak",
        "config": {
            "minutes": args.minutes,
            "vms": args.vms,
            "nodes": NODES,
            "load_procs": args.load_procs,
            "session_timeout": args.session_timeout,
            "poll_interval_s": args.poll_interval,
        },
        **figures,
        **environment(),
        "started_at": started_at,
        "finished_at": now_iso(),
    }
    write_json(args.out, result)

    print()
    print(
        f"soak: {result['duration_s'] / 60:.1f} min, {args.load_procs} busy loops "
        f"(each got {', '.join(f'{s:.0%}' for s in result['load']['cpu_share_each'])} of a CPU; "
        f"load1 mean {result['load']['loadavg1_mean']:.2f}), {result['machine']['nproc']} CPUs"
    )
    print(
        f"  false fences      {result['false_fences']}  (target 0: "
        f"{'met' if result['target_met'] else 'NOT met'}); fence events {result['fence_events']}"
    )
    print(
        f"  near misses       {result['near_misses'] or 0}; nodes seen dead "
        f"{result['nodes_seen_dead'] or 'none'}, seen Fenced "
        f"{result['nodes_seen_fenced'] or 'none'}"
    )
    print(
        f"  heartbeat gaps    max {result['heartbeat_gap_max_s']:.2f} s (dead after "
        f"{result['dead_after_s']:g} s); > 1.5x keepalive "
        f"{result['heartbeat_gaps']['over_1.5x_keepalive']}, > 2x "
        f"{result['heartbeat_gaps']['over_2x_keepalive']}"
    )
    for name, node in result["nodes"].items():
        print(
            f"    {name}: {node['heartbeats']} heartbeats, mean gap {node['gap_mean_s']:.2f} s, "
            f"max {node['gap_max_s']:.2f} s"
        )
    changes = len(result["primaries"]) - 1
    print(
        f"  primary changes   {changes}; VM polls with a VM not Running "
        f"{result['vm_not_running_polls']}/{result['polls']}; daemons exited "
        f"{result['daemons_exited'] or 'none'}"
    )
    if result["trouble_events"]:
        print(f"  other events      {result['trouble_events']}")
    for line in (result["fence_event_lines"] + result["near_miss_lines"])[:10]:
        print(f"  log: {line}")
    for line in result["log_problems"][:5]:
        print(f"  log: {line}")
    print(f"  wrote {args.out}")
    return 0 if result["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
