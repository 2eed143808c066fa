"""Rename a stopped VM: every znode keyed by its name moves in one ZooKeeper transaction.

What moves (zkstore/paths.py, zkstore/console.py): the spec ``/resources/vms/<name>`` and
its children (``status``, ``placement``), the node-index entry of the node it is placed on,
its holder set (``/holders/<name>``: the node that may still hold its stopped domain stays
its holder under the new name), its disk records (``/disks/<name>``: its volumes stay
linked, under their own names: volume files are never renamed), its console tail and
domain XML, and the name in each of its events. The old name's znodes are deleted in the
same transaction, each with a version check, so a change made meanwhile (a spec edit, a
status or placement write, a node claiming it) fails the whole rename (``Conflict``) and
nothing is lost or half-moved.

Only a stopped VM is renamed (``RenameRefused`` says why not): ``runStrategy: Halted``,
reported ``Stopped``, no move under way, held by no node but the one it is placed on
(docs/ha.md, the one-copy rule), no ``--delete-volumes`` pending, and no image in a node's
``diskDir`` (those are named after the VM: the node would not find them under the new
name). Its node then removes the domain of the old name and defines the new one when the
VM starts. NICs without a ``mac`` get the MAC derived from the old name written into the
spec, so the guest keeps its MAC (and its DHCP lease).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from kazoo.client import TransactionRequest
from kazoo.exceptions import NodeExistsError, NoNodeError
from kazoo.protocol.states import ZnodeStat

from schemas import MigrationState, Placement, RunStrategy, VirtualMachine, VMPhase
from schemas.vm import derived_mac
from zkstore import paths
from zkstore.codec import decode, encode
from zkstore.console import CONSOLES, DOMAIN_XML
from zkstore.errors import AlreadyExists, Conflict, EpochMoved, NotFound
from zkstore.store import Store

log = logging.getLogger(__name__)

KIND = VirtualMachine.KIND
_MOVING = (MigrationState.WAITING, MigrationState.RUNNING, MigrationState.FALLING_BACK)
"""Migration states of a move under way (status.migration.state)."""


class RenameRefused(Conflict):
    """The VM is not in a state that may be renamed (it runs, moves, or is held elsewhere)."""


@dataclass
class _Move:
    """One znode to move: read with its version, created under the new path, deleted at
    the old one with that version."""

    old: str
    new: str
    data: bytes
    version: int


@dataclass
class RenamePlan:
    """The reads and checks of a rename, and the transaction that carries it out
    (``commit``); split so a test can change the store between the two."""

    store: Store
    old: str
    new: str
    moves: list[_Move] = field(default_factory=list)
    parents_new: list[str] = field(default_factory=list)
    """Directories to create for the new name (created before the znodes under them)."""
    parents_old: list[str] = field(default_factory=list)
    """Directories of the old name to delete (after the znodes under them)."""
    event_updates: list[tuple[str, bytes, int]] = field(default_factory=list)
    epoch: int | None = None
    """The primary's epoch: the rename commits only while the cluster epoch is that."""

    def commit(self) -> VirtualMachine:
        txn = self.store.client.transaction()
        if self.epoch is not None:
            txn.check(self.store.path(paths.EPOCH), version=self.epoch)
        self._add(txn)
        results = txn.commit()
        failed = [r for r in results if isinstance(r, Exception)]
        if self.epoch is not None and isinstance(results[0], Exception):
            raise EpochMoved(f"rename of {self.old!r} refused: the epoch moved past {self.epoch}")
        if not failed:
            log.info(
                "event=vm_renamed vm=%s new=%s znodes=%d events=%d",
                self.old,
                self.new,
                len(self.moves),
                len(self.event_updates),
            )
            return self.store.get(VirtualMachine, self.new)
        first = results[1] if self.epoch is not None else results[0]
        if isinstance(first, NodeExistsError):
            raise AlreadyExists(KIND, self.new)
        log.info("event=vm_rename_conflict vm=%s new=%s results=%r", self.old, self.new, results)
        raise Conflict(
            f"VirtualMachine {self.old!r} changed while it was being renamed (its spec, status, "
            "placement, holders, disks or events); nothing was renamed: try again"
        )

    def _add(self, txn: TransactionRequest) -> None:
        spec, *rest = self.moves
        # The new spec first: its NodeExistsError says the name is taken.
        txn.create(spec.new, spec.data)
        for parent in self.parents_new:
            txn.create(parent, b"")
        for move in rest:
            txn.create(move.new, move.data)
            txn.delete(move.old, version=move.version)
        for parent in self.parents_old:
            txn.delete(parent)
        txn.delete(spec.old, version=spec.version)
        for path, data, version in self.event_updates:
            txn.set_data(path, data, version=version)
        # No --delete-volumes may be pending for the old name: created and deleted here, so
        # the transaction fails if one appeared since the check.
        pending = self.store.path(paths.volume_deletion(self.old))
        txn.create(pending, b"")
        txn.delete(pending)


