"""ZooKeeper identities and ACLs against a real server: what the API, a node and an anonymous
client may do on a secured root, fence credentials only coordinators read, and the
migration of a root made before ACLs (``pvc-secure-store``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError
from kazoo.security import ACL

from controllers.requests import RequestController
from controllers.secure_store import main as secure_main
from localcluster.zookeeper import ZooKeeperServer
from schemas import (
    Node,
    Placement,
    StoragePool,
    VirtualMachine,
    VirtualMachineStatus,
    VMPhase,
    parse_resource,
)
from schemas.node import NodeStatus
from zkstore import Store, Unavailable, paths
from zkstore.acl import ROLES, AclPolicy, Identity
from zkstore.codec import decode, encode
from zkstore.requests import PLACE, REMOVE, ask
from zkstore.secrets import SecretUnreadable

PASSWORDS = {role: f"{role}-{uuid.uuid4().hex}" for role in ROLES}
FENCE = {"agent": "ipmi", "address": "10.0.0.9", "user": "root", "password": "hunter2"}


def secure_config(tmp: Path, hosts: str, root: str) -> Path:
    for role, password in PASSWORDS.items():
        (tmp / role).write_text(password + "\n")
    config = tmp / f"secure-{root.strip('/')}.yaml"
    identities = {role: {"passwordFile": str(tmp / role)} for role in ROLES}
    config.write_text(yaml.safe_dump({"zookeeper": hosts, "root": root, "identities": identities}))
    return config


def client_as(hosts: str, role: str | None) -> KazooClient:
    auth = Identity(role, PASSWORDS[role]).auth_data if role else None
    client = KazooClient(hosts=hosts, timeout=6.0, auth_data=auth)
    client.start(timeout=15)
    return client


def store_as(hosts: str, root: str, role: str) -> Store:
    store = Store(hosts, root, timeout=6.0, auth=Identity(role, PASSWORDS[role]))
    store.start()
    return store


def node_with_password(name: str, password: str = "hunter2") -> Node:
    obj = parse_resource(
        {
            "apiVersion": "pvc/v1",
            "kind": "Node",
            "metadata": {"name": name},
            "spec": {"fence": {**FENCE, "password": password}},
        }
    )
    assert isinstance(obj, Node)
    return obj


RBD_KEY = "AQBvaBFZAAAAABAA9VHgwCg3rWn8fMaX8KL01A=="


def rbd_pool(name: str, monitor: str = "10.0.0.1:6789") -> StoragePool:
    """An rbd StoragePool with the key RBD_KEY."""
    rbd = {"monitors": [monitor], "pool": "rbd", "user": "pvc", "key": RBD_KEY}
    return StoragePool.model_validate(
        {"kind": "StoragePool", "metadata": {"name": name}, "spec": {"type": "rbd", "rbd": rbd}}
    )


def fence_password(node: Node) -> str | None:
    secret = node.spec.fence.password
    return secret.get_secret_value() if secret is not None else None


@pytest.fixture(scope="module")
def secured(
    zookeeper: ZooKeeperServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A root secured by pvc-secure-store, with a store per daemon identity and raw clients."""
    root = f"/acl-{uuid.uuid4().hex[:10]}"
    config = secure_config(tmp_path_factory.mktemp("acl"), zookeeper.hosts, root)
    assert secure_main(["--config", str(config)]) == 0
    stores = {
        role: store_as(zookeeper.hosts, root, role) for role in ("coordinator", "node", "api")
    }
    clients = {role: client_as(zookeeper.hosts, role) for role in ("api", "node", None)}
    yield {"root": root, "hosts": zookeeper.hosts, "stores": stores, "clients": clients}
    for store in stores.values():
        store.stop()
    for client in clients.values():
        client.stop()
        client.close()


