"""The folder backend (shared and local pools) with real qemu-img: volumes are created whole
or not at all, never replace one that exists, clone as qcow2 overlays, grow and never
shrink, and an origin with clones is not deleted."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from hypervisor.storage import (
    FileSource,
    PoolUnreachable,
    StorageError,
    VolumeExists,
    VolumeInUse,
    VolumeMissing,
)
from hypervisor.storage.folder import FolderVolumes

MIB = 2**20


def write(path: Path, pattern: int) -> None:
    done = subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"write -P {pattern:#x} 0 64k", str(path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def holds(path: Path, pattern: int) -> bool:
    done = subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"read -P {pattern:#x} 0 64k", str(path)],
        capture_output=True,
        text=True,
    )
    return done.returncode == 0 and "Pattern verification failed" not in done.stdout


def test_create_never_replaces_and_leaves_nothing_half_made(tmp_path: Path) -> None:
    pool = FolderVolumes(str(tmp_path))
    name = pool.volume_name("web", "data", "qcow2")
    assert name == "web_data.qcow2"
    pool.create(name, 8 * MIB, "qcow2")
    assert pool.exists(name) and pool.size(name) == 8 * MIB
    write(tmp_path / name, 0x42)
    with pytest.raises(VolumeExists):
        pool.create(name, 16 * MIB, "qcow2")
    assert holds(tmp_path / name, 0x42) and pool.size(name) == 8 * MIB
    assert [p.name for p in tmp_path.iterdir()] == [name], "no temporary file is left"


def test_racing_creators_make_one_volume(tmp_path: Path) -> None:
    pool = FolderVolumes(str(tmp_path))
    outcomes: list[str] = []

    def create() -> None:
        try:
            pool.create("race.qcow2", 4 * MIB, "qcow2")
            outcomes.append("created")
        except VolumeExists:
            outcomes.append("exists")

    workers = [threading.Thread(target=create) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(outcomes) == ["created", "exists", "exists", "exists"]


def test_clone_is_an_overlay_of_its_origin_and_grows(tmp_path: Path) -> None:
    pool = FolderVolumes(str(tmp_path))
    pool.create("image.qcow2", 8 * MIB, "qcow2")
    write(tmp_path / "image.qcow2", 0x5A)
    pool.clone("vm-root.qcow2", "image.qcow2", 32 * MIB, "qcow2")
    assert pool.size("vm-root.qcow2") == 32 * MIB
    assert holds(tmp_path / "vm-root.qcow2", 0x5A)
    with pytest.raises(VolumeMissing):
        pool.clone("other.qcow2", "nosuch.qcow2", None, "qcow2")
    with pytest.raises(StorageError, match=r"smaller than image\.qcow2"):
        pool.clone("small.qcow2", "image.qcow2", 4 * MIB, "qcow2")
    with pytest.raises(StorageError, match="qcow2 overlay"):
        pool.clone("raw.raw", "image.qcow2", None, "raw")
    with pytest.raises(VolumeInUse, match=r"vm-root\.qcow2"):
        pool.delete("image.qcow2")
    assert pool.exists("image.qcow2")
    pool.delete("vm-root.qcow2")
    pool.delete("image.qcow2")
    pool.delete("image.qcow2")  # gone already: nothing
    assert list(tmp_path.iterdir()) == []


def test_resize_grows_and_never_shrinks(tmp_path: Path) -> None:
    pool = FolderVolumes(str(tmp_path))
    pool.create("v.raw", 4 * MIB, "raw")
    pool.resize("v.raw", 12 * MIB)
    assert pool.size("v.raw") == 12 * MIB
    with pytest.raises(StorageError, match="never shrunk"):
        pool.resize("v.raw", 8 * MIB)
    assert pool.size("v.raw") == 12 * MIB
    assert pool.source("v.raw", None) == FileSource(str(tmp_path / "v.raw"), "raw")


def test_probe_says_why_a_folder_is_not_reachable(tmp_path: Path) -> None:
    usage = FolderVolumes(str(tmp_path)).probe()
    assert usage.capacity and usage.free and usage.free <= usage.capacity
    with pytest.raises(PoolUnreachable, match="does not exist on this node"):
        FolderVolumes(str(tmp_path / "absent")).probe()
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(PoolUnreachable, match="not writable"):
            FolderVolumes(str(locked)).probe()


def test_probe_of_a_hung_folder_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A hung NFS mount blocks statvfs in the kernel; stand in for it with a statvfs that
    # does not return (the fault), behind the call the backend makes.
    release = threading.Event()

    def hung(_path: object) -> os.statvfs_result:
        release.wait(10)
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "statvfs", hung)
    started = time.monotonic()
    with pytest.raises(PoolUnreachable, match=r"did not answer in 0\.5 s"):
        FolderVolumes(str(tmp_path), timeout=0.5).probe()
    assert time.monotonic() - started < 2
    release.set()


def test_names_that_leave_the_folder_are_refused(tmp_path: Path) -> None:
    pool = FolderVolumes(str(tmp_path / "pool"))
    for bad in ("../escape", "a/b", "..", ""):
        with pytest.raises(StorageError, match="invalid volume name"):
            pool.exists(bad)
