"""``pvc-secure-store``: give a ZooKeeper root its identities and ACLs (bootstrap or migration).

Connects with the admin identity, stores the digests of the four identities (admin,
coordinator, node, api) at ``<root>/identities``, moves secrets still kept in specs to their
own znodes, and sets every znode's ACL from zkstore/acl.py. Idempotent: run it on a new
root before the daemons start, or once on a store made before ACLs (then restart pvcnoded
and pvcapid with their ``zookeeperAuth``). docs/configuration.md describes the config.
"""

from __future__ import annotations

import argparse
import logging
import sys

from kazoo.exceptions import KazooException
from kazoo.handlers.threading import KazooTimeoutError
from pydantic import Field, ValidationError

from schemas.configfile import ConfigFileError, read_yaml_mapping
from schemas.meta import Model
from zkstore.acl import ADMIN, ROLES
from zkstore.connection import ZookeeperAuth, ZookeeperTls
from zkstore.secure import secure_store
from zkstore.store import Store

log = logging.getLogger(__name__)


class Identities(Model):
    admin: ZookeeperAuth
    coordinator: ZookeeperAuth
    node: ZookeeperAuth
    api: ZookeeperAuth


class SecureConfig(Model):
    zookeeper: str = "127.0.0.1:2181"
    root: str = "/pvc"
    zookeeper_tls: ZookeeperTls | None = None
    identities: Identities
    """Each identity's ``password`` or ``passwordFile`` (its ``user`` is its role)."""
    timeout: float = Field(default=30.0, gt=0)


def _with_roles(raw: dict[str, object]) -> dict[str, object]:
    identities = raw.get("identities")
    if isinstance(identities, dict):
        for role in ROLES:
            entry = identities.get(role)
            if isinstance(entry, dict):
                entry.setdefault("user", role)
    return raw


def load(path: str) -> SecureConfig:
    raw = _with_roles(read_yaml_mapping(path))
    try:
        config = SecureConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        raise ConfigFileError(f"{path}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    for role in ROLES:
        auth: ZookeeperAuth = getattr(config.identities, role)
        if auth.user != role:
            raise ConfigFileError(f"{path}: identities.{role}.user must be {role!r}")
        try:
            auth.identity()
        except ValueError as exc:
            raise ConfigFileError(f"{path}: identities.{role}: {exc}") from None
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pvc-secure-store",
        description="Store the ZooKeeper identities' digests under the root, move secrets out "
        "of specs and set every znode's ACL (idempotent; connects as admin).",
    )
    parser.add_argument("--config", required=True, help="YAML: zookeeper, root, identities")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("kazoo").setLevel(logging.WARNING)
    try:
        config = load(args.config)
    except ConfigFileError as exc:
        print(f"pvc-secure-store: {exc}", file=sys.stderr)
        return 2
    identities = {role: getattr(config.identities, role).identity() for role in ROLES}
    store = Store(
        config.zookeeper,
        config.root,
        timeout=10.0,
        auth=identities[ADMIN],
        tls=config.zookeeper_tls,
        identities={role: identity.digest for role, identity in identities.items()},
    )
    try:
        store.start(timeout=config.timeout)
        report = secure_store(store, store.client.acl_policy.digests)
    except (KazooTimeoutError, KazooException) as exc:
        print(f"pvc-secure-store: {config.zookeeper}{config.root}: {exc!r}", file=sys.stderr)
        return 1
    finally:
        store.stop()
    print(
        f"secured {config.root}: ACLs on {report.znodes} znodes, secrets moved out of "
        f"{report.secrets_moved} specs, in {report.seconds} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


__all__ = ["SecureConfig", "load", "main"]
