"""``pvcctl cluster backup``, ``pvcctl cluster restore`` and ``pvcctl vm rename``: the
cluster's objects saved and applied again, and a stopped VM renamed (docs/backup.md)."""

from __future__ import annotations

from typing import Any

import click

from cli.client import API
from cli.common import Context, told
from cli.completion import complete_vm_names
from cli.errors import InputError

_HEADER = """\
# PVC cluster backup from {server}, schema version {schema}: {count} objects, each one's
# apiVersion, kind, metadata (name, labels, annotations) and spec; no status.
# Secrets (a Node's spec.fence.password, a StoragePool's spec.rbd.key) are masked as
# '********': a restore keeps the secret the cluster has stored for that object, and
# refuses the restore (nothing written) when it has none: write the secret in its place.
# Restore with: pvcctl cluster restore FILE
"""


@click.command()
@click.pass_obj
def backup(ctx: Context) -> None:
    """Print every object's spec (no status) as YAML documents, in the order a restore
    applies them: Cluster, StoragePools, Networks, Nodes, VirtualMachines. Secrets are
    masked. Volumes' contents are not in it (back up the pools themselves)."""
    import yaml  # imported by the commands that use it: see cli.completion

    answer = ctx.client.get(f"{API}/backup")
    items = answer.get("items") or []
    click.echo(
        _HEADER.format(
            server=ctx.client.server,
            schema=(answer.get("metadata") or {}).get("schemaVersion", "?"),
            count=len(items),
        ),
        nl=False,
    )
    click.echo(yaml.safe_dump_all(items, sort_keys=False, explicit_start=True), nl=False)


def read_documents(path: str) -> list[dict[str, Any]]:
    """The objects in FILE (``-``: stdin): YAML or JSON documents; a List stands for its
    items. Checked by the server, which names the document of any error."""
    import yaml

    from cli.manifests import manifest_files

    docs: list[dict[str, Any]] = []
    for source, text in manifest_files((path,)):
        try:
            loaded = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            raise InputError(f"{source}: not YAML or JSON: {exc}") from None
        for doc in loaded:
            if not isinstance(doc, dict):
                raise InputError(f"{source}: a document is not an object: {doc!r:.60}")
            if doc.get("kind") == "List" and isinstance(doc.get("items"), list):
                docs += doc["items"]
            else:
                docs.append(doc)
    if not docs:
        raise InputError(f"{path}: no objects in it")
    return docs


@click.command()
@click.argument("file", metavar="FILE")
@click.option(
    "--merge",
    is_flag=True,
    help="restore into a cluster that has VMs already: create what is missing and update "
    "what differs (deleting nothing). Without it a cluster with any VM is refused.",
)
@click.pass_obj
def restore(ctx: Context, file: str, merge: bool) -> None:
    """Create (or update) every object in FILE, a `pvcctl cluster backup` (or any
    manifests; - for stdin), in restore order. Every object is checked first; on any
    refusal nothing is written. Objects not in FILE are left alone."""
    docs = read_documents(file)
    params = {"merge": "true"} if merge else {}
    result = ctx.client.request("POST", f"{API}/restore", json=docs, params=params)
    for item in result["items"]:
        told(item["kind"].lower(), item["name"], f"{item['outcome']} (restore)")


@click.command()
@click.argument("name", shell_complete=complete_vm_names)
@click.argument("new_name", metavar="NEW_NAME")
@click.pass_obj
def rename(ctx: Context, name: str, new_name: str) -> None:
    """Rename a stopped VM (runStrategy Halted, phase Stopped) to NEW_NAME.

    Its spec, status, placement, events and disk records move to the new name in one
    transaction. Its volumes stay attached under their own names: no volume file is
    renamed. NICs without a mac keep the MAC the old name gave them (written into the
    spec). Refused (exit 1, with the reason) while the VM runs or moves, or when NEW_NAME
    is taken; NEW_NAME must be a DNS label (exit 2)."""
    ctx.client.request("POST", f"{API}/vms/{name}/rename", json={"newName": new_name})
    told("vm", name, f"renamed to {new_name}")
