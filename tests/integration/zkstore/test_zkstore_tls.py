"""TLS to ZooKeeper (``zookeeperTls``): a real server's secure client port (Netty, PEM
keystore, client certificates required), a throwaway CA made with openssl."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kazoo.client import KazooClient
from kazoo.handlers.threading import KazooTimeoutError

from controllers.secure_store import main as secure_main
from localcluster.process import free_port
from localcluster.zookeeper import ServerTls, ZooKeeperServer
from schemas import VirtualMachine, parse_resource
from zkstore import Store
from zkstore.acl import Identity
from zkstore.connection import ZookeeperTls


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.pem"
    openssl(
        *(
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ),
        *("-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)),
    )
    return key, cert


def issue(folder: Path, ca: tuple[Path, Path], name: str, san: str | None) -> tuple[Path, Path]:
    key, csr, cert = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.pem"
    openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        f"/CN={name}",
        "-keyout",
        str(key),
        "-out",
        str(csr),
    )
    extra: list[str] = []
    if san:
        ext = folder / f"{name}.ext"
        ext.write_text(f"subjectAltName={san}\n")
        extra = ["-extfile", str(ext)]
    openssl(
        *("x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0])),
        *("-CAcreateserial", "-days", "1", "-out", str(cert), *extra),
    )
    return key, cert


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ZooKeeperServer, Path]]:
    folder = tmp_path_factory.mktemp("zk-tls")
    ca = make_ca(folder, "ca")
    server_key, server_cert = issue(folder, ca, "server", "IP:127.0.0.1")
    bundle = folder / "server-bundle.pem"
    bundle.write_text(server_key.read_text() + server_cert.read_text())
    issue(folder, ca, "client", None)
    server = ZooKeeperServer(folder / "zk", tls=ServerTls(free_port(), bundle, ca[1]))
    server.start()
    yield server, folder
    server.stop()


def test_daemons_reach_zookeeper_over_tls_with_their_identity(
    tls_server: tuple[ZooKeeperServer, Path],
) -> None:
    server, folder = tls_server
    assert server.tls is not None
    hosts = f"127.0.0.1:{server.tls.port}"
    tls = {
        "ca": str(folder / "ca.pem"),
        "cert": str(folder / "client.pem"),
        "key": str(folder / "client.key"),
    }
    root = f"/tls-{uuid.uuid4().hex[:8]}"
    passwords = {role: uuid.uuid4().hex for role in ("admin", "coordinator", "node", "api")}
    config = folder / "secure.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "zookeeper": hosts,
                "root": root,
                "zookeeperTls": tls,
                "identities": {r: {"password": p} for r, p in passwords.items()},
            }
        )
    )
    assert secure_main(["--config", str(config)]) == 0  # pvc-secure-store over TLS

    api = Store(
        hosts,
        root,
        timeout=6.0,
        auth=Identity("api", passwords["api"]),
        tls=ZookeeperTls.model_validate(tls),
    )
    api.start()
    try:
        vm = parse_resource(
            {
                "apiVersion": "pvc/v1",
                "kind": "VirtualMachine",
                "metadata": {"name": "web"},
                "spec": {"memory": "1Gi"},
            }
        )
        api.create(vm)
        assert api.get(VirtualMachine, "web").spec.memory == "1Gi"
    finally:
        api.stop()

    # A client that trusts another CA never gets a session.
    other = make_ca(folder, "other-ca")
    stranger = KazooClient(
        hosts=hosts,
        timeout=1.0,
        use_ssl=True,
        verify_certs=True,
        ca=str(other[1]),
        certfile=tls["cert"],
        keyfile=tls["key"],
    )
    with pytest.raises(KazooTimeoutError):
        stranger.start(timeout=1.0)
    stranger.stop()
    stranger.close()
