"""The local cluster's ZooKeeper identities: one password file per role, the store secured
with them (``pvc-secure-store``) before any daemon starts, as on a production install."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import yaml

ROLES = ("admin", "coordinator", "node", "api")


class SecureStoreError(RuntimeError):
    pass


def auth_dir(cluster_dir: Path) -> Path:
    return cluster_dir / "zk-auth"


def password_file(cluster_dir: Path, role: str) -> Path:
    return auth_dir(cluster_dir) / f"{role}.password"


def auth_config(cluster_dir: Path, role: str) -> dict[str, str]:
    """The ``zookeeperAuth`` setting of a daemon connecting as ``role``."""
    return {"user": role, "passwordFile": str(password_file(cluster_dir, role))}


def admin_auth_data(cluster_dir: Path) -> list[tuple[str, str]]:
    """kazoo's ``auth_data`` for the admin identity (tests and repairs)."""
    password = password_file(cluster_dir, "admin").read_text().strip()
    return [("digest", f"admin:{password}")]


def make_passwords(cluster_dir: Path) -> None:
    """A fresh random password per role, readable by this user only."""
    folder = auth_dir(cluster_dir)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    for role in ROLES:
        path = password_file(cluster_dir, role)
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(24) + "\n")


def secure_store(cluster_dir: Path, hosts: str, root: str, timeout: float) -> None:
    """Run ``pvc-secure-store`` as admin over the new root; its output goes to a log."""
    config = auth_dir(cluster_dir) / "secure-store.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "zookeeper": hosts,
                "root": root,
                "timeout": timeout,
                "identities": {
                    role: {"passwordFile": str(password_file(cluster_dir, role))} for role in ROLES
                },
            }
        )
    )
    log = cluster_dir / "secure-store.log"
    with open(log, "ab") as out:
        done = subprocess.run(
            [sys.executable, "-m", "controllers.secure_store", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout + 30,
            check=False,
        )
    if done.returncode != 0:
        raise SecureStoreError(f"pvc-secure-store failed (exit {done.returncode}); see {log}")
