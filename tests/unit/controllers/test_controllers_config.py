"""pvcnoded's config file: the network section (floating addresses) and its error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from controllers.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pvcnoded.yaml"
    path.write_text(text)
    return path


def test_floating_addresses_and_namespace_are_read(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            "node: hv1\nnetwork:\n  namespace: hv1net\n  floatingAddresses:\n"
            "    - {address: 10.0.0.254/24, interface: brupstream}\n"
            "    - {address: 'fd00::fe/64', interface: brcluster}\n",
        )
    )
    assert config.network.namespace == "hv1net"
    floating = [fa.floating() for fa in config.network.floating_addresses]
    assert [(f.ip, f.prefixlen, f.interface) for f in floating] == [
        ("10.0.0.254", 24, "brupstream"),
        ("fd00::fe", 64, "brcluster"),
    ]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{address: 10.0.0.254, interface: br0}", "needs a prefix length"),
        ("{address: 10.0.0.300/24, interface: br0}", "10.0.0.300/24"),
        ("{address: 10.0.0.1/24, interface: a-very-long-interface}", "1 to 15 bytes"),
        ("{address: 10.0.0.1/24}", "interface"),
    ],
)
def test_a_bad_floating_address_names_the_field(tmp_path: Path, entry: str, message: str) -> None:
    path = write(tmp_path, f"node: hv1\nnetwork:\n  floatingAddresses:\n    - {entry}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "network.floatingAddresses.0" in str(err.value)
    assert message in str(err.value)


def test_metrics_default_to_loopback_9370_and_port_0_turns_them_off(tmp_path: Path) -> None:
    default = load_config(write(tmp_path, "node: hv1\n")).metrics
    assert (default.listen, default.port) == ("127.0.0.1", 9370)
    off = load_config(write(tmp_path, "node: hv1\nmetrics: {listen: '::', port: 0}\n")).metrics
    assert (off.listen, off.port) == ("::", 0)


@pytest.mark.parametrize(
    ("entry", "field", "message"),
    [
        ("{listen: myhost}", "metrics", "listen must be an IP address"),
        ("{port: 70000}", "metrics.port", "less than or equal to 65535"),
    ],
)
def test_a_bad_metrics_setting_names_the_field(
    tmp_path: Path, entry: str, field: str, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, f"node: hv1\nmetrics: {entry}\n"))
    assert f": {field}: " in str(err.value)
    assert message in str(err.value)
