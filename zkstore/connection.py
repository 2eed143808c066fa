"""How a process reaches ZooKeeper: its identity (``zookeeperAuth``), TLS (``zookeeperTls``)
and the client that puts zkstore.acl's ACL on every znode it creates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kazoo.client import KazooClient, TransactionRequest
from kazoo.retry import KazooRetry
from pydantic import SecretStr, model_validator

from schemas.meta import Model
from zkstore.acl import ROLES, AclPolicy, Identity
from zkstore.pollhandler import PollHandler


class ZookeeperAuth(Model):
    """``zookeeperAuth``: the digest identity this process connects with."""

    user: str
    """One of admin, coordinator, node, api (zkstore/acl.py says what each may do)."""
    password: SecretStr | None = None
    password_file: str | None = None
    """A file holding the password (one line; surrounding whitespace is ignored)."""

    @model_validator(mode="after")
    def _one_password(self) -> ZookeeperAuth:
        if self.user not in ROLES:
            raise ValueError(f"user must be one of {', '.join(ROLES)}, not {self.user!r}")
        if (self.password is None) == (self.password_file is None):
            raise ValueError("give exactly one of 'password' and 'passwordFile'")
        return self

    def identity(self) -> Identity:
        """The identity, reading ``passwordFile`` now (ValueError naming the file)."""
        if self.password is not None:
            return Identity(self.user, self.password.get_secret_value())
        assert self.password_file is not None
        try:
            password = Path(self.password_file).read_text().strip()
        except OSError as exc:
            raise ValueError(
                f"zookeeperAuth.passwordFile {self.password_file}: cannot read: {exc.strerror}"
            ) from None
        if not password:
            raise ValueError(f"zookeeperAuth.passwordFile {self.password_file} is empty")
        return Identity(self.user, password)


class ZookeeperTls(Model):
    """``zookeeperTls``: connect to ZooKeeper's secure client port."""

    ca: str
    """The CA certificate (PEM) the server's certificate must chain to."""
    cert: str | None = None
    """This client's certificate (PEM), for a server that asks for one."""
    key: str | None = None
    """Its private key (PEM)."""

    @model_validator(mode="after")
    def _pair(self) -> ZookeeperTls:
        if (self.cert is None) != (self.key is None):
            raise ValueError("give both 'cert' and 'key', or neither")
        return self

    def kazoo_args(self) -> dict[str, Any]:
        return {
            "use_ssl": True,
            "verify_certs": True,
            "ca": self.ca,
            "certfile": self.cert,
            "keyfile": self.key,
        }


class _AclTransaction(TransactionRequest):  # type: ignore[misc]
    def create(
        self,
        path: str,
        value: bytes = b"",
        acl: Any = None,
        ephemeral: bool = False,
        sequence: bool = False,
    ) -> None:
        policy: AclPolicy = self.client.acl_policy
        super().create(path, value, policy.acl_for(path), ephemeral, sequence)


class AclClient(KazooClient):  # type: ignore[misc]
    """A KazooClient whose every create (direct, ``makepath``, ``ensure_path``, recipe or
    transaction) gets the ACL ``acl_policy`` gives its path, whatever the caller passed."""

    acl_policy: AclPolicy

    def create_async(self, path: str, value: bytes = b"", acl: Any = None, **kwargs: Any) -> Any:
        return super().create_async(path, value, acl=self.acl_policy.acl_for(path), **kwargs)

    def transaction(self) -> TransactionRequest:
        return _AclTransaction(self)


def make_client(
    hosts: str,
    timeout: float,
    *,
    identity: Identity | None = None,
    tls: ZookeeperTls | None = None,
) -> KazooClient:
    """A client for ``hosts``: anonymous with world-open znodes when ``identity`` is None
    (a store made before ACLs), else authenticated, creating znodes with the policy's ACL
    (set ``acl_policy`` before the first create: ``Store.start`` does)."""
    options: dict[str, Any] = {
        "hosts": hosts,
        "timeout": timeout,
        "connection_retry": KazooRetry(max_tries=-1, max_delay=2.0),
        "command_retry": KazooRetry(max_tries=3, max_delay=1.0),
        # kazoo's stock handler makes an epoll set per wait: zkstore/pollhandler.py.
        "handler": PollHandler(),
        **(tls.kazoo_args() if tls is not None else {}),
    }
    if identity is None:
        return KazooClient(**options)
    return AclClient(auth_data=identity.auth_data, **options)


__all__ = ["AclClient", "ZookeeperAuth", "ZookeeperTls", "make_client"]