def plan_rename(store: Store, old: str, new: str) -> RenamePlan:
    """Read everything of ``old`` to move, checking it may be renamed to ``new`` now."""
    client = store.client
    spec_path = store.path(paths.resource("vms", old))
    new_spec_path = store.path(paths.resource("vms", new))
    try:
        data, stat = client.get(spec_path)
        children = sorted(client.get_children(spec_path))
    except NoNodeError:
        raise NotFound(KIND, old) from None
    if client.exists(new_spec_path) is not None:
        raise AlreadyExists(KIND, new)
    vm = store.get(VirtualMachine, old)
    raw_status = store.read_status(VirtualMachine, old)
    placement = store.read_placement(old)
    _refuse_unless_stopped(store, vm, raw_status, placement)

    plan = RenamePlan(store, old, new)
    plan.moves.append(_Move(spec_path, new_spec_path, _renamed_spec(data, old, new), stat.version))
    for child in children:
        plan.moves.append(_read_move(store, f"{spec_path}/{child}", f"{new_spec_path}/{child}"))
    if placement is not None and placement.node:
        plan.moves.append(
            _read_move(
                store,
                store.path(paths.node_index_entry(placement.node, old)),
                store.path(paths.node_index_entry(placement.node, new)),
            )
        )
    _add_directory(plan, paths.holders(old), paths.holders(new))
    _add_directory(plan, paths.vm_disks(old), paths.vm_disks(new))
    for folder in (CONSOLES, DOMAIN_XML):
        stat_ = client.exists(store.path(f"{folder}/{old}"))
        if stat_ is not None:
            plan.moves.append(
                _read_move(store, store.path(f"{folder}/{old}"), store.path(f"{folder}/{new}"))
            )
    _add_events(plan)
    return plan


def rename_vm(store: Store, old: str, new: str, *, epoch: int | None = None) -> VirtualMachine:
    """Rename the stopped VM ``old`` to ``new`` in one transaction (see the module's doc);
    with ``epoch`` (the primary's) only while the cluster epoch is still that."""
    if old == new:
        raise AlreadyExists(KIND, new)
    plan = plan_rename(store, old, new)
    plan.epoch = epoch
    return plan.commit()