def test_api_identity_writes_specs_but_no_status_lease_fence_record_or_epoch(
    secured: dict[str, Any],
) -> None:
    coordinator: Store = secured["stores"]["coordinator"]
    api: Store = secured["stores"]["api"]
    raw: KazooClient = secured["clients"]["api"]
    vm = parse_resource(
        {
            "apiVersion": "pvc/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": "web"},
            "spec": {"memory": "1Gi"},
        }
    )
    api.create(vm)  # the API creates and writes specs
    coordinator.write_status(VirtualMachine, "web", VirtualMachineStatus(phase=VMPhase.RUNNING))
    coordinator.write_placement("web", Placement(node="n1", epoch=0), epoch=None)
    coordinator.client.create(coordinator.path(paths.fence_record("n1")), b"{}")
    coordinator.client.create(coordinator.path(paths.node_lease("n1")), b"{}", ephemeral=True)

    got = api.get(VirtualMachine, "web")
    got.spec.vcpus = 4
    assert api.update(got).spec.vcpus == 4
    assert got.status is not None and got.status.phase == VMPhase.RUNNING  # reads status

    with pytest.raises(NoAuthError):
        api.write_status(VirtualMachine, "web", VirtualMachineStatus(phase=VMPhase.STOPPED))
    with pytest.raises(NoAuthError):
        api.write_placement("web", Placement(node="n2", epoch=0), epoch=None)
    for relative in (
        paths.status("vms", "web"),
        paths.placement("web"),
        paths.node_index_entry("n1", "web"),
        paths.fence_record("n1"),
        paths.node_lease("n1"),
        paths.EPOCH,
    ):
        with pytest.raises(NoAuthError):
            raw.set(api.path(relative), b"{}")
    # Nor create or delete a status, a placement or a node-index entry (nor an index folder).
    api.create(parse_resource({**vm.wire(), "metadata": {"name": "web2"}}))
    for relative in (
        paths.status("vms", "web"),
        paths.placement("web"),
        paths.node_index_entry("n1", "web"),
    ):
        with pytest.raises(NoAuthError):
            raw.delete(api.path(relative))
    for relative in (
        paths.status("vms", "web2"),
        paths.placement("web2"),
        paths.node_index_entry("n1", "web2"),
        paths.node_index("n9"),
    ):
        with pytest.raises(NoAuthError):
            raw.create(api.path(relative), b"{}")
    assert coordinator.read_placement("web") == Placement(node="n1", epoch=0)
    assert coordinator.node_index_entry("n1", "web") is not None
    with pytest.raises(NoAuthError):  # no election znode, no lease of its own
        raw.create(api.path(paths.LEASE_PRIMARY + "/x"), b"", makepath=True)
    with pytest.raises(NoAuthError):
        raw.create(api.path(paths.node_lease("n9")), b"{}")
    assert coordinator.read_status(VirtualMachine, "web")["phase"] == "Running"


def test_an_anonymous_client_reads_and_writes_nothing_under_the_root(
    secured: dict[str, Any],
) -> None:
    anonymous: KazooClient = secured["clients"][None]
    root = secured["root"]
    for call in (
        lambda: anonymous.get(root),
        lambda: anonymous.get_children(root),
        lambda: anonymous.get(root + paths.resource("vms", "web")),
        lambda: anonymous.get(root + paths.IDENTITIES),
        lambda: anonymous.create(root + "/mine", b""),
        lambda: anonymous.create(root + paths.resource("vms", "evil"), b"{}"),
        lambda: anonymous.set(root + paths.EPOCH, b"{}"),
    ):
        with pytest.raises(NoAuthError):
            call()


def test_fence_passwords_are_set_by_the_api_and_read_by_coordinators_only(
    secured: dict[str, Any],
) -> None:
    coordinator: Store = secured["stores"]["coordinator"]
    node: Store = secured["stores"]["node"]
    api: Store = secured["stores"]["api"]
    secret = api.path(paths.secret("nodes", "hv1"))

    assert api.apply(node_with_password("hv1"))[1] == "created"
    read_back = api.get(Node, "hv1")
    assert read_back.wire()["spec"]["fence"]["password"] == "********"
    assert fence_password(coordinator.reveal(coordinator.get(Node, "hv1"))) == "hunter2"
    # Neither the API nor a non-coordinator node can read it, raw or through the store.
    for client in (secured["clients"]["api"], secured["clients"]["node"]):
        with pytest.raises(NoAuthError):
            client.get(secret)
    # Nor does either get the mask in its place: reveal says it may not read it.
    for store in (api, node):
        with pytest.raises(SecretUnreadable):
            store.reveal(read_back)

    # A read-back apply keeps it; a new value replaces it, though the API never reads it.
    assert api.apply(read_back)[1] == "unchanged"
    assert fence_password(coordinator.reveal(coordinator.get(Node, "hv1"))) == "hunter2"
    assert api.apply(node_with_password("hv1", "s3cond"))[1] == "configured"
    assert fence_password(coordinator.reveal(coordinator.get(Node, "hv1"))) == "s3cond"

    api.delete(Node, "hv1")
    assert api.client.exists(secret) is None

    # A password given to a Node registered without one (as its daemon registers it).
    bare = node_with_password("hv2")
    bare.spec.fence.password = None
    api.create(bare)
    api.update(node_with_password("hv2", "late"))
    assert api.get(Node, "hv2").wire()["spec"]["fence"]["password"] == "********"
    assert fence_password(coordinator.reveal(coordinator.get(Node, "hv2"))) == "late"


def test_a_node_registers_its_fence_password_and_reads_pool_keys(secured: dict[str, Any]) -> None:
    coordinator: Store = secured["stores"]["coordinator"]
    node: Store = secured["stores"]["node"]
    api: Store = secured["stores"]["api"]
    # A daemon registers its Node with the fence agent of its config: it may set, not read.
    node.create(node_with_password("hv9", "from-config"))
    with pytest.raises(SecretUnreadable):
        node.reveal(node.get(Node, "hv9"))
    assert fence_password(coordinator.reveal(coordinator.get(Node, "hv9"))) == "from-config"
    # A pool's cephx key: set by the API, read by every node (it goes into their libvirt).
    api.create(rbd_pool("ceph"))
    assert api.get(StoragePool, "ceph").wire()["spec"]["rbd"]["key"] == "********"
    revealed = node.reveal(node.get(StoragePool, "ceph")).spec.rbd
    assert revealed is not None and revealed.key.get_secret_value() == RBD_KEY
    with pytest.raises(NoAuthError):
        secured["clients"]["api"].get(api.path(paths.secret("storagepools", "ceph")))


