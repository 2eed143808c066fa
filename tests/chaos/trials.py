"""Seeded chaos trials: a plan of VM operations and faults drawn from one seed, run against a
``ChaosCluster``, then every fault healed and the invariants checked.

The plan (every VM, operation, node, duration and wait) depends only on the seed, the step
count, the node count and the number of ZooKeeper members, so ``python -m tests.chaos --seed S
--steps K --nodes N [--zk-members Z]`` replays a trial's steps exactly; only a fault aimed at
"the primary" (or the ensemble's leader) is resolved when it runs. On an ensemble of 3 or more,
ZooKeeper member loss (kill -9 one member, a given one or the leader, start it again a few
seconds later; never more than a minority down) is one of the faults, and every plan has one.
Live migration (methods, forced live moves, faults aimed at a migration under way) is added
from a stream of its own: tests/chaos/live.py.
"""

from __future__ import annotations

import contextlib
import logging
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localcluster.zookeeper import ZooKeeperServer, start_ensemble
from tests.chaos import live as live_migration
from tests.chaos.harness import ChaosCluster, ChaosTimings, Incarnation, vm_manifest

log = logging.getLogger("chaos")

MAX_VMS = 7
PRIMARY = "<primary>"
"""A step's node resolved at run time to whichever node is primary then."""
NEXT_START = "<the next node to start a VM>"
"""A step's node resolved when a driver's start() is next called, anywhere: the fault hits
that node at that moment (kill: 0.3 s into the start; pause, partition: just before it)."""
HOLDER = "<holder of {}>"
"""A step's node resolved at run time to the node holding that VM then (else where it is
placed): faults aimed where a VM is, or is being moved to or from."""
ZK_LEADER = "<zk leader>"
"""A member loss resolved at run time to the member that leads the ensemble then."""
ZK_RESTART_ALLOWANCE = 4.0
"""The plan's guess of how long a killed member takes to start and rejoin (a JVM start)."""


@dataclass
class Step:
    index: int
    wait: float
    """Seconds to wait before the step."""
    action: str
    args: dict[str, Any]

    def describe(self) -> str:
        args = " ".join(f"{k}={v}" for k, v in self.args.items())
        return f"{self.action} {args}".strip()


@dataclass
class Plan:
    seed: int
    nodes: int
    vms: list[dict[str, Any]]
    """Initial VMs: name, ignore_acpi, shutdown_timeout."""
    steps: list[Step]
    coordinators: int = 0
    """All nodes, or all but one (a node that can never be primary)."""
    zk_members: int = 1
    no_live_node: str | None = None
    """A node whose hypervisor cannot live-migrate (live_migration.extend)."""


@dataclass
class TrialResult:
    seed: int
    steps: int
    nodes: int
    zk_members: int = 1
    failures: list[str] = field(default_factory=list)
    info: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    """One line per step (and setup, heal, checks)."""
    transitions: str = ""
    calls: list[str] = field(default_factory=list)
    seconds: float = 0.0
    converge_seconds: float | None = None
    log_file: str | None = None
    migrations: int = 0
    """Live migrations begun (driver migrate() calls), and completed."""
    migrated: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def replay(self) -> str:
        return (
            f".venv/bin/python -m tests.chaos --seed {self.seed} "
            f"--steps {self.steps} --nodes {self.nodes}"
            + (f" --zk-members {self.zk_members}" if self.zk_members != 1 else "")
        )

    def report(self) -> str:
        lines = [
            f"trial seed={self.seed} steps={self.steps} nodes={self.nodes}"
            + (f" zk-members={self.zk_members}" if self.zk_members != 1 else "")
            + ": "
            + ("ok" if self.ok else f"{len(self.failures)} FAILED")
            + f" ({self.seconds:.1f}s, {self.migrations} live migrations, {self.migrated} done"
            + (f", converged in {self.converge_seconds:.1f}s" if self.converge_seconds else "")
            + ")"
        ]
        if self.ok:
            return lines[0]
        lines.append("what failed:")
        lines += [f"  {f}" for f in self.failures]
        if self.info:
            lines.append("information:")
            lines += [f"  {i}" for i in self.info]
        lines.append("steps:")
        lines += [f"  {s}" for s in self.log]
        lines.append("the world's last transitions:")
        lines += [f"  {t}" for t in self.transitions.splitlines()]
        lines.append("the harness's last driver calls and events:")
        lines += [f"  {c}" for c in self.calls]
        if self.log_file:
            lines.append(f"daemon logs: {self.log_file}")
        lines.append(f"replay: {self.replay}")
        return "\n".join(lines)


