"""Who may do what to which znode: the one map from a path's kind to its ACL.

Four ZooKeeper digest identities (docs/configuration.md, "ZooKeeper identities"):

- ``admin``: everything, everywhere (bootstrap, repair, tests); the only one with ADMIN.
- ``coordinator``: the pvcnoded of a coordinator host: what a daemon needs, and it alone
  reads fence credentials (the primary fences).
- ``node``: the pvcnoded of any other host: what a daemon needs; it reads no fence
  credentials but reads StoragePool keys (each node puts an rbd pool's key in its libvirt).
- ``api``: pvcapid: reads everything but secrets; creates and writes specs, metadata and
  annotations (the verbs), events, and secrets it can never read back; creates and deletes
  requests to the primary (zkstore/requests.py). It never creates, writes or deletes a
  status, a placement, a node-index entry, a lease, a fence record, the epoch or an
  election znode: what needs those (migrate, unmigrate, move, removing an object with its
  status, a rename) it asks the primary for, which does it with its identity and epoch.

Nobody else (an unauthenticated client) reads or writes anything under the root. Every
znode gets its ACL where it is created (``AclClient`` asks ``AclPolicy.acl_for``), and
``secure_tree`` puts the same ACLs on the znodes of a store made before them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kazoo.security import ACL, Id, Permissions, make_digest_acl_credential

from zkstore import paths

ADMIN = "admin"
COORDINATOR = "coordinator"
NODE = "node"
API = "api"
ROLES = (ADMIN, COORDINATOR, NODE, API)

R = Permissions.READ
W = Permissions.WRITE
C = Permissions.CREATE
D = Permissions.DELETE
RWCD = R | W | C | D

# The path kinds whose ACL differs from the daemons-own-it default: the API's rights on
# each (daemons, coordinator and node, get RWCD unless _NODE_RIGHTS says otherwise).
_API_RIGHTS: dict[str, int] = {
    "root": R,
    "identities": R,
    # /resources/<plural>: create objects, and delete one that has no status or placement
    # (one that has them goes through the primary: zkstore/requests.py).
    "kind": R | C | D,
    # The spec only: no C or D, so no status or placement created or deleted under it.
    "object": R | W,
    "status": R,
    "placement": R,
    "object-child": R,
    "index-nodes": R,
    "index-node": R,
    "index-entry": R,
    "events": R | C | D,  # records events and trims the log
    "event": R,
    "disk-record": R,
    "volume-deletions": R,
    "rename-dir": R,
    # Its own requests to the primary: created (ephemeral) and withdrawn or removed.
    "requests": R | C | D,
    "request": R,
    "secrets": R,  # names only: their znodes hold the values
    "secret-kind": R | C | D,
    "secret": W,  # an apply sets a secret it can never read back
    "other": R,
}
# Where the node identity gets less than RWCD (or, for a pool key, READ).
_NODE_RIGHTS: dict[str, int] = {
    "identities": R,
    "secrets": R,
    "secret-kind": R | C,  # a daemon registers its Node with the fence agent of its config
    "secret": W,
    "pool-secret": R | W,
    "requests": R,
    "request": R,
}
_COORDINATOR_RIGHTS: dict[str, int] = {"identities": R}


# Directories of per-VM records a rename moves, and how deep their directories go.
_RENAMED_DIRS = {paths.HOLDERS: 2, paths.DISKS: 2, "/consoles": 1, "/domainxml": 1}


def digest_id(user: str, password: str) -> str:
    """The ZooKeeper digest id of an identity: ``user:base64(sha1(user:password))``."""
    return str(make_digest_acl_credential(user, password))


@dataclass(frozen=True)
class Identity:
    """One digest identity, as a client authenticates with it."""

    user: str
    password: str

    @property
    def auth_data(self) -> list[tuple[str, str]]:
        return [("digest", f"{self.user}:{self.password}")]

    @property
    def digest(self) -> str:
        return digest_id(self.user, self.password)


def path_kind(relative: str) -> str:
    """The kind of the znode at ``relative`` (a path under the store's root)."""
    parts = [p for p in relative.split("/") if p]
    top = "/" + parts[0] if parts else ""
    depth = len(parts)
    if depth == 0:
        return "root"
    if top == paths.IDENTITIES and depth == 1:
        return "identities"
    if top == paths.RESOURCES:
        if depth == 2:
            return "kind"
        if depth == 3:
            return "object"
        if depth == 4 and parts[3] == paths.STATUS:
            return "status"
        if depth == 4 and parts[1] == "vms" and parts[3] == paths.PLACEMENT:
            return "placement"
        return "object-child" if depth > 3 else "other"
    if relative == paths.INDEX_NODES:
        return "index-nodes"
    if relative.startswith(paths.INDEX_NODES + "/"):
        return "index-node" if depth == 3 else "index-entry"
    if top == paths.EVENTS:
        return "events" if depth == 1 else "event"
    if top == paths.DISKS and depth == 3:
        return "disk-record"
    if top in _RENAMED_DIRS and depth <= _RENAMED_DIRS[top]:
        return "rename-dir"
    if top == paths.VOLUME_DELETIONS and depth == 1:
        return "volume-deletions"
    if top == paths.REQUESTS:
        return "requests" if depth == 1 else "request"
    if top == paths.SECRETS:
        if depth == 1:
            return "secrets"
        if depth == 2:
            return "secret-kind"
        return "pool-secret" if parts[1] == "storagepools" else "secret"
    return "other"


class AclPolicy:
    """The ACL of every znode under ``root``, from the digest ids of the four identities."""

    def __init__(self, root: str, digests: Mapping[str, str]) -> None:
        missing = [role for role in ROLES if role not in digests]
        if missing:
            raise ValueError(f"identities without a digest: {', '.join(missing)}")
        self.root = root.rstrip("/")
        self.digests = dict(digests)

    def _acl(self, role: str, perms: int) -> list[ACL]:
        return [ACL(perms, Id("digest", self.digests[role]))] if perms else []

    def acl_for(self, path: str) -> list[ACL]:
        """The ACL of the znode at the absolute ``path``. A parent of the root (made when
        the root is first created) gets the root's."""
        relative = path[len(self.root) :] if path.startswith(self.root + "/") else ""
        kind = path_kind(relative)
        api = _API_RIGHTS.get(kind, _API_RIGHTS["other"])
        if kind == "pool-secret":
            api = _API_RIGHTS["secret"]
        node = _NODE_RIGHTS.get(kind, RWCD)
        coordinator = _COORDINATOR_RIGHTS.get(kind, RWCD)
        return [
            *self._acl(ADMIN, Permissions.ALL),
            *self._acl(COORDINATOR, coordinator),
            *self._acl(NODE, node),
            *self._acl(API, api),
        ]


__all__ = [
    "ADMIN",
    "API",
    "COORDINATOR",
    "NODE",
    "ROLES",
    "AclPolicy",
    "Identity",
    "digest_id",
    "path_kind",
]
