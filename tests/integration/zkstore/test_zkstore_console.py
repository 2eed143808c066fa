"""A VM's console output and domain XML in the store (zkstore/console.py): bounded, written
only while the VM exists, removed with it."""

from __future__ import annotations

from schemas import parse_resource
from zkstore import Store
from zkstore.console import CONSOLE_LIMIT, VMOutputs


def add_vm(store: Store, name: str) -> None:
    store.apply(
        parse_resource(
            {
                "apiVersion": "pvc/v1",
                "kind": "VirtualMachine",
                "metadata": {"name": name},
                "spec": {"memory": "64Mi"},
            }
        )
    )


def test_console_keeps_the_newest_bytes_and_where_they_end(store: Store) -> None:
    add_vm(store, "web")
    outputs = VMOutputs(store)
    assert outputs.read_console("web") is None
    data = bytes(range(256)) * (CONSOLE_LIMIT // 256 + 10)
    outputs.write_console("web", "node1", data, len(data) + 7)
    log = outputs.read_console("web")
    assert log is not None
    assert log.data == data[-CONSOLE_LIMIT:]
    assert (log.end, log.start, log.node) == (len(data) + 7, len(data) + 7 - CONSOLE_LIMIT, "node1")
    outputs.write_console("web", "node2", b"again\n", 6)  # another node: replaced
    again = outputs.read_console("web")
    assert again is not None and (again.data, again.node) == (b"again\n", "node2")


def test_domain_xml_round_trips(store: Store) -> None:
    add_vm(store, "web")
    outputs = VMOutputs(store)
    assert outputs.read_domain_xml("web") is None
    outputs.write_domain_xml("web", "<domain><name>web</name></domain>")
    assert outputs.read_domain_xml("web") == "<domain><name>web</name></domain>"


def test_nothing_is_written_for_a_vm_that_does_not_exist(store: Store) -> None:
    outputs = VMOutputs(store)
    outputs.write_console("gone", "node1", b"late output\n", 12)
    outputs.write_domain_xml("gone", "<domain/>")
    assert outputs.read_console("gone") is None
    assert outputs.read_domain_xml("gone") is None


def test_forget_removes_both(store: Store) -> None:
    add_vm(store, "web")
    outputs = VMOutputs(store)
    outputs.write_console("web", "node1", b"x", 1)
    outputs.write_domain_xml("web", "<domain/>")
    outputs.forget("web")
    outputs.forget("web")  # twice: nothing to remove is no error
    assert outputs.read_console("web") is None
    assert outputs.read_domain_xml("web") is None