def make_plan(
    seed: int,
    steps: int,
    nodes: int,
    timings: ChaosTimings | None = None,
    zk_members: int = 1,
) -> Plan:
    """Everything a trial does, from the seed alone (on one ZooKeeper server the same plans
    as before member loss existed: its choice is only added on an ensemble)."""
    t = timings or ChaosTimings()
    rng = random.Random(seed)
    names = [f"n{i}" for i in range(1, nodes + 1)]
    vms = [
        {
            "name": f"v{i}",
            "ignore_acpi": rng.random() < 0.35,
            "shutdown_timeout": rng.choice(["2s", "3s", "4s"]),
        }
        for i in range(1, rng.randint(2, 5) + 1)
    ]
    live = [v["name"] for v in vms]
    next_vm = len(vms) + 1
    # Faults under way, by the plan's own clock (waits only): at most nodes - 2 at once, so
    # two nodes are always healthy to fence and to run VMs.
    busy_until: list[float] = []
    # Members down, by the same clock: at most a minority, so a quorum remains.
    max_zk_down = (zk_members - 1) // 2
    zk_down_until: list[float] = []
    clock = 0.0
    reboot = t.fence_after + t.session_timeout + 4.0
    plan: list[Step] = []
    for index in range(1, steps + 1):
        # Bursts of quick steps open the races; longer waits let moves and fences progress.
        wait = round(rng.uniform(0.0, 0.3) if rng.random() < 0.4 else rng.uniform(0.3, 2.0), 2)
        clock += wait
        busy_until = [u for u in busy_until if u > clock]
        zk_down_until = [u for u in zk_down_until if u > clock]
        fault_room = len(busy_until) < max(1, nodes - 2)
        choices: list[tuple[str, float]] = [
            ("apply", 1.0 if len(live) < MAX_VMS else 0.0),
            ("delete", 0.6 if len(live) > 1 else 0.0),
            ("start", 1.0),
            ("stop", 1.0),
            ("migrate", 1.5),
            ("unmigrate", 0.8),
            ("move", 0.8),
            ("flush", 0.8),
            ("ready", 0.8),
            ("guest_crash", 0.5),
            ("guest_pause", 0.4),
        ]
        if not busy_until:
            choices.append(("partition_all", 0.3))
        if fault_room:
            choices += [
                ("kill", 0.6),
                ("kill_primary", 0.6),
                ("kill_holder", 0.8),
                ("pause", 0.4),
                ("pause_primary", 0.5),
                ("pause_holder", 0.6),
                ("expire", 0.3),
                ("expire_holder", 0.4),
                ("partition", 0.4),
                ("partition_primary", 0.4),
                ("partition_holder", 0.6),
                ("kill_at_start", 0.5),
                ("pause_at_start", 0.6),
                ("partition_at_start", 0.4),
            ]
        if len(zk_down_until) < max_zk_down:
            choices.append(("zk_member_loss", 0.8))
        actions, weights = zip(*[(a, w) for a, w in choices if w > 0], strict=True)
        action = rng.choices(actions, weights)[0]
        node = rng.choice(names)
        vm = rng.choice(live) if live else "v1"
        args: dict[str, Any]
        if action == "apply":
            args = {
                "vm": f"v{next_vm}",
                "ignore_acpi": rng.random() < 0.35,
                "shutdown_timeout": rng.choice(["2s", "3s", "4s"]),
            }
            live.append(args["vm"])
            next_vm += 1
        elif action == "delete":
            args = {"vm": vm}
            live.remove(vm)
        elif action in ("start", "stop", "unmigrate", "guest_crash"):
            args = {"vm": vm}
        elif action in ("migrate", "move"):
            args = {"vm": vm, "node": node}
        elif action == "guest_pause":
            args = {"vm": vm, "seconds": round(rng.uniform(0.5, 6.0), 1)}
        elif action in ("flush", "ready"):
            args = {"node": node}
        elif action == "zk_member_loss":
            args = _member_loss(rng, zk_members)
            zk_down_until.append(clock + args["seconds"] + ZK_RESTART_ALLOWANCE)
        elif action == "partition_all":
            args = {"seconds": round(rng.uniform(1.0, 6.0), 1)}
            busy_until += [clock + args["seconds"]] * nodes
        else:  # faults: kill, pause, expire, partition; on a node, the primary or a VM's holder
            base, _, target = action.partition("_")
            args = {
                "node": {
                    "primary": PRIMARY,
                    "holder": HOLDER.format(vm),
                    "at_start": NEXT_START,
                }.get(target, node)
            }
            if target == "at_start":
                # An operation that makes some node start a VM right away.
                then = rng.choice(["migrate", "move", "guest_crash", "stop_start"])
                args["then"] = f"{then} {vm}" + (f" {node}" if then in ("migrate", "move") else "")
            if base in ("pause", "partition"):
                args["seconds"] = round(rng.uniform(1.0, 9.0), 1)
                busy_until.append(clock + args["seconds"])
            elif base == "kill":
                busy_until.append(clock + reboot)
            action = base
        plan.append(Step(index, wait, action, args))
    # Drawn apart from the rest, so adding this did not change the plans of earlier seeds.
    coordinators = nodes if random.Random(seed * 7919 + 1).random() < 0.5 else max(2, nodes - 1)
    if max_zk_down and plan and not any(s.action == "zk_member_loss" for s in plan):
        # Every trial on an ensemble loses a member: one VM operation (else any step) becomes
        # a member loss, drawn apart again.
        extra = random.Random(seed * 7919 + 2)
        ops = [s for s in plan if s.action in _REPLACEABLE] or plan
        chosen = extra.choice(ops)
        plan[chosen.index - 1] = Step(
            chosen.index, chosen.wait, "zk_member_loss", _member_loss(extra, zk_members)
        )
    made = Plan(seed, nodes, vms, plan, min(coordinators, nodes), zk_members)
    live_migration.extend(made)
    return made


