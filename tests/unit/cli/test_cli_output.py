"""Watch rows and event tables render one line per item, as scripts expect."""

from __future__ import annotations

import io
import json

import yaml
from rich.console import Console

from cli.output import Format, parse_format, render_document, render_events, watch_row

VM = {
    "metadata": {"name": "web1", "creationTimestamp": "2020-01-01T00:00:00.000000Z"},
    "spec": {"vcpus": 2, "memory": "1Gi"},
    "status": {"phase": "Running", "node": "n1"},
}


def test_watch_rows() -> None:
    assert watch_row("VirtualMachine", "ADDED", VM, Format("name")) == "ADDED virtualmachine/web1"
    assert watch_row("VirtualMachine", "MODIFIED", VM, Format("table")).split()[:4] == [
        "MODIFIED",
        "web1",
        "Running",
        "n1",
    ]
    deleted = json.loads(watch_row("VirtualMachine", "DELETED", VM, Format("json")))
    assert deleted["type"] == "DELETED"


def test_event_table() -> None:
    out = io.StringIO()
    event = {
        "involvedObject": {"kind": "VirtualMachine", "name": "web1"},
        "reason": "RestartRequested",
        "message": "m",
        "type": "Normal",
        "timestamp": "2020-01-01T00:00:00.000000Z",
    }
    render_events([event], Console(file=out, width=200))
    header, row = out.getvalue().splitlines()
    assert header.split() == ["AGE", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert row.split()[1:] == ["Normal", "RestartRequested", "virtualmachine/web1", "m"]


def test_json_and_yaml_are_the_data_byte_for_byte() -> None:
    """A MAC holds ':ab:' (an emoji code to rich) and labels may hold '[prod]' (markup)."""
    vm = {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "web1", "labels": {"env": "[prod]"}, "annotations": {"a": ":smile:"}},
        "spec": {"memory": "1Gi", "nics": [{"network": "lan", "mac": "52:54:00:ab:cd:ef"}]},
    }
    for fmt, load in (("json", json.loads), ("yaml", yaml.safe_load)):
        buffer = io.StringIO()
        render_document(vm, parse_format(fmt), Console(file=buffer, width=80))
        assert load(buffer.getvalue()) == vm, buffer.getvalue()
        assert "52:54:00:ab:cd:ef" in buffer.getvalue()


def test_watch_rows_through_a_template_or_columns() -> None:
    template = parse_format("jsonpath={.metadata.name} on {.status.node}")
    assert watch_row("VirtualMachine", "ADDED", VM, template) == "web1 on n1"
    columns = parse_format("custom-columns=N:.metadata.name,C:.spec.vcpus")
    assert watch_row("VirtualMachine", "ADDED", VM, columns).split() == ["ADDED", "web1", "2"]
