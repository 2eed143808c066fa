"""Checks of a write against the rest of the cluster, before anything is written (the API's
create, replace, patch and apply, dry runs too): what one object's schema cannot know.
Bad input raises InvalidResource (422, naming the field); a write the cluster's state
forbids for now raises Conflict (409, saying what to do first)."""

from __future__ import annotations

from typing import TypeVar

from schemas import (
    Disk,
    FieldError,
    InvalidResource,
    Network,
    Node,
    PoolType,
    Resource,
    StoragePool,
    VirtualMachine,
    approx_bytes,
    format_bytes,
    to_bytes,
)
from schemas.node import SECRET_MASK
from zkstore.disks import Disks
from zkstore.errors import Conflict, NotFound
from zkstore.network_admission import admit_network
from zkstore.store import Store

R = TypeVar("R", bound=Resource)
Batch = dict[tuple[str, str], Resource]
"""Objects written together (one apply), by (kind, name): admitted as a whole, so a VM may
name a pool that comes in the same apply."""


class Reads:
    """What admission reads of the cluster that is not one object's own (a pool many VMs
    name, every VM, every network): read once for a batch (one apply, one restore), not once
    for each of its documents."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._found: dict[tuple[str, str], Resource | None] = {}
        self._every: dict[str, list[Resource]] = {}

    def current(self, cls: type[R], name: str) -> R | None:
        """The stored object (None: there is none)."""
        key = (cls.KIND, name)
        if key not in self._found:
            self._found[key] = _current(self.store, cls, name)
        found = self._found[key]
        assert found is None or isinstance(found, cls)
        return found

    def every(self, cls: type[R]) -> list[R]:
        """Every stored object of a kind."""
        if cls.KIND not in self._every:
            self._every[cls.KIND] = list(self.store.list(cls))
        return [o for o in self._every[cls.KIND] if isinstance(o, cls)]


def admit(
    store: Store, obj: Resource, batch: Batch | None = None, reads: Reads | None = None
) -> None:
    """Raise when writing ``obj`` (created, replaced or applied) must not happen. ``reads``:
    what the batch's admission has read so far (one per batch; default: read anew)."""
    reads = reads or Reads(store)
    if isinstance(obj, VirtualMachine):
        _vm(store, obj, batch or {}, reads)
    elif isinstance(obj, StoragePool):
        _pool(store, obj)
    elif isinstance(obj, Network):
        admit_network(store, obj, dict(batch or {}), reads.every(Network))
    elif isinstance(obj, Node):
        _node(store, obj)


def admit_all(store: Store, objs: list[Resource]) -> None:
    """Admit every object of one apply before any is written (nothing is written unless
    every one may be)."""
    batch: Batch = {(o.kind, o.name): o for o in objs}
    reads = Reads(store)
    for obj in objs:
        admit(store, obj, batch, reads)


def _current(store: Store, cls: type[R], name: str) -> R | None:
    try:
        return store.get(cls, name)
    except NotFound:
        return None


def _vm(store: Store, vm: VirtualMachine, batch: Batch, reads: Reads) -> None:
    disks = Disks(store)
    if any(d.pool and d.creates for d in vm.spec.disks) and disks.deletion_pending(vm.name):
        raise Conflict(
            f"the volumes of a deleted VM named {vm.name!r} are still being deleted "
            "(--delete-volumes; a volume that other volumes are clones of is kept until they "
            "are gone: see its VolumeKept event); give this VM its pool disks once they are"
        )
    errors: list[FieldError] = []
    before: dict[str, Disk] | None = None  # the stored VM's disks, read when a size needs them
    records = Disks(store).of(vm.name) if any(d.creates for d in vm.spec.disks) else {}
    for i, disk in enumerate(vm.spec.disks):
        at = ("spec", "disks", i)
        if disk.pool is None:
            continue
        found = batch.get((StoragePool.KIND, disk.pool)) or reads.current(StoragePool, disk.pool)
        pool = found if isinstance(found, StoragePool) else None
        if pool is None:
            errors.append(FieldError((*at, "pool"), f"storage pool {disk.pool!r} does not exist"))
            continue
        rbd = pool.spec.type == PoolType.RBD
        if rbd and disk.format == "qcow2":
            errors.append(FieldError((*at, "format"), "rbd pools hold raw images only"))
        if not rbd and disk.from_ is not None and disk.format == "raw":
            errors.append(FieldError((*at, "format"), "a clone in a folder is a qcow2 overlay"))
        if disk.volume is not None:
            errors.extend(_existing_volume(store, vm, disk.volume, pool, at, reads))
            continue
        record = records.get(disk.name)
        if record is not None and disk.creates and record.pool not in (None, disk.pool):
            errors.append(
                FieldError(
                    (*at, "pool"),
                    f"its volume {record.path} is in pool {record.pool}: a volume never moves "
                    "between pools",
                )
            )
            continue
        fmt = disk.format or ("raw" if rbd else "qcow2")
        if record is not None and record.format is not None and record.format != fmt:
            errors.append(
                FieldError(
                    (*at, "format"),
                    f"its volume {record.path} is {record.format}: a volume's format never changes",
                )
            )
            continue
        if disk.size is None:
            continue
        size = to_bytes(disk.size)
        if before is None:
            current = _current(store, VirtualMachine, vm.name)
            before = {d.name: d for d in current.spec.disks} if current is not None else {}
        had = before.get(disk.name)
        known = to_bytes(had.size) if had is not None and had.size and had.pool else 0
        if record is not None and record.size:
            known = max(known, record.size)
        if size < known:
            errors.append(
                FieldError(
                    (*at, "size"),
                    f"{disk.size} is smaller than the volume ({format_bytes(known)}): "
                    "volumes grow, never shrink",
                )
            )
            continue
        free = largest_free(pool)
        growth = size - known
        if free is not None and growth > free:
            errors.append(
                FieldError(
                    (*at, "size"),
                    f"{disk.size} does not fit in pool {pool.name} ({approx_bytes(free)} free)",
                )
            )
    if errors:
        raise InvalidResource(errors)