_REPLACEABLE = frozenset(
    {
        "start",
        "stop",
        "migrate",
        "unmigrate",
        "move",
        "flush",
        "ready",
        "guest_crash",
        "guest_pause",
    }
)
"""Steps whose loss changes nothing later in the plan (not apply or delete: later steps name
their VMs)."""


def _member_loss(rng: random.Random, zk_members: int) -> dict[str, Any]:
    """Which member dies (1-based, or the leader then) and for how long."""
    member: int | str = ZK_LEADER if rng.random() < 0.4 else rng.randint(1, zk_members)
    return {"member": member, "seconds": round(rng.uniform(1.0, 6.0), 1)}


class TrialRunner:
    """Runs one plan on one cluster; timed heals are done by this thread between steps."""

    def __init__(self, cluster: ChaosCluster, plan: Plan, result: TrialResult) -> None:
        self.cluster = cluster
        self.plan = plan
        self.result = result
        self.t0 = time.monotonic()
        self._due: list[tuple[float, str, Callable[[], None]]] = []
        self._hooks: list[Any] = []
        self._timers: list[threading.Timer] = []

    def note(self, line: str) -> None:
        stamped = f"+{time.monotonic() - self.t0:6.2f}s {line}"
        self.result.log.append(stamped)
        self.cluster.calls.add(f"STEP {line}")
        log.info("event=chaos_step %s", line)

    def later(self, seconds: float, what: str, fn: Callable[[], None]) -> None:
        self._due.append((time.monotonic() + seconds, what, fn))

    def run_due(self, everything: bool = False) -> None:
        now = time.monotonic()
        due = [d for d in self._due if everything or d[0] <= now]
        self._due = [d for d in self._due if d not in due]
        for _, what, fn in sorted(due, key=lambda d: d[0]):
            fn()
            self.note(
                f"  {what}" + (f" (no-op: {what.split()[-1]} is dead)" if self._dead(what) else "")
            )

    def finish_due(self) -> None:
        """Let the faults under way run their planned course (pauses, partitions: <= 9 s)."""
        for hook in self._hooks:
            self.cluster.hooks.remove(hook)  # a fault aimed at a start that never came
        for timer in self._timers:
            timer.join()
        if self._due:
            self.sleep(max(d[0] for d in self._due) - time.monotonic())
        self.run_due(everything=True)

    def at_next_start(self, step: Step) -> str:
        """Arm a fault for the next start() call of any node, in that call's thread."""
        c, action, seconds = self.cluster, step.action, step.args.get("seconds", 0.0)

        def hit(node: str, _op: str, vm: str | None) -> None:
            if action == "kill":
                timer = threading.Timer(0.3, c.kill, (node,))
                outcome = f"kill {node} 0.3 s into its start of {vm}"
            else:
                inc = c.pause(node) if action == "pause" else c.partition(node)
                if inc is None:
                    return
                undo = c.resume if action == "pause" else c.heal_partition
                timer = threading.Timer(seconds, undo, (inc,))
                outcome = f"{action} {inc.name} for {seconds:g}s as it starts {vm}"
            timer.daemon = True
            self._timers.append(timer)
            timer.start()
            self.note(f"  step {step.index} fires: {outcome}")

        self._hooks.append(c.hooks.before("start", hit))
        then, vm, *node = step.args["then"].split()
        if then == "stop_start":
            c.verb("vms", vm, "stop")
            with contextlib.suppress(TimeoutError):  # start it anyway
                c.wait_for(lambda: not c.world.holders(vm), 10.0, f"{vm} off")
            return f"armed; stopped and started {vm}: HTTP {c.verb('vms', vm, 'start')}"
        args = {"vm": vm, "node": node[0]} if node else {"vm": vm}
        return f"armed; {then} {' '.join(node)}: {self.run_step(Step(0, 0.0, then, args))}"

    def member_loss(self, step: Step) -> str:
        """Kill -9 one ZooKeeper member now; a timer starts it again after ``seconds``."""
        c, member, seconds = self.cluster, step.args["member"], step.args["seconds"]
        index = c.leader_member() if member == ZK_LEADER else int(member) - 1
        if index is None:
            return "skipped: no leader now"
        leader = " (the leader)" if member == ZK_LEADER else ""
        if not c.stop_member(index):
            return f"skipped: zk member {index + 1}{leader} is down or would leave no quorum"
        killed = time.monotonic()

        def restart() -> None:
            try:
                c.start_member(index)
            except Exception as exc:
                self.result.failures.append(f"HARNESS: zk member {index + 1} restart: {exc!r}")
                self.note(f"  zk member {index + 1} did not come back: {exc!r}")
                return
            self.note(
                f"  zk member {index + 1} serving again "
                f"({time.monotonic() - killed:.1f}s after it was killed)"
            )

        timer = threading.Timer(seconds, restart)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()
        return f"killed zk member {index + 1}{leader}, restart in {seconds:g}s"

    def _dead(self, what: str) -> bool:
        """Whether the incarnation a timed heal names (``resume n1#2``) has died meanwhile."""
        name = what.split()[-1]
        return any(inc.name == name and not inc.alive for inc in self.cluster.incarnations())

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            self.run_due()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))

    def resolve(self, node: str) -> str | None:
        if node == PRIMARY:
            return self.cluster.primary()
        if node.startswith("<holder of "):
            vm = node.removeprefix("<holder of ").removesuffix(">")
            holders = sorted(self.cluster.world.holders(vm))
            if holders:
                return holders[0]
            try:
                return self.cluster.placement_of(vm)
            except Exception:
                return None
        return node

    def run_step(self, step: Step) -> str:
        c = self.cluster
        a = step.args
        if step.action == "apply":
            if a["ignore_acpi"]:
                c.world.ignore_acpi(a["vm"])
            live_migration.prepare_vm(c, a, a["vm"])
            c.apply(
                vm_manifest(
                    a["vm"], shutdown_timeout=a["shutdown_timeout"], **live_migration.vm_spec(a)
                )
            )
            return "applied"
        if step.action == "delete":
            return f"HTTP {c.delete_vm(a['vm'])}"
        if step.action in ("start", "stop", "unmigrate"):
            return f"HTTP {c.verb('vms', a['vm'], step.action)}"
        if step.action == "migrate":
            body = live_migration.migrate_body(c, a["vm"], a["node"], a.get("live", False))
            return f"to {body['node']}: HTTP {c.verb('vms', a['vm'], 'migrate', **body)}"
        if step.action == "move":
            return f"HTTP {c.verb('vms', a['vm'], 'move', node=a['node'])}"
        if step.action in ("flush", "ready"):
            return f"HTTP {c.verb('nodes', a['node'], step.action)}"
        if step.action == "guest_crash":
            holders = sorted(c.world.holders(a["vm"]))
            for holder in holders:
                c.world.crash(holder, a["vm"])
            return f"crashed on {holders}" if holders else "not held anywhere"
        if step.action == "guest_pause":
            vm: str = a["vm"]
            holders = sorted(c.world.holders(vm))
            for holder in holders:
                c.world.pause(holder, vm)
                self.later(
                    a["seconds"], f"resume guest {vm} on {holder}", _resume_guest(c, holder, vm)
                )
            return f"paused on {holders}" if holders else "not held anywhere"
        if step.action == "partition_all":
            cut_off = [inc for inc in (c.partition(n) for n in c.slots) if inc is not None]
            for inc in cut_off:
                self.later(a["seconds"], f"heal partition {inc.name}", _heal(c, inc))
            return f"partitioned {', '.join(inc.name for inc in cut_off)}"
        if step.action == "zk_member_loss":
            return self.member_loss(step)
        if a.get("node") == NEXT_START:
            return self.at_next_start(step)
        if a.get("node") == live_migration.NEXT_MIGRATE:
            return live_migration.at_next_migrate(self, step)
        resolved = self.resolve(a["node"])
        if resolved is None:
            return "skipped: no such node now"
        node: str = resolved
        if step.action == "kill":
            return f"killed {node}" if c.kill(node) else f"skipped: {node} is down"
        if step.action == "expire":
            return f"expired {node}" if c.expire_session(node) else f"skipped: {node} not connected"
        if step.action == "pause":
            paused = c.pause(node)
            if paused is None:
                return f"skipped: {node} is down"
            self.later(a["seconds"], f"resume {paused.name}", lambda: c.resume(paused))
            return f"paused {paused.name}"
        if step.action == "partition":
            cut = c.partition(node)
            if cut is None:
                return f"skipped: {node} is down"
            self.later(a["seconds"], f"heal partition {cut.name}", lambda: c.heal_partition(cut))
            return f"partitioned {cut.name}"
        raise ValueError(f"unknown action {step.action}")


