"""Imperative verbs as small POST actions.

Each verb only writes spec, an annotation or the VM's placement record, and
answers with the object it changed. Temporary placement (migrate, unmigrate)
never touches spec, so a GitOps pipeline never sees it as drift; ``move``
changes ``spec.placement.home`` on purpose. The placement is the primary's to
write: those verbs ask it (api/primary_requests.py) and answer with its outcome,
or 503 when no primary acted within ``primaryRequestTimeout``, nothing changed.
"""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter
from pydantic import ConfigDict, Field, ValidationError
from pydantic.config import JsonDict

from api.deps import EventsDep, NameParam, StoreDep, is_object_name
from api.errors import ApiError, invalid
from api.openapi_contract import DNS_LABEL
from api.primary_requests import Primary, PrimaryDep
from api.routes.resources import API_PREFIX
from schemas import (
    CLUSTER_NAME,
    Cluster,
    DaemonState,
    FieldError,
    MigrationMethod,
    Node,
    RouterState,
    RunStrategy,
    VirtualMachine,
    utcnow,
    verbs,
)
from schemas.meta import Model
from schemas.registry import errors_from_validation
from zkstore import AlreadyExists, Conflict, NotFound, Store
from zkstore.errors import Terminating
from zkstore.moves import live_migration_problem, unreached_disks
from zkstore.requests import PLACE

router = APIRouter()
VMS = f"{API_PREFIX}/vms/{{name}}"
NODES = f"{API_PREFIX}/nodes/{{name}}"


_EXISTING_NODE: JsonDict = {"x-pvc-rules": ["an existing Node"]}


class MigrateRequest(Model):
    model_config = ConfigDict(strict=True)  # JSON's own types, as the document says
    node: str = Field(
        pattern=DNS_LABEL,
        json_schema_extra={
            "x-pvc-rules": ["an existing Node, among spec.placement.nodes unless force"]
        },
    )
    live: bool = False
    """Live migration only, whatever spec.migration.method says: never a shutdown; if it
    fails, the VM keeps running where it is."""
    force: bool = False
    """Allow a node outside spec.placement.nodes (the node limit); nothing else."""


class MoveRequest(Model):
    model_config = ConfigDict(strict=True)
    node: str = Field(pattern=DNS_LABEL, json_schema_extra=_EXISTING_NODE)


class MaintenanceRequest(Model):
    model_config = ConfigDict(strict=True)
    enabled: bool


def _set_run_strategy(store: Store, name: str, strategy: RunStrategy) -> VirtualMachine:
    def change(vm: VirtualMachine) -> None:
        vm.spec.run_strategy = strategy

    return store.mutate_spec(VirtualMachine, name, change)


def _annotate(store: Store, name: str, values: dict[str, str | None]) -> VirtualMachine:
    """Set (or with None remove) annotations, keeping spec as it is."""

    def change(vm: VirtualMachine) -> None:
        annotations = dict(vm.metadata.annotations)
        for key, value in values.items():
            if value is None:
                annotations.pop(key, None)
            else:
                annotations[key] = value
        vm.metadata.annotations = annotations

    return store.mutate_spec(VirtualMachine, name, change)


def _require_node(store: Store, node: str) -> None:
    if not is_object_name(node) or not store.exists(Node, node):
        raise invalid([FieldError(("node",), f"node {node!r} does not exist")])


def _place(
    store: Store,
    primary: Primary,
    requested: tuple[str, str],
    vm: str,
    node: str,
    reason: str,
    migration: str | None,
    only_from: str | None = None,
    method: MigrationMethod | None = None,
) -> None:
    """Have the primary place ``vm`` on ``node`` (controllers/requests.py): it checks again
    that the VM exists, is not Terminating, that the node exists and, with ``only_from``,
    that the VM is still there (a drain or a recovery moved it since: 409), then records
    the ``requested`` event (reason, message) just before its write, and ``...Refused``
    with the reason when the write fails. The API may not write a placement itself."""
    current = store.get(VirtualMachine, vm)
    if current.deleting:  # it goes: nothing may start or move it now
        raise Terminating(current.KIND, vm, str(current.metadata.deletion_timestamp))
    event_reason, message = requested
    args = {
        "node": node,
        "reason": reason,
        "migration": migration,
        "onlyFrom": only_from,
        "method": method.value if method is not None else None,
        "event": event_reason,
        "message": message,
    }
    primary.ask(PLACE, VirtualMachine.KIND, vm, args)


@router.post(f"{VMS}/start", tags=["verbs"])
def vm_start(name: NameParam, store: StoreDep, events: EventsDep) -> dict[str, Any]:
    """Set spec.runStrategy to Always."""
    vm = _set_run_strategy(store, name, RunStrategy.ALWAYS)
    events.record(VirtualMachine.KIND, name, "StartRequested", "runStrategy set to Always")
    return vm.wire()


