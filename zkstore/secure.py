"""Securing a store: the identities' digests, the ACL of every znode, secrets out of specs.

Run by ``pvc-secure-store`` with the admin identity, on a new root (bootstrap) or on a root
made before ACLs (migration); running it again changes nothing and repairs ACLs that drifted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from kazoo.exceptions import BadVersionError, NoNodeError

from schemas import KINDS
from zkstore import paths
from zkstore.acl import AclPolicy
from zkstore.codec import decode, encode
from zkstore.secrets import split_secrets, write_secrets
from zkstore.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SecureReport:
    znodes: int
    """ZNodes whose ACL was set (every one under the root, the root included)."""
    secrets_moved: int
    """Objects whose secrets moved out of their spec into their secrets znode."""
    seconds: float


def write_identities(store: Store, digests: Mapping[str, str]) -> None:
    data = encode({"digests": dict(digests)})
    path = store.path(paths.IDENTITIES)
    try:
        store.client.set(path, data)
    except NoNodeError:
        store.client.create(path, data, makepath=True)


def move_secrets(store: Store) -> int:
    """Move secret values still kept in specs (written before the split) to their znode."""
    moved = 0
    for cls in KINDS:
        if not cls.SECRET_FIELDS:
            continue
        for name in store.names(cls):
            path = store.path(paths.resource(cls.PLURAL, name))
            for _ in range(8):
                try:
                    data, stat = store.client.get(path)
                except NoNodeError:
                    break
                raw = decode(data)
                secrets = split_secrets(cls, raw.get("spec") or {})
                if not secrets:
                    break
                write_secrets(
                    store.client, store.path(paths.secret(cls.PLURAL, name)), secrets, merge=True
                )
                try:
                    store.client.set(path, encode(raw), version=stat.version)
                except BadVersionError:
                    continue  # written meanwhile: look again
                moved += 1
                log.info("event=secret_moved kind=%s name=%s", cls.KIND, name)
                break
    return moved


def set_tree_acls(store: Store, policy: AclPolicy) -> int:
    """Give the root and every znode under it the policy's ACL; returns how many."""
    count = 0
    level = [store.root]
    while level:
        listings = [(p, store.client.get_children_async(p)) for p in level]
        pending = [store.client.set_acls_async(p, policy.acl_for(p)) for p in level]
        for result in pending:
            try:
                result.get()
                count += 1
            except NoNodeError:
                pass  # gone since it was listed
        level = []
        for parent, listing in listings:
            try:
                level.extend(f"{parent}/{child}" for child in listing.get())
            except NoNodeError:
                continue
    return count


def secure_store(store: Store, digests: Mapping[str, str]) -> SecureReport:
    """Bootstrap or migrate ``store`` (started with the admin identity and ``digests``)."""
    started = time.monotonic()
    policy = AclPolicy(store.root, digests)
    write_identities(store, digests)
    moved = move_secrets(store)
    znodes = set_tree_acls(store, policy)
    report = SecureReport(znodes, moved, round(time.monotonic() - started, 3))
    log.info(
        "event=store_secured root=%s znodes=%d secrets_moved=%d seconds=%s",
        store.root,
        report.znodes,
        report.secrets_moved,
        report.seconds,
    )
    return report


__all__ = ["SecureReport", "move_secrets", "secure_store", "set_tree_acls", "write_identities"]