def _heal(cluster: ChaosCluster, inc: Incarnation) -> Callable[[], None]:
    return lambda: cluster.heal_partition(inc)


def _resume_guest(cluster: ChaosCluster, node: str, vm: str) -> Callable[[], None]:
    return lambda: cluster.world.resume(node, vm)


def run_trial(
    seed: int,
    steps: int = 12,
    nodes: int = 4,
    *,
    zookeeper: ZooKeeperServer | Sequence[ZooKeeperServer] | None = None,
    zk_members: int = 1,
    workdir: Path | None = None,
    timings: ChaosTimings | None = None,
    keep: bool = False,
) -> TrialResult:
    """One seeded trial. Starts its own ZooKeeper (``zk_members`` of them: an ensemble when
    more than one) unless given a server or an ensemble's members (one per run is enough:
    every trial has its own root). The trial's folder (daemon logs) is kept when it fails."""
    t = timings or ChaosTimings()
    given: list[ZooKeeperServer] | None = None
    if zookeeper is not None:
        given = list(zookeeper) if isinstance(zookeeper, Sequence) else [zookeeper]
        zk_members = len(given)
    plan = make_plan(seed, steps, nodes, t, zk_members)
    result = TrialResult(seed, steps, nodes, zk_members)
    base = Path(workdir or tempfile.mkdtemp(prefix=f"pvc-chaos-{seed}-"))
    base.mkdir(parents=True, exist_ok=True)
    members: list[ZooKeeperServer] = given or []
    root_level = logging.getLogger().level
    handler = _log_to(base / "pvc.log")
    started = time.monotonic()
    try:
        if given is None:
            if zk_members > 1:
                members = start_ensemble(base / "zookeeper", zk_members)
            else:
                members = [ZooKeeperServer(base / "zookeeper")]
                members[0].start()
        _run(plan, members, base / "cluster", t, result)
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(root_level)
        handler.close()
        if given is None:
            for member in members:
                member.stop()
        result.seconds = time.monotonic() - started
        if result.ok and not keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            result.log_file = str(base / "pvc.log")
    return result


