from pathlib import Path

import libvirt
import pytest

from hypervisor import write_test_host_xml


def test_uri_names_the_absolute_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    uri = write_test_host_xml("node1.xml", memory_mib=2048, cpus=4)
    assert uri == f"test://{tmp_path / 'node1.xml'}"


def test_libvirt_reports_the_written_memory_and_cpus(tmp_path: Path) -> None:
    uri = write_test_host_xml(tmp_path / "node1.xml", memory_mib=3072, cpus=6)
    conn = libvirt.open(uri)
    try:
        model, memory_mib, cpus, _mhz, nodes, sockets, cores, threads = conn.getInfo()
        assert (memory_mib, cpus) == (3072, 6)
        assert (nodes, sockets, cores, threads) == (1, 1, 6, 1)
        assert model == "x86_64"
        assert conn.listAllDomains(0) == []
    finally:
        conn.close()


def test_a_path_with_a_space_gives_a_usable_uri(tmp_path: Path) -> None:
    folder = tmp_path / "a node"
    folder.mkdir()
    uri = write_test_host_xml(folder / "host.xml", memory_mib=1024, cpus=2)
    conn = libvirt.open(uri)
    try:
        assert conn.getInfo()[1:3] == [1024, 2]
    finally:
        conn.close()
