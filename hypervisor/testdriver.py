"""Host files for libvirt's test driver: one simulated node per file.

Each libvirt.open() of test:///<file> starts from the file with state of
its own, so one process can simulate many nodes that share nothing.
"""

from __future__ import annotations

import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path

# libvirt 9.0's test driver reports the host as i686 unless told otherwise;
# x86_64 is what the nodes it stands in for are.
TEST_HOST_CPU_MODEL = "x86_64"


def write_test_host_xml(path: str | Path, memory_mib: int, cpus: int) -> str:
    """Write a test-driver host with no domains; return its test:// URI.

    The driver multiplies nodes x sockets x cores x threads for the CPU
    count and falls back to its own defaults (16 CPUs) for any of the four
    left out, so all four are written. <memory> is in KiB.
    """
    node = ET.Element("node")
    cpu = ET.SubElement(node, "cpu")
    ET.SubElement(cpu, "model").text = TEST_HOST_CPU_MODEL
    ET.SubElement(cpu, "nodes").text = "1"
    ET.SubElement(cpu, "sockets").text = "1"
    ET.SubElement(cpu, "cores").text = str(cpus)
    ET.SubElement(cpu, "threads").text = "1"
    ET.SubElement(cpu, "active").text = str(cpus)
    ET.SubElement(node, "memory").text = str(memory_mib * 1024)
    ET.indent(node)

    host_file = Path(path).absolute()
    host_file.write_text(ET.tostring(node, encoding="unicode") + "\n", encoding="utf-8")
    # libvirt parses the URI strictly: a space in the path must be escaped.
    return "test://" + urllib.parse.quote(str(host_file))
