"""Live migration in the chaos trials: what a plan adds, and how a trial carries it out.

Drawn from its own random stream (``seed * 7919 + 3``), so the steps a seed drew before live
migration existed stay the same steps; only their details change:

- each VM gets a ``spec.migration.method`` (mostly ``auto``, else ``live`` or ``shutdown``)
  and a migration duration (1-5 s, ``world.slow_migrations``), so faults land mid-migration;
- a ``migrate`` step may be forced live (``live: true``, never a shutdown move), and some
  starts, stops and guest pauses become migrates; a migrate to where the VM is placed
  already goes to the next node instead (at run time);
- a crash, pause or partition may instead wait for the next live migration anywhere and hit
  its source or its target a moment into it (a crash there may be a power loss instead);
- some trials have a node whose hypervisor cannot live-migrate (``auto`` moves go cold).

Every trial's cluster publishes migration URIs, so moves, flushes and unflushes of running
VMs go live unless a VM's method says otherwise. The trial counts the live migrations begun
and completed (driver ``migrate`` calls) for its report.
"""

from __future__ import annotations

import random
import threading
from typing import TYPE_CHECKING, Any

from tests.chaos.harness import ChaosCluster

if TYPE_CHECKING:
    from tests.chaos.trials import Plan, Step, TrialResult, TrialRunner

NEXT_MIGRATE = "<the next node to live-migrate a VM>"
"""A step's node resolved when a driver's migrate() is next called, anywhere: the fault hits
that migration's source or target, ``delay`` seconds into it."""

METHODS = (("auto", 0.6), ("live", 0.25), ("shutdown", 0.15))
MIGRATE_SECONDS = (1.0, 5.0)
FORCED_LIVE = 0.4
"""Share of migrate steps forced live."""
MORE_MIGRATES = 0.3
"""Share of start, stop and guest pause steps that become migrates instead."""
AT_MIGRATE = 0.35
"""Share of crash, pause and partition faults aimed at the next live migration instead."""
POWER_LOSS = 0.5
"""Share of those crashes that are a power loss of the host (both copies' fate differs)."""
NO_LIVE_NODE = 0.2
"""Share of trials with a node whose hypervisor cannot live-migrate."""


def extend(plan: Plan) -> None:
    """Add live migration to a plan (in place), from the plan's seed alone."""
    rng = random.Random(plan.seed * 7919 + 3)
    names = [f"n{i}" for i in range(1, plan.nodes + 1)]
    for vm in plan.vms:
        vm.update(_vm_draw(rng))
    for step in plan.steps:
        if step.action == "apply":
            step.args.update(_vm_draw(rng))
        elif step.action == "migrate" and rng.random() < FORCED_LIVE:
            step.args["live"] = True
        elif step.action in ("start", "stop", "guest_pause") and rng.random() < MORE_MIGRATES:
            step.action = "migrate"
            step.args = {"vm": step.args["vm"], "node": rng.choice(names)}
            if rng.random() < FORCED_LIVE:
                step.args["live"] = True
        elif step.action in ("kill", "pause", "partition") and rng.random() < AT_MIGRATE:
            target = rng.choice(names)
            then = f"migrate {_live_vm(plan, step)} {target}"
            step.args = {
                "node": NEXT_MIGRATE,
                "side": rng.choice(["source", "target"]),
                "delay": round(rng.uniform(0.2, 1.0), 2),
                "then": then + (" live" if rng.random() < FORCED_LIVE else ""),
                **({"seconds": step.args["seconds"]} if "seconds" in step.args else {}),
            }
            if step.action == "kill" and rng.random() < POWER_LOSS:
                step.action = "power_off"
    if rng.random() < NO_LIVE_NODE:
        plan.no_live_node = rng.choice(names)


def _vm_draw(rng: random.Random) -> dict[str, Any]:
    return {
        "method": rng.choices([m for m, _ in METHODS], [w for _, w in METHODS])[0],
        "migrate_seconds": round(rng.uniform(*MIGRATE_SECONDS), 1),
    }


