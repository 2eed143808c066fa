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


def start_secure_store(cluster_dir: Path, hosts: str, root: str, timeout: float) -> SecureRun:
    """Start ``pvc-secure-store`` as admin over the new root (its output goes to a log); the
    daemons may start meanwhile: they wait for the identities it stores first."""
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
        process = subprocess.Popen(
            [sys.executable, "-m", "controllers.secure_store", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return SecureRun(process, log, timeout + 30)


class SecureRun:
    def __init__(self, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
        self.process, self.log, self.timeout = process, log, timeout

    def finish(self) -> None:
        """Wait for it; SecureStoreError (naming the log) unless it succeeded."""
        try:
            code = self.process.wait(self.timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise SecureStoreError(
                f"pvc-secure-store took over {self.timeout:g}s; see {self.log}"
            ) from None
        if code != 0:
            raise SecureStoreError(f"pvc-secure-store failed (exit {code}); see {self.log}")
