"""The ACL map (zkstore/acl.py), the zookeeperAuth/zookeeperTls settings and the secret split."""

from __future__ import annotations

from pathlib import Path

import pytest
from kazoo.security import Permissions

from api.config import SettingsError, load_settings
from controllers.config import ConfigError, load_config
from schemas import Node, StoragePool
from zkstore.acl import ROLES, AclPolicy, digest_id, path_kind
from zkstore.connection import ZookeeperAuth, ZookeeperTls
from zkstore.secrets import reveal_into, split_secrets

ROOT = "/pvc"
POLICY = AclPolicy(ROOT, {role: digest_id(role, f"pw-{role}") for role in ROLES})


def perms(path: str, role: str) -> int:
    wanted = digest_id(role, f"pw-{role}")
    return sum(a.perms for a in POLICY.acl_for(path) if a.id.id == wanted)


@pytest.mark.parametrize(
    ("relative", "kind"),
    [
        ("", "root"),
        ("/resources/vms", "kind"),
        ("/resources/vms/web", "object"),
        ("/resources/vms/web/status", "status"),
        ("/resources/nodes/n1/status", "status"),
        ("/resources/vms/web/placement", "placement"),
        ("/index/nodes", "index-nodes"),
        ("/index/nodes/n1", "index-node"),
        ("/index/nodes/n1/web", "index-entry"),
        ("/leases/primary/lock-0001", "other"),
        ("/fencing/n1", "other"),
        ("/secrets/nodes/n1", "secret"),
        ("/secrets/storagepools/ceph", "pool-secret"),
        ("/identities", "identities"),
        ("/requests", "requests"),
        ("/requests/req-0000000001", "request"),
    ],
)
def test_path_kinds(relative: str, kind: str) -> None:
    assert path_kind(relative) == kind


def test_api_reads_all_but_secrets_and_writes_no_controller_state() -> None:
    R, W, C = Permissions.READ, Permissions.WRITE, Permissions.CREATE
    assert perms("/pvc/resources/vms/web", "api") & W
    assert perms("/pvc/resources/vms", "api") & C
    for owned in (
        "/pvc/resources/vms/web/status",
        "/pvc/resources/vms/web/placement",
        "/pvc/index/nodes",
        "/pvc/index/nodes/n1",
        "/pvc/index/nodes/n1/web",
        "/pvc/holders/web",
        "/pvc/disks/web/root",
        "/pvc/requests/req-0000000001",  # the primary writes its outcome
        "/pvc/leases/nodes/n1",
        "/pvc/leases/primary/x",
        "/pvc/fencing/n1",
        "/pvc/epoch",
        "/pvc/schema",
    ):
        assert perms(owned, "api") == R, owned
    assert perms("/pvc/leases", "api") == R  # no election or lease znode of its own
    # Nor a status or placement under an object (it asks the primary: zkstore/requests.py).
    assert perms("/pvc/resources/vms/web", "api") == R | W
    assert perms("/pvc/requests", "api") == R | C | Permissions.DELETE  # its requests
    assert perms("/pvc/secrets/nodes/n1", "api") == Permissions.WRITE  # set, never read
    assert not perms("/pvc/secrets/nodes/n1", "node") & R
    assert perms("/pvc/secrets/nodes/n1", "coordinator") & R
    assert perms("/pvc/secrets/storagepools/ceph", "node") & R  # nodes put it in libvirt
    assert perms("/pvc/secrets/storagepools/ceph", "api") == Permissions.WRITE
    # Only admin may change ACLs; nobody unauthenticated appears anywhere.
    for path in ("/pvc", "/pvc/resources/vms/web", "/pvc/secrets/nodes/n1"):
        assert all(a.id.scheme == "digest" for a in POLICY.acl_for(path))
        assert perms(path, "admin") == Permissions.ALL
        assert not any(perms(path, r) & Permissions.ADMIN for r in ("coordinator", "node", "api"))


def test_a_policy_needs_every_identity() -> None:
    with pytest.raises(ValueError, match="api"):
        AclPolicy(ROOT, {"admin": "a:x", "coordinator": "c:x", "node": "n:x"})


def test_zookeeper_auth_settings(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    auth = ZookeeperAuth.model_validate({"user": "api", "passwordFile": str(secret)})
    assert auth.identity().auth_data == [("digest", "api:s3cret")]
    with pytest.raises(ValueError, match="exactly one"):
        ZookeeperAuth.model_validate({"user": "api"})
    with pytest.raises(ValueError, match="user must be one of"):
        ZookeeperAuth.model_validate({"user": "root", "password": "x"})
    with pytest.raises(ValueError, match="both 'cert' and 'key'"):
        ZookeeperTls.model_validate({"ca": "/ca.pem", "cert": "/c.pem"})
    tls = ZookeeperTls.model_validate({"ca": "/ca.pem", "cert": "/c.pem", "key": "/k.pem"})
    assert tls.kazoo_args()["use_ssl"] is True


def test_daemon_and_api_configs_name_an_unreadable_password_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    node = tmp_path / "pvcnoded.yaml"
    node.write_text(f"zookeeperAuth: {{user: node, passwordFile: {missing}}}\n")
    with pytest.raises(ConfigError, match=f"{missing}: cannot read"):
        load_config(node)
    node.write_text("coordinator: true\nzookeeperAuth: {user: node, password: p}\n")
    with pytest.raises(ConfigError, match="a coordinator connects as 'coordinator'"):
        load_config(node)
    api = tmp_path / "pvcapid.yaml"
    api.write_text(f"zookeeperAuth: {{user: api, passwordFile: {missing}}}\n")
    with pytest.raises(SettingsError, match=f"{missing}: cannot read"):
        load_settings(api)
    api.write_text("zookeeperTls: {ca: /etc/pvc/ca.pem}\nzookeeperAuth: {user: api, password: p}\n")
    settings = load_settings(api)
    assert settings.zookeeper_tls is not None and settings.zookeeper_auth is not None


def test_secrets_leave_the_spec_and_come_back() -> None:
    node = Node.model_validate(
        {
            "metadata": {"name": "n1"},
            "spec": {"fence": {"agent": "ipmi", "address": "10.0.0.9", "password": "hunter2"}},
        }
    )
    stored = node.stored()
    found = split_secrets(Node, stored["spec"])
    assert found == {"fence.password": "hunter2"}
    assert stored["spec"]["fence"]["password"] == "********"
    assert split_secrets(Node, stored["spec"]) == {}  # a mask is no value
    reveal_into(Node, stored, found)
    assert Node.model_validate(stored).spec.fence.password.get_secret_value() == "hunter2"  # type: ignore[union-attr]
    pool = {"type": "rbd", "rbd": {"monitors": ["m:6789"], "pool": "p", "user": "u"}}
    pool["rbd"]["key"] = "AQBvaBFZAAAAABAA9VHgwCg3rWn8fMaX8KL01A=="  # type: ignore[index]
    spec = StoragePool.model_validate({"metadata": {"name": "c"}, "spec": pool}).stored()["spec"]
    assert split_secrets(StoragePool, spec) == {"rbd.key": pool["rbd"]["key"]}  # type: ignore[index]