@router.post(f"{VMS}/stop", tags=["verbs"])
def vm_stop(name: NameParam, store: StoreDep, events: EventsDep) -> dict[str, Any]:
    """Set spec.runStrategy to Halted (graceful shutdown, then force off after shutdownTimeout)."""
    vm = _set_run_strategy(store, name, RunStrategy.HALTED)
    events.record(VirtualMachine.KIND, name, "StopRequested", "runStrategy set to Halted")
    return vm.wire()


@router.post(f"{VMS}/force-stop", tags=["verbs"])
def vm_force_stop(name: NameParam, store: StoreDep, events: EventsDep) -> dict[str, Any]:
    """Annotate pvc.io/force-stop with a timestamp and set runStrategy Halted: power off now."""
    stamp = utcnow()

    def change(vm: VirtualMachine) -> None:
        vm.metadata.annotations = {**vm.metadata.annotations, verbs.FORCE_STOP: stamp}
        vm.spec.run_strategy = RunStrategy.HALTED

    vm = store.mutate_spec(VirtualMachine, name, change)
    events.record(VirtualMachine.KIND, name, "ForceStopRequested", f"{verbs.FORCE_STOP}={stamp}")
    return vm.wire()


@router.post(f"{VMS}/restart", tags=["verbs"])
def vm_restart(name: NameParam, store: StoreDep, events: EventsDep) -> dict[str, Any]:
    """Annotate pvc.io/restart with a timestamp (like kubectl rollout restart)."""
    stamp = utcnow()
    vm = _annotate(store, name, {verbs.RESTART: stamp})
    events.record(VirtualMachine.KIND, name, "RestartRequested", f"{verbs.RESTART}={stamp}")
    return vm.wire()


@router.post(f"{VMS}/migrate", tags=["verbs"])
def vm_migrate(
    name: NameParam, body: MigrateRequest, store: StoreDep, primary: PrimaryDep
) -> dict[str, Any]:
    """Place the VM on another node for now; spec is untouched, ``unmigrate`` returns it.

    It moves as spec.migration.method says (``live``, ``shutdown``, ``auto``); with
    ``live: true`` it moves live only, never with a shutdown, and a live migration that
    fails leaves it running where it is (its status and a MigrationFailed event say why).
    """
    vm = store.get(VirtualMachine, name)
    _require_node(store, body.node)
    allowed = vm.spec.placement.nodes
    if allowed and body.node not in allowed and not body.force:
        raise invalid(
            [
                FieldError(
                    ("node",),
                    f"node {body.node!r} is not among the VM's allowed nodes {allowed} "
                    "(force overrides the node limit)",
                )
            ]
        )
    current = store.read_placement(name)
    source = current.node if current else None
    if source == body.node:
        raise ApiError(
            409,
            f"VirtualMachine {name!r} is already placed on {body.node!r}: "
            "a migration needs another node",
        )
    unreached = unreached_disks(store, vm, body.node)
    if unreached:
        raise ApiError(409, f"VirtualMachine {name!r} cannot run on {body.node!r}: {unreached}")
    if body.live:
        problem = live_migration_problem(store, vm, source, body.node)
        if problem is not None:
            raise ApiError(409, f"VirtualMachine {name!r} cannot be live-migrated: {problem}")
    # Keep the first source across repeated migrations, so unmigrate goes back there.
    origin = (current.migration if current and current.migration else None) or source
    _place(
        store,
        primary,
        (
            "MigrateRequested",
            f"to {body.node} from {source or '-'}"
            + (" (live only)" if body.live else f" ({vm.spec.migration.method.value})"),
        ),
        name,
        body.node,
        verbs.PLACEMENT_MIGRATE,
        origin,
        only_from=source,
        method=MigrationMethod.LIVE if body.live else None,
    )
    return vm.wire()


@router.post(f"{VMS}/unmigrate", tags=["verbs"])
def vm_unmigrate(name: NameParam, store: StoreDep, primary: PrimaryDep) -> dict[str, Any]:
    """Return the VM to where it came from (placement.migration), else spec.placement.home."""
    vm = store.get(VirtualMachine, name)
    current = store.read_placement(name)
    target = (current.migration if current else None) or vm.spec.placement.home
    if not target:
        raise ApiError(
            409, f"VirtualMachine {name!r} was not migrated and has no spec.placement.home"
        )
    if current is not None and current.node == target and not current.migration:
        raise ApiError(409, f"VirtualMachine {name!r} is already on {target!r}")
    _place(
        store,
        primary,
        ("UnmigrateRequested", f"back to {target}"),
        name,
        target,
        verbs.PLACEMENT_UNMIGRATE,
        None,
        only_from=current.node if current is not None else None,
    )
    return vm.wire()


