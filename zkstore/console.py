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
        data = data[-CONSOLE_LIMIT:]
        body = encode(
            {
                "node": node,
                "end": end,
                "at": utcnow(),
                "data": base64.b64encode(data).decode(),
            }
        )
        self._put(vm, f"{CONSOLES}/{vm}", body)

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
        self._put(vm, f"{DOMAIN_XML}/{vm}", encode({"xml": xml, "at": utcnow()}))

    def read_domain_xml(self, vm: str) -> str | None:
        raw = self._get(f"{DOMAIN_XML}/{vm}")
        return str(raw["xml"]) if isinstance(raw, dict) and "xml" in raw else None

    def forget(self, vm: str) -> None:
        """Drop both (the VM is deleted)."""
        for path in (f"{CONSOLES}/{vm}", f"{DOMAIN_XML}/{vm}"):
            with self._lock:
                self._written.discard(self._store.path(path))
            with contextlib.suppress(NoNodeError):
                self._store.client.delete(self._store.path(path))

    def _put(self, vm: str, relative: str, body: bytes) -> None:
        """Write ``body`` only while the VM exists (one transaction with a check of it), so a
        write racing the VM's deletion leaves nothing behind. One request when the guess is
        right: a record this writer has not written is created, one it has is set (a look
        and a parent check before every write made it three, twice per VM started)."""
        client = self._store.client
        path = self._store.path(relative)
        spec = self._store.path(paths.resource("vms", vm))
        create = path not in self._written
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
