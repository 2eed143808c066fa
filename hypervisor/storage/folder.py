"""A pool that is a folder: ``shared`` (the same folder on every node: NFS, CephFS, a SAN
filesystem) and ``local`` (each node's own). Volumes are qcow2 or raw files made with
``qemu-img``; a clone is a qcow2 overlay whose backing file is its origin."""

from __future__ import annotations

import json
import logging
import os
import struct
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

from hypervisor.storage.base import (
    DiskSource,
    FileSource,
    PoolUnreachable,
    PoolUsage,
    StorageError,
    VolumeExists,
    VolumeInUse,
    VolumeMissing,
    VolumeStore,
)

log = logging.getLogger(__name__)

QEMU_IMG = "qemu-img"
_QCOW2_MAGIC = b"QFI\xfb"


class FolderVolumes(VolumeStore):
    def __init__(self, path: str, *, timeout: float = 10.0) -> None:
        self.root = Path(path)
        self.timeout = timeout

    def volume_name(self, vm: str, disk: str, fmt: str) -> str:
        return f"{vm}_{disk}.{fmt}"

    def _path(self, volume: str) -> Path:
        if "/" in volume or volume in ("", ".", ".."):
            raise StorageError(f"invalid volume name {volume!r}")
        return self.root / volume

    def probe(self) -> PoolUsage:
        # statvfs of a hung NFS mount blocks in the kernel: look in a thread, bounded.
        result: dict[str, Any] = {}

        def look() -> None:
            try:
                if not self.root.is_dir():
                    result["error"] = f"folder {self.root} does not exist on this node"
                elif not os.access(self.root, os.W_OK | os.X_OK):
                    result["error"] = f"folder {self.root} is not writable here"
                else:
                    result["stat"] = os.statvfs(self.root)
            except OSError as err:
                result["error"] = f"folder {self.root}: {err.strerror}"

        worker = threading.Thread(target=look, name=f"probe {self.root}", daemon=True)
        worker.start()
        worker.join(self.timeout)
        if worker.is_alive():
            raise PoolUnreachable(f"folder {self.root} did not answer in {self.timeout:g} s")
        if "error" in result:
            raise PoolUnreachable(result["error"])
        stat = result["stat"]
        return PoolUsage(capacity=stat.f_blocks * stat.f_frsize, free=stat.f_bavail * stat.f_frsize)

    def exists(self, volume: str) -> bool:
        return os.path.lexists(self._path(volume))

    def create(self, volume: str, size: int, fmt: str) -> None:
        self._make(volume, ["-f", fmt], size)

    def clone(self, volume: str, origin: str, size: int | None, fmt: str) -> None:
        if fmt != "qcow2":
            raise StorageError(f"a clone in a folder is a qcow2 overlay, not {fmt}")
        origin_path = self._path(origin)
        if not origin_path.exists():
            raise VolumeMissing(f"volume {origin} (to clone) does not exist in {self.root}")
        info = self._info(origin_path)
        if size is not None and size < int(info["virtual-size"]):
            raise StorageError(
                f"size {size} is smaller than {origin} ({info['virtual-size']} bytes)"
            )
        backing = ["-b", str(origin_path), "-F", str(info["format"])]
        self._make(volume, ["-f", "qcow2", *backing], size)

    def _make(self, volume: str, options: list[str], size: int | None) -> None:
        """qemu-img into a temporary name, then a hard link to the volume's name: the link
        fails when anything is there, so a volume is never replaced, and a volume that exists
        is always whole (a creation stopped half-way leaves only its temporary file)."""
        final = self._path(volume)
        if os.path.lexists(final):
            raise VolumeExists(f"volume {volume} exists in {self.root}")
        partial = self.root / f".{volume}.{uuid.uuid4().hex[:8]}.partial"
        command = [QEMU_IMG, "create", "-q", *options, str(partial)]
        if size is not None:
            command.append(str(size))
        try:
            self._run(command)
            try:
                os.link(partial, final)
            except FileExistsError:
                raise VolumeExists(f"volume {volume} exists in {self.root}") from None
            except OSError as err:
                raise StorageError(f"cannot put {volume} in place: {err.strerror}") from None
        finally:
            try:
                partial.unlink()
            except FileNotFoundError:
                pass
            except OSError as err:
                log.warning("event=volume_partial_left path=%s error=%s", partial, err.strerror)
        log.info("event=volume_created pool_path=%s volume=%s", self.root, volume)

    def _run(self, command: list[str]) -> str:
        try:
            done = subprocess.run(
                command, check=True, capture_output=True, text=True, timeout=self.timeout * 6
            )
        except FileNotFoundError:
            raise StorageError(f"{command[0]} not found") from None
        except subprocess.TimeoutExpired:
            raise StorageError(f"{command[0]} {command[1]} did not finish in time") from None
        except subprocess.CalledProcessError as err:
            raise StorageError(f"{command[0]} {command[1]}: {err.stderr.strip()}") from None
        return done.stdout

    def _info(self, path: Path) -> dict[str, Any]:
        # -U: also while a running guest holds the image.
        out = self._run([QEMU_IMG, "info", "-U", "--output=json", str(path)])
        info: dict[str, Any] = json.loads(out)
        return info

    def size(self, volume: str) -> int:
        path = self._path(volume)
        if not path.exists():
            raise VolumeMissing(f"volume {volume} does not exist in {self.root}")
        return int(self._info(path)["virtual-size"])

    def resize(self, volume: str, size: int) -> None:
        path = self._path(volume)
        current = self.size(volume)
        if size < current:
            raise StorageError(f"volume {volume} is {current} bytes: it is never shrunk")
        if size == current:
            return
        fmt = str(self._info(path)["format"])
        self._run([QEMU_IMG, "resize", "-q", "-f", fmt, str(path), str(size)])
        log.info("event=volume_resized volume=%s size=%d", volume, size)

    def delete(self, volume: str) -> None:
        path = self._path(volume)
        if not os.path.lexists(path):
            return
        clones = self.clones_of(volume)
        if clones:
            raise VolumeInUse(f"volume {volume} is the origin of {', '.join(clones)}")
        path.unlink()
        log.info("event=volume_deleted pool_path=%s volume=%s", self.root, volume)

    def clones_of(self, volume: str) -> list[str]:
        """Volumes of this folder whose backing file is ``volume`` (read from qcow2 headers,
        no qemu-img per file)."""
        target = str(self._path(volume))
        found = []
        for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
            if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                continue
            if _backing_file(entry.path) == target:
                found.append(entry.name)
        return found

    def source(self, volume: str, fmt: str | None) -> DiskSource:
        path = self._path(volume)
        if fmt is None:
            if not path.exists():
                raise VolumeMissing(f"volume {volume} does not exist in {self.root}")
            fmt = str(self._info(path)["format"])
        return FileSource(path=str(path), format=fmt)


def _backing_file(path: str) -> str | None:
    """The backing file named in a qcow2 header; None for anything else."""
    try:
        with open(path, "rb") as image:
            header = image.read(20)
            if len(header) < 20 or header[:4] != _QCOW2_MAGIC:
                return None
            offset, length = struct.unpack(">QI", header[8:20])
            if not offset or not length or length > 4096:
                return None
            image.seek(offset)
            return image.read(length).decode("utf-8", "replace")
    except OSError:
        return None