@router.post(f"{VMS}/move", tags=["verbs"])
def vm_move(
    name: NameParam, body: MoveRequest, store: StoreDep, primary: PrimaryDep
) -> dict[str, Any]:
    """Change spec.placement.home for good, and place the VM there."""
    store.get(VirtualMachine, name)
    _require_node(store, body.node)

    def change(vm: VirtualMachine) -> None:
        try:
            vm.spec.placement = vm.spec.placement.model_copy(update={"home": body.node})
            VirtualMachine.model_validate(vm.model_dump(by_alias=True))
        except ValidationError as exc:
            raise invalid(errors_from_validation(exc)) from None

    vm = store.mutate_spec(VirtualMachine, name, change)
    _place(
        store,
        primary,
        ("MoveRequested", f"home set to {body.node}"),
        name,
        body.node,
        verbs.PLACEMENT_MOVE,
        None,
    )
    return vm.wire()


def _set_drain(store: Store, name: str, drain: bool) -> Node:
    def change(node: Node) -> None:
        node.spec.drain = drain

    return store.mutate_spec(Node, name, change)


@router.post(f"{NODES}/flush", tags=["verbs"])
def node_flush(name: NameParam, store: StoreDep, events: EventsDep) -> dict[str, Any]:
    """Set spec.drain: the drain controller moves the node's VMs away."""
    node = _set_drain(store, name, True)
    events.record(Node.KIND, name, "FlushRequested", "spec.drain set to true")
    return node.wire()


@router.post(f"{NODES}/ready", tags=["verbs"])
def node_ready(name: NameParam, store: StoreDep, events: EventsDep) -> dict[str, Any]:
    """Clear spec.drain: the node takes VMs again (and its own come back)."""
    node = _set_drain(store, name, False)
    events.record(Node.KIND, name, "ReadyRequested", "spec.drain set to false")
    return node.wire()


def _mutate_cluster(store: Store, change: Any) -> Cluster:
    """Change the Cluster singleton, creating it with defaults when it does not exist yet."""
    for _ in range(8):
        try:
            return store.mutate_spec(Cluster, CLUSTER_NAME, change)
        except NotFound:
            fresh = Cluster.model_validate(
                {"apiVersion": "pvc/v1", "kind": "Cluster", "metadata": {"name": CLUSTER_NAME}}
            )
            # Someone else may have created it meanwhile: then mutate that one.
            with contextlib.suppress(AlreadyExists):
                store.create(fresh)
    raise Conflict("the Cluster object kept changing; gave up")


@router.post(f"{NODES}/primary", tags=["verbs"])
def node_primary(name: NameParam, store: StoreDep, events: EventsDep) -> dict[str, Any]:
    """Prefer this node as primary coordinator (Cluster spec.primary): a graceful switchover."""
    store.get(Node, name)

    def change(cluster: Cluster) -> None:
        cluster.spec.primary = name

    cluster = _mutate_cluster(store, change)
    events.record(Node.KIND, name, "PrimaryRequested", "Cluster spec.primary set to this node")
    return cluster.wire()


@router.post(f"{NODES}/secondary", tags=["verbs"])
def node_secondary(name: NameParam, store: StoreDep, events: EventsDep) -> dict[str, Any]:
    """Make this node secondary: if it is the primary, hand over to another live
    coordinator (it becomes Cluster spec.primary); otherwise stop preferring it."""
    store.get(Node, name)
    current = store.get(Cluster, CLUSTER_NAME) if store.exists(Cluster, CLUSTER_NAME) else None
    is_primary = (
        current is not None and current.status is not None and (current.status.primary == name)
    )
    successor: str | None = None
    if is_primary:
        standby = sorted(
            n.name
            for n in store.list(Node)
            if n.name != name
            and n.spec.coordinator
            and n.status is not None
            and n.status.daemon_state == DaemonState.RUN
            and n.status.router_state == RouterState.SECONDARY
        )
        if not standby:
            raise ApiError(
                409, f"node {name!r} is the primary and no other coordinator can take over"
            )
        successor = standby[0]

    def change(cluster: Cluster) -> None:
        if successor is not None:
            cluster.spec.primary = successor
        elif cluster.spec.primary == name:
            cluster.spec.primary = None

    cluster = _mutate_cluster(store, change)
    message = (
        f"handing over to {successor} (Cluster spec.primary)"
        if successor
        else "Cluster spec.primary no longer names it"
    )
    events.record(Node.KIND, name, "SecondaryRequested", message)
    return cluster.wire()


@router.post(f"{API_PREFIX}/clusters/{{name}}/maintenance", tags=["verbs"])
def cluster_maintenance(
    name: NameParam, body: MaintenanceRequest, store: StoreDep, events: EventsDep
) -> dict[str, Any]:
    """Turn maintenance mode on or off (no fencing while on)."""
    if name != CLUSTER_NAME:
        raise NotFound(Cluster.KIND, name)

    def change(cluster: Cluster) -> None:
        cluster.spec.maintenance = body.enabled

    cluster = _mutate_cluster(store, change)
    state = "on" if body.enabled else "off"
    events.record(Cluster.KIND, name, "Maintenance", f"maintenance mode {state}")
    return cluster.wire()