def _refuse_unless_stopped(
    store: Store, vm: VirtualMachine, raw_status: Any, placement: Placement | None
) -> None:
    name = vm.name
    why = f"VirtualMachine {name!r} cannot be renamed now: "
    if vm.deleting:
        raise RenameRefused(why + "it is being deleted (Terminating)")
    if vm.spec.run_strategy != RunStrategy.HALTED:
        raise RenameRefused(
            why + f"runStrategy is {vm.spec.run_strategy.value}; stop it first "
            f"(pvcctl vm stop {name}) and wait until it is Stopped"
        )
    phase = raw_status.get("phase") if isinstance(raw_status, dict) else None
    if phase != VMPhase.STOPPED.value:
        raise RenameRefused(
            why + f"it is {phase or 'Pending'}, not Stopped (it may still run): wait until it "
            f"is Stopped (pvcctl wait vm/{name} --for=jsonpath='{{.status.phase}}'=Stopped)"
        )
    migration = raw_status.get("migration") if isinstance(raw_status, dict) else None
    if isinstance(migration, dict) and migration.get("state") in _MOVING:
        raise RenameRefused(why + f"a move to {migration.get('target')} is under way")
    placed = placement.node if placement is not None else None
    holders = _children(store, paths.holders(name))
    others = sorted(set(holders) - {placed} if placed else set(holders))
    if others:
        raise RenameRefused(
            why + f"node(s) {', '.join(others)} may still hold its domain; their daemons "
            "release it once it is gone from them"
        )
    for holder in holders:
        records = _children(store, paths.holder(name, holder))
        if records:  # zkstore/holders.py: to-<target>, from-<source>
            raise RenameRefused(
                why + f"node {holder}'s hold on it still records a live migration "
                f"({', '.join(records)}); its daemon clears that once it knows how the "
                "migration ended"
            )
    if store.client.exists(store.path(paths.volume_deletion(name))) is not None:
        raise RenameRefused(why + "the volumes of a deleted VM of this name are being deleted")
    legacy = [d.name for d in vm.spec.disks if d.pool is None and d.creates]
    if legacy:
        raise RenameRefused(
            why + f"disk(s) {', '.join(legacy)} are images in the nodes' diskDir, named after "
            "the VM (only volumes in a StoragePool keep their name through a rename)"
        )
    for disk in _children(store, paths.vm_disks(name)):
        raw = _read_json(store, paths.disk_record(name, disk))
        if isinstance(raw, dict) and raw.get("state") != "created":
            raise RenameRefused(
                why + f"the volume of disk {disk} is {raw.get('state')} ({raw.get('path')})"
            )


def _renamed_spec(data: bytes, old: str, new: str) -> bytes:
    """The stored spec under its new name; NICs without a MAC keep the one the old name gave."""
    stored = decode(data)
    stored["metadata"]["name"] = new
    nics = stored.get("spec", {}).get("nics") or []
    pinned = False
    for index, nic in enumerate(nics):
        if not nic.get("mac"):
            nic["mac"] = derived_mac(old, index)
            pinned = True
    if pinned:
        meta = stored["metadata"]
        meta["generation"] = int(meta.get("generation", 1)) + 1
    return encode(stored)


def _read_move(store: Store, old: str, new: str) -> _Move:
    try:
        data, stat = store.client.get(old)
    except NoNodeError:
        raise Conflict(f"{old} went away while the rename read it; nothing was renamed") from None
    return _Move(old, new, data, _version(stat))


def _version(stat: ZnodeStat) -> int:
    return int(stat.version)


def _children(store: Store, relative: str) -> list[str]:
    try:
        return sorted(store.client.get_children(store.path(relative)))
    except NoNodeError:
        return []


def _read_json(store: Store, relative: str) -> Any:
    try:
        return decode(store.client.get(store.path(relative))[0])
    except NoNodeError:
        return None


def _add_directory(plan: RenamePlan, old: str, new: str) -> None:
    """Move a directory of the old name (its data is empty) with every child."""
    store = plan.store
    if store.client.exists(store.path(old)) is None:
        return
    plan.parents_new.append(store.path(new))
    for child in _children(store, old):
        plan.moves.append(
            _read_move(store, store.path(f"{old}/{child}"), store.path(f"{new}/{child}"))
        )
    plan.parents_old.append(store.path(old))


def _add_events(plan: RenamePlan) -> None:
    """Each event of the VM (``involvedObject``) names it by its new name."""
    store = plan.store
    root = store.path(paths.EVENTS)
    names = _children(store, paths.EVENTS)
    reads = [(n, store.client.get_async(f"{root}/{n}")) for n in names]
    for name, read in reads:
        try:
            data, stat = read.get()
        except NoNodeError:
            continue  # trimmed meanwhile
        raw = decode(data)
        if isinstance(raw, dict) and raw.get("kind") == KIND and raw.get("name") == plan.old:
            raw["name"] = plan.new
            plan.event_updates.append((f"{root}/{name}", encode(raw), _version(stat)))