def _log_to(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(name)s %(message)s")
    )
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    logging.getLogger("kazoo").setLevel(logging.WARNING)
    return handler


def _run(
    plan: Plan,
    zk: list[ZooKeeperServer],
    workdir: Path,
    t: ChaosTimings,
    result: TrialResult,
) -> None:
    cluster = ChaosCluster(
        zk,
        workdir,
        nodes=plan.nodes,
        coordinators=plan.coordinators,
        timings=t,
        live_migration=True,
    )
    runner: TrialRunner | None = None
    try:
        with cluster:
            runner = TrialRunner(cluster, plan, result)
            runner.note(
                f"cluster up: {plan.nodes} nodes, {plan.coordinators} coordinators, "
                f"primary {cluster.primary()}"
                + (
                    f"; {len(zk)} ZooKeeper members, leader member {leader + 1}"
                    if len(zk) > 1 and (leader := cluster.leader_member()) is not None
                    else ""
                )
            )
            runner.note(live_migration.prepare(cluster, plan, result))
            for vm in plan.vms:
                live_migration.prepare_vm(cluster, vm, vm["name"])
                cluster.apply_vm(
                    vm["name"],
                    ignore_acpi=vm["ignore_acpi"],
                    shutdown_timeout=vm["shutdown_timeout"],
                    **live_migration.vm_spec(vm),
                )
            runner.note(
                "applied "
                + ", ".join(
                    f"{v['name']}(shutdownTimeout {v['shutdown_timeout']}, {v.get('method')}"
                    + (", ignores ACPI)" if v["ignore_acpi"] else ")")
                    for v in plan.vms
                )
            )
            for vm in plan.vms:
                cluster.wait_running(vm["name"], 30)
            runner.note(
                "running: "
                + ", ".join(f"{v['name']}@{cluster.running_on(v['name'])}" for v in plan.vms)
            )
            for step in plan.steps:
                runner.sleep(step.wait)
                try:
                    outcome = runner.run_step(step)
                except Exception as exc:
                    outcome = f"error {exc!r}"
                runner.note(f"step {step.index}: {step.describe()} -> {outcome}")
                if outcome.startswith(("HTTP 5", "error")):
                    result.info.append(f"step {step.index}: {step.describe()} -> {outcome}")
            runner.finish_due()
            healed = cluster.heal_all()
            readied = cluster.ready_all()
            runner.note(
                "healed: "
                + ("; ".join(healed) or "nothing left to heal")
                + (f"; ready {', '.join(readied)}" if readied else "")
            )
            ok, took, gaps = cluster.wait_converged()
            result.converge_seconds = took
            if ok:
                runner.note(f"converged in {took:.1f}s (bound {t.converge_bound:g}s)")
            else:
                runner.note(f"NOT converged within {t.converge_bound:g}s")
                result.failures += [
                    f"NOT CONVERGED within {t.converge_bound:g}s: {g}" for g in gaps
                ]
            result.failures += cluster.check_specs()
    except Exception as exc:
        result.failures.append(f"HARNESS: {exc!r}")
        if runner is not None:
            runner.note(f"harness error {exc!r}")
    finally:
        # The monitor took its last look when the cluster closed.
        result.failures = cluster.monitor.failures + result.failures
        result.info += cluster.monitor.info
        result.transitions = cluster.world.format_transitions(80)
        result.calls = cluster.calls.tail(80)
        errors = [f"{inc.name}: {e}" for inc in cluster.incarnations() for e in inc.errors]
        result.info += [f"daemon restarted after an error: {e}" for e in errors]
        leftover = [th.name for th in threading.enumerate() if th.name.startswith("daemon-n")]
        if leftover:
            result.info.append(f"daemon threads still running after close: {leftover}")
