"""Gratuitous ARP: tell the neighbours an IPv4 address now lives at this interface's MAC.

Three ways, one result (a broadcast ARP request whose sender and target address are the
announced address, sent ``count`` times ``interval`` apart):

- ``arping`` of Thomas Habets (Debian's ``arping``): ``arping -U -c N -W s -i dev -S ip ip``;
- ``arping`` of iputils (Debian's ``iputils-arping``; the two packages conflict):
  ``arping -U -c N -i s -I dev -s ip ip``, in whole seconds (a shorter interval is 1 s);
- no arping at all: a 42-byte frame on a raw AF_PACKET socket (needs CAP_NET_RAW, as
  both arpings do).

``auto`` asks the installed ``arping`` which it is (``--help``, then ``-V``) and falls back
to the raw socket when there is none, or it is neither.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import ipaddress
import logging
import math
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from enum import StrEnum
from typing import TypeVar

from hypervisor.hostnet.base import HostNetworkError

log = logging.getLogger(__name__)

T = TypeVar("T")


class Method(StrEnum):
    AUTO = "auto"
    HABETS = "arping-habets"
    IPUTILS = "arping-iputils"
    RAW = "raw"


# Habets' arping exits 1 when nobody answers, which is the normal outcome of a gratuitous
# ARP, and also on real errors; iputils' exits 0 in -U mode. The counts tell.
HABETS_SENT = re.compile(r"^(\d+) packets transmitted", re.MULTILINE)
IPUTILS_SENT = re.compile(r"^Sent (\d+) probes?", re.MULTILINE)

DETECT_TIMEOUT = 2.0
NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
BROADCAST = b"\xff" * 6
SBIN = "/usr/sbin"  # Habets' arping lives here, iputils' in /usr/bin


def flavour_of(text: str) -> Method | None:
    """Which arping printed ``text`` (its ``--help`` or ``-V`` output), or None."""
    if "Thomas Habets" in text or re.search(r"^ARPing \d", text, re.MULTILINE):
        return Method.HABETS
    if "iputils" in text or re.search(r"^\s*-I <device>", text, re.MULTILINE):
        return Method.IPUTILS
    return None


def find_arping() -> str | None:
    path = os.environ.get("PATH", os.defpath)
    if SBIN not in path.split(os.pathsep):
        path = f"{path}{os.pathsep}{SBIN}"
    return shutil.which("arping", path=path)


_detected: dict[tuple[str, int, float], Method | None] = {}
_detected_lock = threading.Lock()


def detect_arping(arping: str | None = None) -> tuple[str, Method] | None:
    """The installed arping and its flavour, or None (none installed, or neither flavour).
    Remembered per binary (path, inode, mtime), so an upgrade is noticed."""
    found = arping or find_arping()
    if found is None:
        return None
    try:
        info = os.stat(found)
    except OSError:
        return None
    key = (found, info.st_ino, info.st_mtime)
    with _detected_lock:
        if key in _detected:
            flavour = _detected[key]
            return (found, flavour) if flavour else None
    flavour = None
    for probe in ("--help", "-V"):
        try:
            result = subprocess.run(
                [found, probe], capture_output=True, text=True, timeout=DETECT_TIMEOUT
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        flavour = flavour_of(result.stdout + result.stderr)
        if flavour is not None:
            break
    log.info("event=arping_detected path=%s flavour=%s", found, flavour or "unknown")
    with _detected_lock:
        _detected[key] = flavour
    return (found, flavour) if flavour else None


def iputils_interval(interval: float) -> int:
    """iputils' arping takes whole seconds (``-i 0.2`` is refused): at least 1."""
    return max(1, math.ceil(interval))


def arping_argv(
    flavour: Method, arping: str, interface: str, ip: str, count: int, interval: float
) -> list[str]:
    if flavour == Method.HABETS:
        every = f"{interval:g}"
        return [arping, "-U", "-c", f"{count}", "-W", every, "-i", interface, "-S", ip, ip]
    if flavour == Method.IPUTILS:
        every = f"{iputils_interval(interval)}"
        return [arping, "-U", "-c", f"{count}", "-i", every, "-I", interface, "-s", ip, ip]
    raise ValueError(f"not an arping flavour: {flavour}")


def arping_deadline(flavour: Method, count: int, interval: float, timeout: float) -> float:
    """How long arping may run: ``timeout``, or for iputils' whole seconds (it also waits
    one interval after the last request) what that takes, plus a second."""
    if flavour == Method.IPUTILS:
        return max(timeout, count * iputils_interval(interval) + 1.0)
    return timeout