def _live_vm(plan: Plan, step: Step) -> str:
    """A VM that exists at ``step`` (applied before it, not deleted before it), for the
    migration a fault waits for; the first one when none is known."""
    alive = [vm["name"] for vm in plan.vms]
    for earlier in plan.steps[: step.index - 1]:
        if earlier.action == "apply":
            alive.append(earlier.args["vm"])
        elif earlier.action == "delete" and earlier.args["vm"] in alive:
            alive.remove(earlier.args["vm"])
    return alive[step.index % len(alive)] if alive else "v1"


def vm_spec(vm: dict[str, Any]) -> dict[str, Any]:
    """The VM manifest's extra spec for a VM of the plan (or an ``apply`` step's args)."""
    return {"migration": {"method": vm["method"]}} if "method" in vm else {}


def prepare_vm(cluster: ChaosCluster, vm: dict[str, Any], name: str) -> None:
    """Before the VM is applied: how long its live migrations take."""
    if "migrate_seconds" in vm:
        cluster.world.slow_migrations(name, vm["migrate_seconds"])


def prepare(cluster: ChaosCluster, plan: Plan, result: TrialResult) -> str:
    """Before the steps: the node that cannot live-migrate, the migration counters."""
    lock = threading.Lock()

    def begun(_node: str, _op: str, _vm: str | None) -> None:
        with lock:
            result.migrations += 1

    def completed(_node: str, _op: str, _vm: str | None) -> None:
        with lock:
            result.migrated += 1

    cluster.hooks.before("migrate", begun, once=False)
    cluster.hooks.after("migrate", completed, once=False)
    if plan.no_live_node is None:
        return "every node can live-migrate"
    cluster.world.set_live_migration(plan.no_live_node, False)
    return f"{plan.no_live_node} cannot live-migrate"


def migrate_body(cluster: ChaosCluster, vm: str, node: str, live: bool) -> dict[str, Any]:
    """A migrate's request: to ``node``, or the next one when the VM is placed there already
    (a migration, not a 409)."""
    if cluster.placement_of(vm) == node:
        names = sorted(cluster.slots)
        node = names[(names.index(node) + 1) % len(names)]
    return {"node": node, **({"live": True} if live else {})}


def at_next_migrate(runner: TrialRunner, step: Step) -> str:
    """Arm a fault for the next live migration of any VM, then start one."""
    c, a = runner.cluster, step.args
    action, side, delay = step.action, a["side"], a["delay"]

    def hit(source: str, _op: str, vm: str | None) -> None:
        def fire() -> None:
            others = sorted(c.world.holders(vm or "") - {source})
            node = source if side == "source" else (others[0] if others else None)
            if node is None:
                runner.note(f"  step {step.index} fires: no target holds {vm} (ended already)")
                return
            runner.note(f"  step {step.index} fires: {_hit(runner, action, node, a)}, {delay:g}s "
                        f"into the migration of {vm} from {source} ({side})")  # fmt: skip

        timer = threading.Timer(delay, fire)
        timer.daemon = True
        runner._timers.append(timer)
        timer.start()

    runner._hooks.append(c.hooks.before("migrate", hit))
    _, vm, node, *live = a["then"].split()
    body = migrate_body(c, vm, node, bool(live))
    response = c.api("POST", f"/api/v1/vms/{vm}/migrate", json=body)
    return (
        f"armed; migrate {vm} {body['node']}{' live' if live else ''}: HTTP {response.status_code}"
    )


def _hit(runner: TrialRunner, action: str, node: str, args: dict[str, Any]) -> str:
    c = runner.cluster
    if action == "kill":
        return f"kill {node}" if c.kill(node) else f"{node} is down already"
    if action == "power_off":
        c.world.power_off(node)
        return f"power off {node}"
    inc = c.pause(node) if action == "pause" else c.partition(node)
    if inc is None:
        return f"{node} is down already"
    undo = c.resume if action == "pause" else c.heal_partition
    timer = threading.Timer(args["seconds"], undo, (inc,))
    timer.daemon = True
    runner._timers.append(timer)
    timer.start()
    return f"{action} {inc.name} for {args['seconds']:g}s"
