"""Gratuitous ARP without a network: which arping printed what (their real --help and -V
outputs, captured from Debian 12's arping 2.23 and iputils-arping 20221126, which cannot
be installed together), the command line each flavour gets, how its output is read, and
the raw frame, byte by byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from hypervisor.hostnet.garp import (
    Method,
    arping_argv,
    arping_deadline,
    arping_sent,
    flavour_of,
    garp_frame,
)

DATA = Path(__file__).parent / "data"
HABETS_HELP = (DATA / "arping-habets-help.txt").read_text()
IPUTILS_HELP = (DATA / "arping-iputils-help.txt").read_text()
IPUTILS_VERSION = "arping from iputils 20221126\nlibcap: yes, IDN: yes, NLS: no\n"


@pytest.mark.parametrize(
    ("text", "flavour"),
    [
        (HABETS_HELP, Method.HABETS),
        (IPUTILS_HELP, Method.IPUTILS),
        (IPUTILS_VERSION, Method.IPUTILS),
        # BusyBox's applet (not installed as arping on Debian): unknown, so the raw socket
        ("Usage: arping [-fqbDUA] [-c CNT] [-w TIMEOUT] [-I IFACE] [-s SRC_IP] DST_IP", None),
        ("", None),
    ],
)
def test_the_flavour_is_read_from_its_own_words(text: str, flavour: Method | None) -> None:
    assert flavour_of(text) == flavour


def test_each_flavour_gets_its_own_options() -> None:
    habets = arping_argv(Method.HABETS, "/usr/sbin/arping", "eth0", "10.0.0.9", 2, 0.2)
    assert habets == [
        "/usr/sbin/arping", "-U", "-c", "2", "-W", "0.2", "-i", "eth0", "-S", "10.0.0.9", "10.0.0.9"
    ]  # fmt: skip
    # iputils' -i takes whole seconds only ("invalid argument: '0.2'"): 0.2 s becomes 1 s,
    # and its deadline grows to what that takes (it waits one interval after the last).
    iputils = arping_argv(Method.IPUTILS, "/usr/bin/arping", "eth0", "10.0.0.9", 3, 0.2)
    assert iputils == [
        "/usr/bin/arping", "-U", "-c", "3", "-i", "1", "-I", "eth0", "-s", "10.0.0.9", "10.0.0.9"
    ]  # fmt: skip
    assert arping_deadline(Method.IPUTILS, 3, 0.2, 2.0) == 4.0
    assert arping_deadline(Method.IPUTILS, 2, 1.5, 9.0) == 9.0
    assert arping_deadline(Method.HABETS, 3, 0.2, 2.0) == 2.0
    # Each option the argv uses is one its own --help lists.
    for option in ("-U", "-c", "-W", "-i", "-S"):
        assert option in HABETS_HELP
    for option in ("-U", "-c <count>", "-i <interval>", "-I <device>", "-s <source>"):
        assert option in IPUTILS_HELP


def test_what_each_flavour_says_it_sent() -> None:
    habets = "ARPING 10.0.0.9\n\n--- 10.0.0.9 statistics ---\n2 packets transmitted, 0 packets received, 100% unanswered (0 extra)\n"  # noqa: E501
    iputils = "ARPING 10.0.0.9 from 10.0.0.9 eth0\nSent 2 probes (2 broadcast(s))\nReceived 0 response(s)\n"  # noqa: E501
    assert arping_sent(Method.HABETS, habets) == 2
    assert arping_sent(Method.IPUTILS, iputils) == 2
    assert arping_sent(Method.IPUTILS, "arping: Device eth9 not available.\n") is None


def test_the_raw_frame_is_a_42_byte_gratuitous_arp_request() -> None:
    mac = bytes.fromhex("020000aabbcc")
    frame = garp_frame(mac, "10.200.0.254")
    assert len(frame) == 42
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == mac and frame[12:14] == b"\x08\x06"
    arp = frame[14:]
    assert arp[:8] == bytes.fromhex("0001 0800 06 04 0001")  # Ethernet/IPv4, request
    assert arp[8:14] == mac and arp[14:18] == bytes([10, 200, 0, 254])  # sender
    assert arp[18:24] == b"\0" * 6 and arp[24:28] == bytes([10, 200, 0, 254])  # target
