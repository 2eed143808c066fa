"""Checks of a write against the rest of the cluster, before anything is written (the API's
create, replace, patch and apply, dry runs too): what one object's schema cannot know.
Bad input raises InvalidResource (422, naming the field); a write the cluster's state
forbids for now raises Conflict (409, saying what to do first)."""

from __future__ import annotations

from schemas import (
    FieldError,
    InvalidResource,
    PoolType,
    Resource,
    StoragePool,
    VirtualMachine,
    format_bytes,
    to_bytes,
)
from schemas.node import SECRET_MASK
from zkstore.disks import Disks
from zkstore.errors import Conflict, NotFound
from zkstore.store import Store


def admit(store: Store, obj: Resource) -> None:
    """Raise when writing ``obj`` (created, replaced or applied) must not happen."""
    if isinstance(obj, VirtualMachine):
        _vm(store, obj)
    elif isinstance(obj, StoragePool):
        _pool(store, obj)


def _current(store: Store, cls: type[Resource], name: str) -> Resource | None:
    try:
        return store.get(cls, name)
    except NotFound:
        return None


def _vm(store: Store, vm: VirtualMachine) -> None:
    current = _current(store, VirtualMachine, vm.name)
    assert current is None or isinstance(current, VirtualMachine)
    if current is None and any(d.pool for d in vm.spec.disks):
        if Disks(store).deletion_pending(vm.name):
            raise Conflict(
                f"the volumes of a deleted VM named {vm.name!r} are still being deleted "
                "(--delete-volumes); create it again once they are gone"
            )
    pools: dict[str, StoragePool | None] = {}
    errors: list[FieldError] = []
    before = {d.name: d for d in current.spec.disks} if current is not None else {}
    records = Disks(store).of(vm.name) if any(d.creates for d in vm.spec.disks) else {}
    for i, disk in enumerate(vm.spec.disks):
        at = ("spec", "disks", i)
        if disk.pool is None:
            continue
        if disk.pool not in pools:
            found = _current(store, StoragePool, disk.pool)
            pools[disk.pool] = found if isinstance(found, StoragePool) else None
        pool = pools[disk.pool]
        if pool is None:
            errors.append(FieldError((*at, "pool"), f"storage pool {disk.pool!r} does not exist"))
            continue
        rbd = pool.spec.type == PoolType.RBD
        if rbd and disk.format == "qcow2":
            errors.append(FieldError((*at, "format"), "rbd pools hold raw images only"))
        if not rbd and disk.from_ is not None and disk.format == "raw":
            errors.append(FieldError((*at, "format"), "a clone in a folder is a qcow2 overlay"))
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
        if disk.size is None:
            continue
        size = to_bytes(disk.size)
        had = before.get(disk.name)
        known = max(
            [to_bytes(had.size)] if had is not None and had.size and had.pool else [],
            default=0,
        )
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
                    f"{disk.size} does not fit in pool {pool.name} ({format_bytes(free)} free)",
                )
            )
    if errors:
        raise InvalidResource(errors)


def _pool(store: Store, pool: StoragePool) -> None:
    current = _current(store, StoragePool, pool.name)
    assert current is None or isinstance(current, StoragePool)
    rbd = pool.spec.rbd
    if current is None and rbd is not None and rbd.key.get_secret_value() == SECRET_MASK:
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
