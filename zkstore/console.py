"""What a VM's node saw of it, carried through the store for ``pvcctl vm logs`` and ``vm
dumpxml``: the tail of its serial console (bounded) and the domain XML the node defined.

Both live outside the VM's own subtree (``/consoles/<vm>``, ``/domainxml/<vm>``), so the
primary's cache of every VM never holds them and a console update wakes no controller; the
node that removes a deleted VM's domain removes them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from kazoo.exceptions import NoNodeError

from schemas import utcnow
from zkstore import paths
from zkstore.codec import decode, encode
from zkstore.errors import raise_if_refused
from zkstore.store import Store

CONSOLES = "/consoles"
DOMAIN_XML = "/domainxml"

_REMEMBERED = 100_000
"""Records a writer remembers having written (a node holds a few hundred VMs)."""

CONSOLE_LIMIT = 64 * 1024
"""The bytes of console output kept per VM: the newest ones."""

BATCH_BYTES = 512 * 1024
"""The most bytes of records ``write_many`` puts in one transaction (ZooKeeper refuses a
request over about 1 MB)."""


@dataclass(frozen=True)
class Output:
    """One record to write: a console tail or a domain XML of ``vm``."""

    vm: str
    relative: str
    body: bytes


def console_output(vm: str, node: str, data: bytes, end: int) -> Output:
    data = data[-CONSOLE_LIMIT:]
    body = encode(
        {"node": node, "end": end, "at": utcnow(), "data": base64.b64encode(data).decode()}
    )
    return Output(vm, f"{CONSOLES}/{vm}", body)


def domain_xml_output(vm: str, xml: str) -> Output:
    return Output(vm, f"{DOMAIN_XML}/{vm}", encode({"xml": xml, "at": utcnow()}))


@dataclass(frozen=True)
class ConsoleLog:
    data: bytes
    """The newest output, at most CONSOLE_LIMIT bytes."""
    end: int
    """Bytes the console wrote before the end of ``data`` (so ``end - len(data)`` were
    dropped): a follower asks for what came after the end it saw."""
    node: str
    at: str
    """When the node read it (RFC 3339)."""

    @property
    def start(self) -> int:
        return self.end - len(self.data)


class VMOutputs:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._written: set[str] = set()
        """Records this writer created or set: written with a set, not a create, next."""

    def write_console(self, vm: str, node: str, data: bytes, end: int) -> None:
        self._put(console_output(vm, node, data, end))

    def read_console(self, vm: str) -> ConsoleLog | None:
        raw = self._get(f"{CONSOLES}/{vm}")
        if not isinstance(raw, dict):
            return None
        try:
            data = base64.b64decode(str(raw.get("data", "")), validate=True)
            return ConsoleLog(
                data=data,
                end=int(raw.get("end", len(data))),
                node=str(raw.get("node", "")),
                at=str(raw.get("at", "")),
            )
        except (binascii.Error, TypeError, ValueError):
            return None

    def write_domain_xml(self, vm: str, xml: str) -> None:
        self._put(domain_xml_output(vm, xml))

    def read_domain_xml(self, vm: str) -> str | None:
        raw = self._get(f"{DOMAIN_XML}/{vm}")
        return str(raw["xml"]) if isinstance(raw, dict) and "xml" in raw else None

    def write_many(self, outputs: Sequence[Output]) -> None:
        """Write ``outputs`` (a node's look at its consoles and the domains it defined since)
        in one transaction per BATCH_BYTES instead of one each: a converge starts several
        VMs a second per node, each with a console and an XML to publish (issue 16). When a
        transaction fails as a whole (a VM deleted meanwhile, a create/set guess wrong, the
        first record of its kind), each of its outputs is written alone, as
        ``write_console`` and ``write_domain_xml`` do: nothing is dropped but the records of
        a deleted VM."""
        batch: list[Output] = []
        size = 0
        for output in outputs:
            if batch and size + len(output.body) > BATCH_BYTES:
                self._put_together(batch)
                batch, size = [], 0
            batch.append(output)
            size += len(output.body)
        if batch:
            self._put_together(batch)

    def _put_together(self, batch: list[Output]) -> None:
        if len(batch) == 1:
            self._put(batch[0])
            return
        client = self._store.client
        txn = client.transaction()
        paths_written = []
        for output in batch:
            path = self._store.path(output.relative)
            txn.check(self._store.path(paths.resource("vms", output.vm)), -1)
            if self._was_written(path):
                txn.set_data(path, output.body)
            else:
                txn.create(path, output.body)
            paths_written.append(path)
        results = txn.commit()
        if not any(isinstance(r, Exception) for r in results):
            for path in paths_written:
                self._remember(path)
            return
        raise_if_refused(results)
        for output in batch:
            self._put(output)

    def _was_written(self, path: str) -> bool:
        with self._lock:
            return path in self._written

    def forget(self, vm: str) -> None:
        """Drop both (the VM is deleted)."""
        for path in (f"{CONSOLES}/{vm}", f"{DOMAIN_XML}/{vm}"):
            with self._lock:
                self._written.discard(self._store.path(path))
            with contextlib.suppress(NoNodeError):
                self._store.client.delete(self._store.path(path))

    def _put(self, output: Output) -> None:
        """Write ``output`` only while its VM exists (one transaction with a check of it), so a
        write racing the VM's deletion leaves nothing behind. One request when the guess is
        right: a record this writer has not written is created, one it has is set (a look
        and a parent check before every write made it three, twice per VM started)."""
        client = self._store.client
        path = self._store.path(output.relative)
        spec = self._store.path(paths.resource("vms", output.vm))
        body = output.body
        create = not self._was_written(path)
        for _ in range(4):
            txn = client.transaction()
            txn.check(spec, -1)
            if create:
                txn.create(path, body)
            else:
                txn.set_data(path, body)
            results = txn.commit()
            if not any(isinstance(r, Exception) for r in results):
                self._remember(path)
                return
            raise_if_refused(results)
            if isinstance(results[0], NoNodeError):
                return  # the VM is deleted: nothing to say of it
            if create and isinstance(results[1], NoNodeError):
                client.ensure_path(path.rsplit("/", 1)[0])  # the first record of its kind
            else:
                # Created (or deleted) by another writer since: the other verb.
                create = isinstance(results[1], NoNodeError)

    def _remember(self, path: str) -> None:
        with self._lock:
            if len(self._written) >= _REMEMBERED:
                self._written.clear()  # a wrong guess only costs a request
            self._written.add(path)

    def _get(self, relative: str) -> object:
        try:
            data, _ = self._store.client.get(self._store.path(relative))
        except NoNodeError:
            return None
        try:
            return decode(data)
        except ValueError:
            return None
