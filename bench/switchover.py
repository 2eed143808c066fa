"""Primary handover times: graceful switchover and takeover after a primary crash.

One fresh local cluster (3 coordinators, temporary dir, api_port=0) for all runs.

Graceful: apply Cluster.spec.primary = another coordinator, and time from sending that
apply to the first poll showing the Cluster status naming the new primary with a new
epoch AND its node's routerState primary AND every other node secondary.

Crash: SIGKILL the primary's pvcnoded and time until the Cluster status names another
node with a new epoch (and, separately, until that node's routerState is primary). The
primary lock is an ephemeral znode, so a crash is noticed only when the dead daemon's
ZooKeeper session expires: the floor is the session timeout. The killed node is started
again by the bench between runs (the Cluster is in maintenance mode for the whole run, so
no fence restarts it on its own).

    .venv/bin/python bench/switchover.py                  # 5 runs of each
    .venv/bin/python bench/switchover.py --runs 10 --session-timeout 4s
    .venv/bin/python bench/switchover.py --floating   # root: each node's network is a
        # namespace holding one floating address, so a handover moves and announces it

See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchlib import now_iso, summary
from failover import (
    PROFILES,
    RESULTS,
    Api,
    LeaseGone,
    LocalRun,
    cluster_object,
    environment,
    first,
    local_cluster,
    log_problems,
    read_events,
    seconds_of,
    secs,
    settled_primary,
    wait,
    write_json,
)

DEFAULT_OUT = RESULTS / "switchover.json"
TARGET_GRACEFUL_S = 1.0
TARGET_CRASH_MARGIN_S = 0.5
POLL_INTERVAL_S = 0.02
SESSION_TIMEOUT = "6s"


FLOATING_ADDRESS = "10.254.99.1/24"
FLOATING_BRIDGE = "pvcbench0"


@contextlib.contextmanager
def floating_networks(enabled: bool) -> Iterator[dict[str, dict[str, object]] | None]:
    """One namespace per node with a bridge that carries the floating address."""
    if not enabled:
        yield None
        return
    tag = uuid.uuid4().hex[:6]
    made: list[str] = []

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)

    try:
        networks: dict[str, dict[str, object]] = {}
        for index in range(1, 4):
            ns = f"pvcb-{tag}-{index}"
            ip("netns", "add", ns)
            made.append(ns)
            ip("-n", ns, "link", "add", FLOATING_BRIDGE, "type", "bridge")
            ip("-n", ns, "link", "set", FLOATING_BRIDGE, "up")
            networks[f"node{index}"] = {
                "namespace": ns,
                "floatingAddresses": [{"address": FLOATING_ADDRESS, "interface": FLOATING_BRIDGE}],
            }
        yield networks
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def cluster_spec(preferred: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"maintenance": True}
    if preferred:
        spec["primary"] = preferred
    return cluster_object(PROFILES["fast"], **spec)


class Watch:
    """Polls the Cluster status and the nodes every `interval` s until `done(...)` holds;
    records the arrival of the first poll for each named milestone and the send time of the
    last poll before it (a lower bound)."""

    def __init__(self, api: Api, interval: float) -> None:
        self.api = api
        self.interval = interval
        self.seen: dict[str, float] = {}
        self.before: dict[str, float] = {}
        self.latencies: list[float] = []
        self.last: tuple[dict[str, Any], dict[str, dict[str, Any]]] = ({}, {})

    def run(self, milestones: dict[str, Any], start: float, timeout: float) -> bool:
        deadline = start + timeout
        while True:
            sent = time.monotonic()
            try:
                status = self.api.cluster_status()
                nodes = self.api.nodes()
            except Exception:
                status, nodes = {}, {}
            received = time.monotonic()
            self.latencies.append(received - sent)
            self.last = (status, nodes)
            for name, check in milestones.items():
                if name in self.seen:
                    continue
                if status and check(status, nodes):
                    self.seen[name] = received - start
                else:
                    self.before[name] = max(0.0, sent - start)
            if self.seen.keys() >= milestones.keys():
                return True
            if received >= deadline:
                return False
            time.sleep(max(0.0, self.interval - (time.monotonic() - sent)))


def graceful_once(run: LocalRun, api: Api, args: argparse.Namespace, index: int) -> dict[str, Any]:
    old, epoch = settled_primary(api)
    coordinators = sorted(api.nodes())
    target = coordinators[(coordinators.index(old) + 1) % len(coordinators)]
    watch = Watch(api, args.poll_interval)

    def named(status: dict[str, Any], _nodes: dict[str, Any]) -> bool:
        return bool(status.get("primary") == target and (status.get("epoch") or 0) > epoch)

    def routed(_status: dict[str, Any], nodes: dict[str, dict[str, Any]]) -> bool:
        others = {s.get("routerState") for n, s in nodes.items() if n != target}
        return nodes.get(target, {}).get("routerState") == "primary" and others == {"secondary"}

    def complete(status: dict[str, Any], nodes: dict[str, dict[str, Any]]) -> bool:
        return named(status, nodes) and routed(status, nodes)

    started_wall = time.time()
    started = time.monotonic()
    api.apply(cluster_spec(target))
    applied = time.monotonic() - started
    ok = watch.run({"named": named, "routed": routed, "complete": complete}, started, args.timeout)
    events = read_events(run.dir, started_wall)

    def at(event: Any) -> float | None:
        return None if event is None else event.wall - started_wall

    status = watch.last[0]
    result: dict[str, Any] = {
        "run": index + 1,
        "from": old,
        "to": target,
        "epoch_before": epoch,
        "epoch_after": status.get("epoch"),
        "ok": ok,
        "apply_request_s": applied,
        "to_status_named_s": watch.seen.get("named"),
        "to_router_states_s": watch.seen.get("routed"),
        "complete_s": watch.seen.get("complete", math.nan),
        "complete_lower_bound_s": watch.before.get("complete"),
        "log": {
            "old_relinquish_s": at(first(events, "relinquish", node=old)),
            "old_secondary_s": at(first(events, "router_state", node=old, state="secondary")),
            "new_takeover_s": at(first(events, "router_state", node=target, state="takeover")),
            "new_primary_s": at(first(events, "router_state", node=target, state="primary")),
        },
        "polls": len(watch.latencies),
        "poll_p50_s": summary(watch.latencies).get("p50_s"),
    }
    print(
        f"  graceful #{index + 1}: {old} -> {target}: complete {secs(result['complete_s'])} "
        f"(status named {secs(result['to_status_named_s'])}, router states "
        f"{secs(result['to_router_states_s'])}; log: old relinquish "
        f"{secs(result['log']['old_relinquish_s'])}, new takeover "
        f"{secs(result['log']['new_takeover_s'])}, new primary "
        f"{secs(result['log']['new_primary_s'])})"
    )
    return result


def crash_once(run: LocalRun, api: Api, args: argparse.Namespace, index: int) -> dict[str, Any]:
    old, epoch = settled_primary(api)
    pid = run.pid(old)
    watch = Watch(api, args.poll_interval)
    new: dict[str, str] = {}

    def named(status: dict[str, Any], _nodes: dict[str, Any]) -> bool:
        if status.get("primary") not in (None, old) and (status.get("epoch") or 0) > epoch:
            new["name"] = str(status["primary"])
            return True
        return False

    def routed(status: dict[str, Any], nodes: dict[str, dict[str, Any]]) -> bool:
        # The dead node cannot update its own status: only the new one is looked at.
        name = status.get("primary")
        return bool(
            name not in (None, old)
            and (status.get("epoch") or 0) > epoch
            and nodes.get(str(name), {}).get("routerState") == "primary"
        )

    lease = LeaseGone(run, old)
    killed_wall = time.time()
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    try:
        ok = watch.run({"named": named, "routed": routed}, killed, args.timeout)
        # The watch notification may trail the takeover it caused by a moment.
        deadline = time.monotonic() + 2.0
        while lease.at is None and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        lease.close()
    expired = None if lease.at is None else lease.at - killed
    events = read_events(run.dir, killed_wall)
    target = new.get("name")

    def at(event: Any) -> float | None:
        return None if event is None else event.wall - killed_wall

    result: dict[str, Any] = {
        "run": index + 1,
        "killed": old,
        "new_primary": target,
        "epoch_before": epoch,
        "epoch_after": watch.last[0].get("epoch"),
        "ok": ok,
        "to_status_named_s": watch.seen.get("named", math.nan),
        "to_status_named_lower_bound_s": watch.before.get("named"),
        "to_router_state_primary_s": watch.seen.get("routed"),
        "session_expired_s": expired,
        "expiry_to_status_named_s": None
        if expired is None
        else watch.seen.get("named", math.nan) - expired,
        "log": {
            "new_takeover_s": at(
                first(events, "router_state", node=target or "", state="takeover")
            ),
            "new_primary_s": at(first(events, "router_state", node=target or "", state="primary")),
        },
        "polls": len(watch.latencies),
        "poll_p50_s": summary(watch.latencies).get("p50_s"),
    }
    print(
        f"  crash #{index + 1}: killed {old}; session expired at {secs(expired)}; {target} "
        f"named primary at {secs(result['to_status_named_s'])} (router state primary "
        f"{secs(result['to_router_state_primary_s'])}; log: takeover "
        f"{secs(result['log']['new_takeover_s'])}, primary {secs(result['log']['new_primary_s'])})"
    )
    # Power the killed node on again and let it rejoin as a secondary.
    run.cluster.start_node(old)
    wait(
        lambda: (
            api.nodes().get(old, {}).get("daemonState") == "run"
            and api.nodes().get(old, {}).get("routerState") == "secondary"
        ),
        60,
        f"{old} back as a secondary",
        0.1,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="runs of each kind (default 5)")
    parser.add_argument("--session-timeout", default=SESSION_TIMEOUT)
    parser.add_argument("--poll-interval", type=float, default=POLL_INTERVAL_S)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--skip-graceful", action="store_true")
    parser.add_argument("--skip-crash", action="store_true")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--keep-state", action="store_true")
    parser.add_argument(
        "--floating",
        action="store_true",
        help="give the coordinators a floating address in per-node namespaces (root)",
    )
    args = parser.parse_args(argv)
    if args.floating and os.geteuid() != 0:
        parser.error("--floating needs root (it creates network namespaces)")
    session = seconds_of(args.session_timeout)
    started_at = now_iso()
    graceful: list[dict[str, Any]] = []
    crash: list[dict[str, Any]] = []
    print(
        f"switchover: {args.runs} graceful + {args.runs} crash runs, session {args.session_timeout}"
    )
    with (
        floating_networks(args.floating) as networks,
        local_cluster(
            "switchover", args.session_timeout, args.keep_state, node_networks=networks
        ) as run,
    ):
        api = Api(run.server)
        try:
            api.apply(cluster_spec(None))
            settled_primary(api)
            if not args.skip_graceful:
                for index in range(args.runs):
                    graceful.append(graceful_once(run, api, args, index))
                    time.sleep(1.0)  # let the old primary's workers wind down
            if not args.skip_crash:
                # No preferred primary: any survivor may take over.
                api.apply(cluster_spec(None))
                spec = api.client.get("/api/v1/clusters/cluster").json()["spec"]
                if spec.get("primary"):
                    raise RuntimeError(f"Cluster.spec.primary still set: {spec}")
                for index in range(args.runs):
                    crash.append(crash_once(run, api, args, index))
            problems = log_problems(run.dir)
        finally:
            api.close()

    g_ok = [r["complete_s"] for r in graceful if r["ok"]]
    c_ok = [r["to_status_named_s"] for r in crash if r["ok"]]
    c_routed = [r["to_router_state_primary_s"] for r in crash if r["to_router_state_primary_s"]]
    crash_limit = session + TARGET_CRASH_MARGIN_S
    result: dict[str, Any] = {
        "benchmark": "switchover",
        "config": {
            "runs": args.runs,
            "nodes": 3,
            "session_timeout": args.session_timeout,
            "fencing": PROFILES["fast"],
            "maintenance": True,
            "poll_interval_s": args.poll_interval,
            "floating_address": FLOATING_ADDRESS if args.floating else None,
        },
        "resolution": {
            "poll_interval_s": args.poll_interval,
            "note": (
                "each figure is the arrival of the first poll (GET cluster + GET nodes) that "
                "showed the milestone; late by up to one poll interval plus one poll round trip"
            ),
        },
        "graceful": {
            **summary(g_ok),
            "failed": sum(1 for r in graceful if not r["ok"]),
            "target_lt_s": TARGET_GRACEFUL_S,
            "target_met": bool(graceful)
            and len(g_ok) == len(graceful)
            and max(g_ok) < TARGET_GRACEFUL_S,
            "apply_request": summary([r["apply_request_s"] for r in graceful]),
            "status_named": summary([r["to_status_named_s"] for r in graceful if r["ok"]]),
            "runs": graceful,
        },
        "crash": {
            **summary(c_ok),
            "failed": sum(1 for r in crash if not r["ok"]),
            "floor_session_timeout_s": session,
            "overhead": summary([v - session for v in c_ok]),
            "router_state_primary": summary(c_routed),
            "session_expired": summary(
                [r["session_expired_s"] for r in crash if r["session_expired_s"] is not None]
            ),
            "expiry_to_status_named": summary(
                [r["expiry_to_status_named_s"] for r in crash if r["ok"] and r["session_expired_s"]]
            ),
            "target_le_s": crash_limit,
            "target_met": bool(crash) and len(c_ok) == len(crash) and max(c_ok) <= crash_limit,
            "runs": crash,
        },
        "log_problems": problems,
        **environment(),
        "started_at": started_at,
        "finished_at": now_iso(),
    }
    write_json(args.out, result)

    g, c = result["graceful"], result["crash"]
    print()
    print(
        f"switchover: 3 coordinators{' with a floating address' if args.floating else ''}, "
        f"session timeout {args.session_timeout}, poll "
        f"{args.poll_interval * 1000:.0f} ms, {result['machine']['nproc']} CPUs"
    )
    if graceful:
        print(
            f"  graceful  p50 {secs(g.get('p50_s'))}  max {secs(g.get('max_s'))}  "
            f"({len(g_ok)}/{len(graceful)} ok; target < {TARGET_GRACEFUL_S:g} s: "
            f"{'met' if g['target_met'] else 'NOT met'})"
        )
        print(
            f"    status named p50 {secs(g['status_named'].get('p50_s'))}; apply request p50 "
            f"{secs(g['apply_request'].get('p50_s'))}"
        )
    if crash:
        print(
            f"  crash     p50 {secs(c.get('p50_s'))}  max {secs(c.get('max_s'))}  "
            f"floor (session) {session:g} s, overhead p50 {secs(c['overhead'].get('p50_s'))} "
            f"max {secs(c['overhead'].get('max_s'))}  ({len(c_ok)}/{len(crash)} ok; target <= "
            f"{crash_limit:g} s: {'met' if c['target_met'] else 'NOT met'})"
        )
        print(
            f"    router state primary p50 {secs(c['router_state_primary'].get('p50_s'))} "
            f"max {secs(c['router_state_primary'].get('max_s'))}"
        )
        print(
            f"    session expired (lease znode gone) p50 "
            f"{secs(c['session_expired'].get('p50_s'))} max "
            f"{secs(c['session_expired'].get('max_s'))}; expiry -> status named p50 "
            f"{secs(c['expiry_to_status_named'].get('p50_s'))} max "
            f"{secs(c['expiry_to_status_named'].get('max_s'))}"
        )
    for line in problems[:5]:
        print(f"  log: {line}")
    print(f"  wrote {args.out}")
    ok = all(r["ok"] for r in graceful + crash)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