def arping_sent(flavour: Method, output: str) -> int | None:
    """How many requests arping says it sent, or None when it does not say."""
    found = (HABETS_SENT if flavour == Method.HABETS else IPUTILS_SENT).search(output)
    return int(found.group(1)) if found else None


def garp_frame(mac: bytes, ip: str) -> bytes:
    """A broadcast Ethernet frame carrying a gratuitous ARP request for ``ip`` from ``mac``:
    14 bytes of Ethernet header and 28 of ARP, sender and target address both ``ip``."""
    address = ipaddress.IPv4Address(ip).packed
    ethernet = BROADCAST + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, 1) + mac + address + b"\x00" * 6 + address
    return ethernet + arp


def in_namespace(netns: str | None, function: Callable[[], T], timeout: float) -> T:
    """``function()`` run in network namespace ``netns`` (an ``ip netns`` name; None: ours).

    A socket keeps the namespace it was made in, so ``function`` may return one for use
    from any thread. It runs in a short-lived thread that enters the namespace alone."""
    if netns is None:
        return function()
    result: Future[T] = Future()

    def run() -> None:
        try:
            fd = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY)
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, f"setns: {os.strerror(code)}")
            finally:
                os.close(fd)
            result.set_result(function())
        except BaseException as exc:
            result.set_exception(exc)

    threading.Thread(target=run, name=f"netns-{netns}", daemon=True).start()
    return result.result(timeout=timeout)


def _raw_socket(interface: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    try:
        sock.bind((interface, ETH_P_ARP))
    except BaseException:
        sock.close()
        raise
    return sock


def send_raw(
    interface: str, ip: str, count: int, interval: float, timeout: float, netns: str | None
) -> int:
    """Send the gratuitous ARP ``count`` times on a raw socket; returns how many went."""
    deadline = time.monotonic() + timeout
    try:
        sock = in_namespace(netns, lambda: _raw_socket(interface), timeout)
    except FileNotFoundError:
        raise HostNetworkError(f"netns {netns} does not exist") from None
    except TimeoutError:
        raise HostNetworkError(f"no raw socket within {timeout:g}s") from None
    except OSError as exc:
        if exc.errno == errno.ENODEV:
            raise HostNetworkError(f"interface {interface} does not exist") from None
        if exc.errno == errno.EPERM:
            raise HostNetworkError("a raw socket needs CAP_NET_RAW (run as root)") from None
        raise HostNetworkError(f"raw socket on {interface}: {exc.strerror}") from None
    sent = 0
    with contextlib.closing(sock):
        mac = sock.getsockname()[4]
        if len(mac) != 6:
            raise HostNetworkError(f"interface {interface} has no Ethernet address")
        frame = garp_frame(mac, ip)
        for n in range(count):
            if n:
                left = deadline - time.monotonic()
                if left < interval:
                    raise HostNetworkError(
                        f"sent {sent} of {count} within {timeout:g}s (interval {interval:g}s)"
                    )
                time.sleep(interval)
            try:
                sock.send(frame)
            except OSError as exc:
                raise HostNetworkError(f"raw socket on {interface}: {exc.strerror}") from None
            sent += 1
    return sent


def announce(
    interface: str,
    ip: str,
    *,
    count: int,
    interval: float,
    timeout: float,
    netns: str | None = None,
    method: Method = Method.AUTO,
) -> Method:
    """Send the gratuitous ARP for ``ip`` on ``interface`` (in ``netns``), by ``method``;
    returns the method used. Raises HostNetworkError (without the ``cannot announce``
    context, which the caller adds) when it was not sent ``count`` times."""
    arping: str | None = None
    if method in (Method.AUTO, Method.HABETS, Method.IPUTILS):
        detected = detect_arping()
        if detected is not None and method in (Method.AUTO, detected[1]):
            arping, method = detected
        elif method != Method.AUTO:
            raise HostNetworkError(f"{method} is not installed")
        else:
            method = Method.RAW
    if method == Method.RAW:
        send_raw(interface, ip, count, interval, timeout, netns)
        return method
    assert arping is not None
    argv = arping_argv(method, arping, interface, ip, count, interval)
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    deadline = arping_deadline(method, count, interval, timeout)
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=deadline)
    except FileNotFoundError as exc:
        raise HostNetworkError(f"{exc.filename} is not installed") from None
    except subprocess.TimeoutExpired:
        raise HostNetworkError(f"arping did not finish within {deadline:g}s") from None
    sent = arping_sent(method, result.stdout)
    if sent is None or sent < count:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise HostNetworkError(
            f"arping exited {result.returncode}" + (f": {lines[-1]}" if lines else "")
        )
    return method
