"""Legacy disk images: a disk given by ``size`` without a pool, made in the node's
``libvirt.diskDir`` (pools are hypervisor/storage)."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess

from hypervisor.domain import DiskSpec
from hypervisor.errors import OperationFailed

log = logging.getLogger(__name__)

QEMU_IMG = "qemu-img"


def create_image(disk: DiskSpec) -> None:
    """Create the image of ``disk`` when nothing is at its path: written under a temporary
    name and renamed into place, so a file at the path is always whole. The caller keeps
    two creators of one image apart (LibvirtDriver's lock)."""

    def failed(why: str) -> OperationFailed:
        return OperationFailed(f"creating disk {disk.path}: {why}", operation="create-disk")

    if disk.size_bytes is None:
        raise failed("no size given")
    # lexists: a dangling symlink is an operator's doing; never write through it.
    if os.path.lexists(disk.path):
        return
    folder, base = os.path.split(disk.path)
    partial = os.path.join(folder, f".{base}.creating")
    try:
        os.makedirs(folder, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)  # left by a crash half-way: never used
    except OSError as err:
        raise failed(f"cannot prepare its folder: {err.strerror}") from None
    command = [QEMU_IMG, "create", "-q", "-f", disk.format, partial, str(disk.size_bytes)]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
        os.rename(partial, disk.path)
    except FileNotFoundError as err:
        raise failed(f"{QEMU_IMG} not found") from err
    except subprocess.CalledProcessError as err:
        raise failed(err.stderr.strip()) from err
    except OSError as err:
        raise failed(f"cannot rename it into place: {err.strerror}") from None
    log.info("event=disk_image_created path=%s size=%d", disk.path, disk.size_bytes)
