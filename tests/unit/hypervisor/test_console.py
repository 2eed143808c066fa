"""A domain's serial console as the node reads it (hypervisor/console.py): the tail of the
log file libvirt appends to, read again only when the file changed; where the file is for
each kind of URI; the test driver's made-up console; the <log> element in the domain XML."""

from __future__ import annotations

import os
from pathlib import Path

from hypervisor import DomainSpec, render_domain_xml
from hypervisor.console import (
    SYSTEM_LOG_DIR,
    ConsoleFiles,
    SimulatedConsoles,
    console_log_dir,
    console_log_path,
)


def test_the_tail_is_the_newest_bytes_and_the_end_counts_all(tmp_path: Path) -> None:
    log = tmp_path / "web-console.log"
    log.write_bytes(b"boot\n" + bytes(range(256)) * 10)
    files = ConsoleFiles()
    tail = files.tail(str(log), 100)
    assert tail is not None
    assert tail.end == 5 + 2560
    assert tail.data == log.read_bytes()[-100:]  # bytes as written, not decoded


def test_an_unchanged_file_is_not_read_again(tmp_path: Path) -> None:
    log = tmp_path / "web-console.log"
    log.write_bytes(b"one\n")
    files = ConsoleFiles()
    first = files.tail(str(log), 64)
    assert files.tail(str(log), 64) is first  # from the cache: size and mtime unchanged
    with log.open("ab") as out:
        out.write(b"two\n")
    os.utime(log, ns=(0, 10**18))
    second = files.tail(str(log), 64)
    assert second is not None and second.data == b"one\ntwo\n" and second.end == 8


def test_no_file_means_no_console(tmp_path: Path) -> None:
    assert ConsoleFiles().tail(str(tmp_path / "absent.log"), 64) is None


def test_where_each_hypervisor_keeps_console_logs() -> None:
    assert console_log_dir("qemu:///system") == SYSTEM_LOG_DIR
    assert console_log_dir("qemu+unix:///system?socket=/tmp/x.sock") == SYSTEM_LOG_DIR
    session = console_log_dir("qemu:///session")
    assert session is not None and session.endswith("/.cache/libvirt/qemu/log")
    assert console_log_dir("qemu+ssh://other-host/system") is None  # not readable here
    assert console_log_dir("test:///default") is None
    assert console_log_path("/logs", "web") == "/logs/web-console.log"


def test_the_test_drivers_console_is_a_line_per_boot() -> None:
    consoles = SimulatedConsoles()
    assert consoles.tail("web", 64) is None
    consoles.started("web")
    consoles.started("web")
    tail = consoles.tail("web", 1000)
    assert tail is not None
    assert tail.data.decode().splitlines() == [
        "[pvc test console] web boot 1 (the test driver runs no guest)",
        "[pvc test console] web boot 2 (the test driver runs no guest)",
    ]
    assert tail.end == len(tail.data)
    short = consoles.tail("web", 10)
    assert short is not None and len(short.data) == 10 and short.end == tail.end
    consoles.forget("web")
    assert consoles.tail("web", 64) is None


def test_the_serial_console_is_logged_where_asked() -> None:
    spec = DomainSpec(name="web", uuid="", vcpus=1, memory_mib=64, owner_tag="/pvc")
    xml = render_domain_xml(spec, "kvm", "/var/log/libvirt/qemu/web-console.log")
    assert '<log file="/var/log/libvirt/qemu/web-console.log" append="on" />' in xml
    assert "<log " not in render_domain_xml(spec, "test")