def test_migrating_an_open_store_secures_it_and_moves_secrets_out_of_specs(
    zookeeper: ZooKeeperServer, tmp_path: Path
) -> None:
    root = f"/old-{uuid.uuid4().hex[:10]}"
    old = Store(zookeeper.hosts, root, timeout=6.0)  # anonymous: as before ACLs
    old.start()
    try:
        old.create(
            parse_resource({"apiVersion": "pvc/v1", "kind": "Node", "metadata": {"name": "hv1"}})
        )
        # What an older version stored: the password inside the spec.
        spec_path = old.path(paths.resource("nodes", "hv1"))
        raw = decode(old.client.get(spec_path)[0])
        raw["spec"] = {"fence": FENCE}
        old.client.set(spec_path, encode(raw))
        old.write_status(Node, "hv1", NodeStatus())
    finally:
        old.stop()
    config = secure_config(tmp_path, zookeeper.hosts, root)
    assert secure_main(["--config", str(config)]) == 0
    assert secure_main(["--config", str(config)]) == 0  # idempotent

    anonymous = client_as(zookeeper.hosts, None)
    coordinator = store_as(zookeeper.hosts, root, "coordinator")
    try:
        with pytest.raises(NoAuthError):
            anonymous.get(spec_path)
        spec = decode(coordinator.client.get(spec_path)[0])["spec"]
        assert spec["fence"]["password"] == "********"
        assert fence_password(coordinator.reveal(coordinator.get(Node, "hv1"))) == "hunter2"
        # Every znode, old ones included, has the policy's ACL.
        digests = {r: Identity(r, p).digest for r, p in PASSWORDS.items()}
        policy = AclPolicy(root, digests)
        status = coordinator.path(paths.status("nodes", "hv1"))

        # (ZooKeeper shows a digest id as ``user:x``: compare users and permissions.)
        def shown(acl: list[ACL]) -> list[tuple[int, str]]:
            return [(a.perms, a.id.id.split(":")[0]) for a in acl]

        for path in (coordinator.root, spec_path, status):
            assert shown(coordinator.client.get_acls(path)[0]) == shown(policy.acl_for(path))
    finally:
        coordinator.stop()
        anonymous.stop()
        anonymous.close()


def test_an_identity_on_a_root_not_secured_is_told_what_to_run(
    zookeeper: ZooKeeperServer,
) -> None:
    store = Store(
        zookeeper.hosts, f"/plain-{uuid.uuid4().hex[:8]}", timeout=6.0, auth=Identity("api", "x")
    )
    try:
        with pytest.raises(Unavailable, match="pvc-secure-store"):
            store.start(timeout=1.0)  # waits that long for a pvc-secure-store under way
    finally:
        store.stop()


def test_secure_store_refuses_an_incomplete_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "secure.yaml"
    config.write_text("identities: {admin: {password: a}, node: {password: n}}\n")
    assert secure_main(["--config", str(config)]) == 2
    assert "identities.coordinator: Field required" in capsys.readouterr().err


def test_the_api_asks_the_primary_which_writes_the_placement_with_its_identity(
    secured: dict[str, Any],
) -> None:
    coordinator: Store = secured["stores"]["coordinator"]
    api: Store = secured["stores"]["api"]
    for name in ("n1", "n2"):
        api.create(
            parse_resource({"apiVersion": "pvc/v1", "kind": "Node", "metadata": {"name": name}})
        )
    api.create(
        parse_resource(
            {
                "apiVersion": "pvc/v1",
                "kind": "VirtualMachine",
                "metadata": {"name": "db"},
                "spec": {"memory": "1Gi"},
            }
        )
    )
    coordinator.write_placement("db", Placement(node="n1", epoch=0), epoch=None)
    coordinator.write_status(VirtualMachine, "db", VirtualMachineStatus(phase=VMPhase.STOPPED))
    primary = RequestController(coordinator, "n1", coordinator.read_epoch())
    primary.start()
    try:
        place = {"node": "n2", "reason": "migrate", "event": "MigrateRequested", "message": "m"}
        ask(api, PLACE, "VirtualMachine", "db", place, requester="ops", timeout=10)
        placement = api.read_placement("db")
        assert placement is not None and placement.node == "n2"
        assert api.node_index_entry("n2", "db") is not None
        # The API may not forge a request's outcome: only the primary writes one.
        key = api.client.create(
            api.path(paths.REQUEST_PREFIX), b"{}", ephemeral=True, sequence=True
        )
        with pytest.raises(NoAuthError):
            secured["clients"]["api"].set(key, b"{}")
        api.client.delete(key)
        # Removing the VM with its status and placement: the primary's, through a request.
        ask(api, REMOVE, "VirtualMachine", "db", {}, requester="ops", timeout=10)
        assert not api.exists(VirtualMachine, "db")
        assert api.node_index_entry("n2", "db") is None
    finally:
        primary.stop()