def _existing_volume(
    store: Store,
    vm: VirtualMachine,
    volume: str,
    pool: StoragePool,
    at: tuple[str | int, ...],
    reads: Reads,
) -> list[FieldError]:
    """A disk naming an existing volume: not one PVC created for another VM's disk (deleting
    that VM with its volumes would delete it under this one), not one another VM names (one
    disk in two guests corrupts it), and in a local pool only with the VM pinned to the one
    node that holds it."""
    errors = []
    owner, _, rest = volume.partition("_")
    owner_disk = rest.rsplit(".", 1)[0] if rest.endswith((".qcow2", ".raw")) else rest
    if owner and owner_disk and owner != vm.name:
        record = Disks(store).read(owner, owner_disk)
        if record is not None and record.pool == pool.name and record.volume == volume:
            errors.append(
                FieldError(
                    (*at, "volume"),
                    f"volume {volume} is VM {owner}'s disk {owner_disk}: clone it with "
                    "'from:' instead",
                )
            )
    users = [
        other.name
        for other in reads.every(VirtualMachine)
        if other.name != vm.name
        and any(d.pool == pool.name and d.volume == volume for d in other.spec.disks)
    ]
    if users:
        errors.append(
            FieldError(
                (*at, "volume"),
                f"volume {volume} of pool {pool.name} is VM {users[0]}'s disk already: one "
                "volume is one guest's disk",
            )
        )
    if pool.spec.type == PoolType.LOCAL and len(vm.spec.placement.nodes) != 1:
        errors.append(
            FieldError(
                (*at, "volume"),
                f"an existing volume in local pool {pool.name} is on one node: pin the VM to "
                "it with placement.nodes: [NODE]",
            )
        )
    return errors


def _node(store: Store, node: Node) -> None:
    """A fence password that is only the mask (an object read back from the API) is kept
    from the stored Node; with none stored it would become the password: refused."""
    password = node.spec.fence.password
    if password is None or password.get_secret_value() != SECRET_MASK:
        return
    current = _current(store, Node, node.name)
    assert current is None or isinstance(current, Node)
    if current is None or current.spec.fence.password is None:
        raise InvalidResource(
            [
                FieldError(
                    ("spec", "fence", "password"),
                    "give the password itself, not its mask (no password is stored to keep)",
                )
            ]
        )


def _pool(store: Store, pool: StoragePool) -> None:
    current = _current(store, StoragePool, pool.name)
    assert current is None or isinstance(current, StoragePool)
    rbd = pool.spec.rbd
    had_key = current is not None and current.spec.rbd is not None
    if not had_key and rbd is not None and rbd.key.get_secret_value() == SECRET_MASK:
        raise InvalidResource(
            [FieldError(("spec", "rbd", "key"), "give the key itself, not its mask")]
        )
    if current is None:
        return
    changed = [
        field
        for field, old, new in (
            ("type", current.spec.type, pool.spec.type),
            ("path", current.spec.path, pool.spec.path),
            (
                "rbd.pool",
                current.spec.rbd.pool if current.spec.rbd else None,
                rbd.pool if rbd else None,
            ),
        )
        if old != new
    ]
    if not changed:
        return
    users = pool_users(store, pool.name)
    if not users and (why := pool_in_use(store, pool.name)) is not None:
        raise Conflict(why)
    if users:
        raise InvalidResource(
            [
                FieldError(
                    ("spec", changed[0].split(".")[0]),
                    f"cannot change {', '.join(changed)} of a pool VMs use "
                    f"({', '.join(users[:5])}{' …' if len(users) > 5 else ''}): its volumes "
                    "would be lost to them",
                )
            ]
        )


def pool_users(store: Store, pool: str) -> list[str]:
    """VMs with a disk in ``pool``."""
    return sorted(
        vm.name for vm in store.list(VirtualMachine) if any(d.pool == pool for d in vm.spec.disks)
    )


def pool_in_use(store: Store, pool: str) -> str | None:
    """Why StoragePool ``pool`` must not be deleted now; None when it may."""
    users = pool_users(store, pool)
    if not users:
        disks = Disks(store)
        pending = [
            vm
            for vm in disks.deletions()
            if any(r.pool == pool and r.deleting for r in disks.of(vm).values())
        ]
        if pending:
            return (
                f"storage pool {pool!r} still holds volumes being deleted (of deleted VMs "
                f"{', '.join(pending[:5])}): delete it once they are gone"
            )
        return None
    more = f" and {len(users) - 5} more" if len(users) > 5 else ""
    return (
        f"storage pool {pool!r} is used by VMs {', '.join(users[:5])}{more}: delete them, "
        "or remove their disks in it, first"
    )


def largest_free(pool: StoragePool) -> int | None:
    """The most free space a node reaching ``pool`` reports (what one volume can take: the
    same storage for shared and rbd pools, a node's own for local ones); None: unknown."""
    if pool.status is None:
        return None
    frees = [n.free for n in pool.status.nodes if n.reachable and n.free is not None]
    return max(frees, default=None)
