"""RbdVolumes against a real single-host Ceph (tests/ceph.py), as the cephx user PVC gets
(``profile rbd`` on one pool). Bytes are written and read back as client.admin (qemu-io over
librbd, ``rbd export``) so that what a guest would see is what is checked.

Skips, saying why, where the Ceph daemons are not installed or do not come up.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hypervisor.storage.base import (
    PoolUnreachable,
    PoolUsage,
    RbdSource,
    StorageError,
    VolumeExists,
    VolumeInUse,
    VolumeMissing,
)
from hypervisor.storage.rbd import CLONE_SNAPSHOT, RbdVolumes
from localcluster.process import free_port
from tests.ceph import SingleHostCeph, new_key

MIB = 1024 * 1024
CONNECT_TIMEOUT_S = 2.0
# What a failed connection may take beyond client_mount_timeout: starting the command, and
# the check whether the monitors accept TCP connections.
SLACK_S = 3.0
BLOCK = 4096


# -- helpers ------------------------------------------------------------------------------


def store(ceph: SingleHostCeph, **kwargs: Any) -> RbdVolumes:
    options: dict[str, Any] = {
        "monitors": ceph.monitors,
        "pool": ceph.pool,
        "user": ceph.user,
        "key": ceph.key,
        "secret_uuid": str(uuid.uuid4()),
        "timeout": 20.0,
        "connect_timeout": CONNECT_TIMEOUT_S,
    }
    options.update(kwargs)
    return RbdVolumes(**options)


def write_pattern(ceph: SingleHostCeph, volume: str, pattern: int, offset: int = 0) -> None:
    """Write BLOCK bytes of ``pattern`` into the image through librbd, as client.admin (its
    keyring is named in the admin's ceph.conf: no key on the command line)."""
    done = subprocess.run(
        ["qemu-io", "-f", "raw", f"rbd:{ceph.pool}/{volume}:conf={ceph.conf}",
         "-c", f"write -P {pattern:#x} {offset} {BLOCK}"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and "wrote" in done.stdout, done.stdout + done.stderr


def image_bytes(ceph: SingleHostCeph, volume: str) -> bytes:
    done = subprocess.run(
        ["rbd", "-c", str(ceph.conf), "export", "--no-progress", f"{ceph.pool}/{volume}", "-"],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def admin_size(ceph: SingleHostCeph, volume: str) -> int:
    return int(json.loads(ceph.admin("info", "--format", "json", f"{ceph.pool}/{volume}",
                                     program="rbd"))["size"])  # fmt: skip


def admin_images(ceph: SingleHostCeph) -> set[str]:
    return set(ceph.admin("ls", ceph.pool, program="rbd").split())


def raises(error: type[StorageError], call: Callable[[], object], key: str) -> StorageError:
    """``call()`` raises ``error``; its message says something and never holds the key."""
    with pytest.raises(error) as caught:
        call()
    message = str(caught.value)
    assert message and key not in message, message
    return caught.value


@pytest.fixture
def name() -> Callable[[str], str]:
    prefix = f"t{uuid.uuid4().hex[:6]}"
    return lambda label: f"{prefix}-{label}"


@pytest.fixture
def volumes(ceph: SingleHostCeph) -> Iterator[RbdVolumes]:
    yield store(ceph)


# -- volumes ------------------------------------------------------------------------------


def test_create_makes_an_image_of_that_size(
    ceph: SingleHostCeph, volumes: RbdVolumes, name: Callable[[str], str]
) -> None:
    volume = name("root")
    assert not volumes.exists(volume)
    volumes.create(volume, 4 * MIB + BLOCK, "raw")
    assert volumes.exists(volume)
    assert volumes.size(volume) == 4 * MIB + BLOCK
    assert admin_size(ceph, volume) == 4 * MIB + BLOCK
    assert volumes.volume_name("web", "root", "raw") == "web_root"


def test_create_twice_refuses_and_keeps_the_data(
    ceph: SingleHostCeph, volumes: RbdVolumes, name: Callable[[str], str]
) -> None:
    volume = name("data")
    volumes.create(volume, 4 * MIB, "raw")
    write_pattern(ceph, volume, 0xAB)
    error = raises(VolumeExists, lambda: volumes.create(volume, 8 * MIB, "raw"), ceph.key)
    assert volume in str(error)
    assert volumes.size(volume) == 4 * MIB
    assert image_bytes(ceph, volume)[:BLOCK] == b"\xab" * BLOCK


def test_resize_grows_and_never_shrinks(
    ceph: SingleHostCeph, volumes: RbdVolumes, name: Callable[[str], str]
) -> None:
    volume = name("grow")
    volumes.create(volume, 4 * MIB, "raw")
    write_pattern(ceph, volume, 0x5A, offset=4 * MIB - BLOCK)
    volumes.resize(volume, 8 * MIB)
    assert admin_size(ceph, volume) == 8 * MIB
    volumes.resize(volume, 8 * MIB)  # the same size: nothing to do
    error = raises(StorageError, lambda: volumes.resize(volume, 4 * MIB), ceph.key)
    assert "shrink" in str(error)
    assert admin_size(ceph, volume) == 8 * MIB
    data = image_bytes(ceph, volume)
    assert data[4 * MIB - BLOCK : 4 * MIB] == b"\x5a" * BLOCK
    assert data[4 * MIB :] == bytes(4 * MIB)
    raises(VolumeMissing, lambda: volumes.resize(name("absent"), 8 * MIB), ceph.key)
    raises(VolumeMissing, lambda: volumes.size(name("absent")), ceph.key)


def test_clone_starts_with_the_origin_bytes_and_grows(
    ceph: SingleHostCeph, volumes: RbdVolumes, name: Callable[[str], str]
) -> None:
    origin, clone, same = name("golden"), name("vm1"), name("vm2")
    volumes.create(origin, 4 * MIB, "raw")
    write_pattern(ceph, origin, 0xAB)
    volumes.clone(clone, origin, 8 * MIB, "raw")
    volumes.clone(same, origin, None, "raw")
    assert volumes.size(clone) == 8 * MIB
    assert volumes.size(same) == 4 * MIB
    assert image_bytes(ceph, clone)[:BLOCK] == b"\xab" * BLOCK
    # A clone is a copy: writing to it leaves the origin as it was.
    write_pattern(ceph, clone, 0xCD)
    assert image_bytes(ceph, clone)[:BLOCK] == b"\xcd" * BLOCK
    assert image_bytes(ceph, origin)[:BLOCK] == b"\xab" * BLOCK
    raises(VolumeExists, lambda: volumes.clone(clone, origin, 8 * MIB, "raw"), ceph.key)
    assert image_bytes(ceph, clone)[:BLOCK] == b"\xcd" * BLOCK
    raises(VolumeMissing, lambda: volumes.clone(name("x"), name("absent"), None, "raw"), ceph.key)
    assert not volumes.exists(name("x"))


def test_delete_refuses_an_origin_with_clones_then_removes_all(
    ceph: SingleHostCeph, volumes: RbdVolumes, name: Callable[[str], str]
) -> None:
    origin, clone = name("base"), name("child")
    volumes.create(origin, 4 * MIB, "raw")
    write_pattern(ceph, origin, 0x11)
    volumes.clone(clone, origin, None, "raw")
    error = raises(VolumeInUse, lambda: volumes.delete(origin), ceph.key)
    assert clone in str(error)
    assert image_bytes(ceph, origin)[:BLOCK] == b"\x11" * BLOCK
    assert image_bytes(ceph, clone)[:BLOCK] == b"\x11" * BLOCK
    volumes.delete(clone)
    volumes.delete(origin)  # its clone-base snapshot goes with it
    assert {origin, clone}.isdisjoint(admin_images(ceph))
    assert not volumes.exists(origin)
    volumes.delete(origin)  # absent: nothing to do


def test_source_names_the_image_monitors_user_and_secret(ceph: SingleHostCeph) -> None:
    secret = str(uuid.uuid4())
    volumes = store(ceph, secret_uuid=secret, monitors=[*ceph.monitors, "10.0.0.9"])
    host, port = ceph.monitors[0].split(":")
    assert volumes.source("web-root", None) == RbdSource(
        image=f"{ceph.pool}/web-root",
        hosts=((host, int(port)), ("10.0.0.9", 6789)),
        user=ceph.user,
        secret_uuid=secret,
        format="raw",
    )


# -- the pool -----------------------------------------------------------------------------


def test_probe_reports_the_pool_space(ceph: SingleHostCeph, volumes: RbdVolumes) -> None:
    usage = volumes.probe()
    assert isinstance(usage, PoolUsage)
    assert usage.capacity is not None and usage.free is not None
    assert 0 < usage.free <= usage.capacity


def test_unreachable_monitor_fails_within_the_connect_timeout(ceph: SingleHostCeph) -> None:
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there
    volumes = store(ceph, monitors=[closed])
    for call in (volumes.probe, lambda: volumes.create("never", MIB, "raw")):
        started = time.monotonic()
        error = raises(PoolUnreachable, call, ceph.key)
        took = time.monotonic() - started
        assert took < CONNECT_TIMEOUT_S + SLACK_S, f"{took:.1f}s: {error}"
        assert closed in str(error) and "refused" in str(error), str(error)
    assert "never" not in admin_images(ceph)


@pytest.mark.parametrize("port", ["v1", "v2"])
def test_wrong_key_is_an_unreachable_pool_that_says_auth(ceph: SingleHostCeph, port: str) -> None:
    """Over v1 Ceph never tells the client its key was refused (it retries until the
    connect timeout); over v2 it does. The message says authentication either way."""
    monitor = ceph.monitors[0] if port == "v1" else f"127.0.0.1:{ceph.v2_port}"
    wrong = new_key()
    volumes = store(ceph, monitors=[monitor], key=wrong)
    started = time.monotonic()
    error = raises(PoolUnreachable, volumes.probe, wrong)
    assert time.monotonic() - started < CONNECT_TIMEOUT_S + SLACK_S
    assert "authenticate client.pvc" in str(error), str(error)


def test_a_key_that_is_no_cephx_key_is_reported_without_it(ceph: SingleHostCeph) -> None:
    """Ceph prints a key it cannot decode; the error must not pass it on."""
    malformed = base64.b64encode(os.urandom(16)).decode()
    error = raises(PoolUnreachable, store(ceph, key=malformed).probe, malformed)
    assert "no cephx key" in str(error), str(error)


def test_a_missing_pool_is_unreachable(ceph: SingleHostCeph) -> None:
    volumes = store(ceph, pool="nosuchpool")
    error = raises(PoolUnreachable, volumes.probe, ceph.key)
    assert "nosuchpool" in str(error)
    raises(PoolUnreachable, lambda: volumes.create("x", MIB, "raw"), ceph.key)


def test_the_key_is_never_on_a_command_line(ceph: SingleHostCeph) -> None:
    """While commands run (held at a closed port for the connect timeout), no process shows
    the key in its arguments; the key file they name is 0600 and gone afterwards."""
    volumes = store(ceph, monitors=[f"127.0.0.1:{free_port()}"])
    seen: dict[str, Any] = {"commands": 0, "keyfiles": set(), "modes": set(), "leaks": []}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                try:
                    argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
                except OSError:
                    continue
                if "--keyfile" not in argv:
                    continue
                seen["commands"] += 1
                if any(ceph.key in arg for arg in argv):
                    seen["leaks"].append(argv)
                keyfile = argv[argv.index("--keyfile") + 1]
                seen["keyfiles"].add(keyfile)
                with contextlib.suppress(OSError):
                    seen["modes"].add(os.stat(keyfile).st_mode & 0o777)
            stop.wait(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        raises(PoolUnreachable, volumes.probe, ceph.key)
    finally:
        stop.set()
        watcher.join()
    assert seen["commands"] > 0 and not seen["leaks"], seen
    assert seen["modes"] == {0o600}, seen
    assert not any(os.path.exists(path) for path in seen["keyfiles"]), seen


def test_clones_start_from_the_origin_at_its_first_clone(
    ceph: SingleHostCeph, volumes: RbdVolumes, name: Callable[[str], str]
) -> None:
    """One protected snapshot per origin, made by the first clone and kept: a later clone
    starts from the origin as it was then (RbdVolumes' docstring says why)."""
    origin = name("tmpl")
    volumes.create(origin, MIB, "raw")
    write_pattern(ceph, origin, 0x21)
    volumes.clone(name("a"), origin, None, "raw")
    write_pattern(ceph, origin, 0x22)
    volumes.clone(name("b"), origin, None, "raw")
    assert image_bytes(ceph, name("b"))[:BLOCK] == b"\x21" * BLOCK
    snaps = json.loads(
        ceph.admin("snap", "ls", "--format", "json", f"{ceph.pool}/{origin}", program="rbd")
    )
    assert [(s["name"], s["protected"]) for s in snaps] == [(CLONE_SNAPSHOT, "true")]
