"""Every ZooKeeper path the project uses, relative to the store's root (DESIGN.md section 3)."""

from __future__ import annotations

SCHEMA = "/schema"
RESOURCES = "/resources"
INDEX_NODES = "/index/nodes"
LEASES_NODES = "/leases/nodes"
LEASE_PRIMARY = "/leases/primary"
LEASES_COORDINATORS = "/leases/coordinators"
EPOCH = "/epoch"
LOCKS = "/locks"
EVENTS = "/events"
HOLDERS = "/holders"
FENCING = "/fencing"
DISKS = "/disks"
VOLUME_DELETIONS = "/volume-deletions"
IDENTITIES = "/identities"
SECRETS = "/secrets"
REQUESTS = "/requests"
"""What the API asks the primary to carry out (zkstore/requests.py)."""
REQUEST_PREFIX = f"{REQUESTS}/req-"

STATUS = "status"
PLACEMENT = "placement"


def kind_root(plural: str) -> str:
    return f"{RESOURCES}/{plural}"


def resource(plural: str, name: str) -> str:
    return f"{RESOURCES}/{plural}/{name}"


def status(plural: str, name: str) -> str:
    return f"{resource(plural, name)}/{STATUS}"


def placement(vm: str) -> str:
    return f"{resource('vms', vm)}/{PLACEMENT}"


def node_index(node: str) -> str:
    return f"{INDEX_NODES}/{node}"


def node_index_entry(node: str, vm: str) -> str:
    return f"{INDEX_NODES}/{node}/{vm}"


def request(key: str) -> str:
    return f"{REQUESTS}/{key}"


def node_lease(node: str) -> str:
    return f"{LEASES_NODES}/{node}"


def lock(name: str) -> str:
    return f"{LOCKS}/{name}"


def holders(vm: str) -> str:
    """The nodes that may still hold ``vm``'s domain (the one-copy rule, docs/ha.md).

    Outside the VM's own subtree on purpose: it outlives a delete, so a VM created
    again under the same name waits for the node still removing the old domain."""
    return f"{HOLDERS}/{vm}"


def holder(vm: str, node: str) -> str:
    return f"{HOLDERS}/{vm}/{node}"


def fence_record(node: str) -> str:
    return f"{FENCING}/{node}"


def vm_disks(vm: str) -> str:
    """The create-once records of ``vm``'s disks (zkstore/disks.py). Outside the VM's own
    subtree, as its images are: both outlive a delete."""
    return f"{DISKS}/{vm}"


def disk_record(vm: str, disk: str) -> str:
    return f"{DISKS}/{vm}/{disk}"


def volume_deletion(vm: str) -> str:
    """Marks a deleted VM whose volumes are to go (``--delete-volumes``): the volume reaper's
    work list, so it never scans every record."""
    return f"{VOLUME_DELETIONS}/{vm}"


def secrets_kind(plural: str) -> str:
    return f"{SECRETS}/{plural}"


def secret(plural: str, name: str) -> str:
    """The secrets of one object (zkstore/secrets.py): a znode only their users may read."""
    return f"{SECRETS}/{plural}/{name}"
