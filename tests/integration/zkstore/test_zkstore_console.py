"""A VM's console output and domain XML in the store (zkstore/console.py): bounded, written
only while the VM exists, removed with it."""

from __future__ import annotations

from tests.helpers import apply_vm
from zkstore import Store
from zkstore.console import CONSOLE_LIMIT, VMOutputs, console_output, domain_xml_output


def test_console_keeps_the_newest_bytes_and_where_they_end(store: Store) -> None:
    apply_vm(store, "web")
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
    apply_vm(store, "web")
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
    apply_vm(store, "web")
    outputs = VMOutputs(store)
    outputs.write_console("web", "node1", b"x", 1)
    outputs.write_domain_xml("web", "<domain/>")
    outputs.forget("web")
    outputs.forget("web")  # twice: nothing to remove is no error
    assert outputs.read_console("web") is None
    assert outputs.read_domain_xml("web") is None


def test_two_nodes_writers_keep_writing_whoever_created_or_removed_the_record(
    store: Store,
) -> None:
    """A VM moves: its old node and its new one each guess whether the record exists (from
    what they wrote themselves) and write in one request when right; a wrong guess must
    still write, never fail or drop the output."""
    apply_vm(store, "web")
    old, new = VMOutputs(store), VMOutputs(store)
    old.write_console("web", "node1", b"one\n", 4)
    new.write_console("web", "node2", b"two\n", 4)  # guesses create: exists, so a set
    old.write_console("web", "node1", b"three\n", 6)
    assert (log := old.read_console("web")) is not None and log.data == b"three\n"
    new.forget("web")  # the record goes
    old.write_console("web", "node1", b"four\n", 5)  # guesses set: gone, so a create
    assert (log := new.read_console("web")) is not None and (log.data, log.node) == (
        b"four\n",
        "node1",
    )
    new.write_domain_xml("web", "<domain/>")
    old.write_domain_xml("web", "<domain>2</domain>")
    assert new.read_domain_xml("web") == "<domain>2</domain>"


def test_write_many_lands_a_looks_records_in_one_transaction(store: Store) -> None:
    apply_vm(store, "a")
    apply_vm(store, "b")
    outputs = VMOutputs(store)
    # The first record of each kind makes its parent znode (written alone).
    outputs.write_many([domain_xml_output("a", "<domain/>"), console_output("b", "n", b"", 0)])
    outputs.write_many(
        [
            domain_xml_output("a", "<domain>a</domain>"),
            console_output("a", "node1", b"a boots\n", 8),
            domain_xml_output("b", "<domain>b</domain>"),
        ]
    )
    assert outputs.read_domain_xml("a") == "<domain>a</domain>"
    assert outputs.read_domain_xml("b") == "<domain>b</domain>"
    assert (log := outputs.read_console("a")) is not None and log.data == b"a boots\n"
    zxids = {
        store.client.exists(store.path(p)).mzxid
        for p in ("/domainxml/a", "/consoles/a", "/domainxml/b")
    }
    assert len(zxids) == 1  # one write, not three


def test_write_many_writes_the_others_when_one_cannot_be(store: Store) -> None:
    """A VM deleted meanwhile, and a record another writer created (this writer guesses a
    create): the transaction fails whole, and each record is written alone; only the
    deleted VM's is dropped."""
    apply_vm(store, "a")
    apply_vm(store, "b")
    other, outputs = VMOutputs(store), VMOutputs(store)
    other.write_console("b", "node2", b"old\n", 4)
    outputs.write_many(
        [
            console_output("a", "node1", b"a\n", 2),
            domain_xml_output("gone", "<domain/>"),
            console_output("b", "node1", b"new\n", 4),
        ]
    )
    assert (log := outputs.read_console("a")) is not None and log.data == b"a\n"
    assert (log := outputs.read_console("b")) is not None and (log.data, log.node) == (
        b"new\n",
        "node1",
    )
    assert outputs.read_domain_xml("gone") is None
