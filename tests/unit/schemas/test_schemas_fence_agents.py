"""spec.fence for the fence-agents agent: which agents and options the schema takes."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from schemas import FenceConfig
from schemas.fence_agents import split_address
from schemas.node import CHECK_FENCE_AGENT_INSTALLED


def fence(**fields: Any) -> dict[str, Any]:
    return {"agent": "fence-agents", "fenceAgent": "fence_ipmilan", "address": "h", **fields}


def test_a_fence_agents_config_reads_and_hides_its_password() -> None:
    config = FenceConfig.model_validate(
        fence(user="admin", password="s3cret", options={"lanplus": "1", "power_timeout": "30"})
    )
    assert config.fence_agent == "fence_ipmilan" and config.options["lanplus"] == "1"
    wire = config.model_dump(mode="json", by_alias=True)
    assert wire["password"] == "********" and wire["fenceAgent"] == "fence_ipmilan"


@pytest.mark.parametrize(
    ("fields", "where", "says"),
    [
        ({"fenceAgent": None}, (), "needs 'fenceAgent'"),
        ({"fenceAgent": "ipmitool"}, ("fenceAgent",), "fence_<lowercase"),
        ({"fenceAgent": "/usr/bin/fence_ipmilan"}, ("fenceAgent",), "/usr/sbin/fence_<name>"),
        ({"fenceAgent": "fence_ipmilan; rm -rf /"}, ("fenceAgent",), "fence_<lowercase"),
        ({"options": {"password": "x"}}, ("options",), "PVC writes"),
        ({"options": {"debug_file": "/tmp/x"}}, ("options",), "could hold the password"),
        ({"options": {"plug": "1\naction=reboot"}}, ("options",), "one line"),
        ({"options": {"--lanplus": "1"}}, ("options",), "lowercase letters"),
        ({"password": "pw\naction=reboot"}, (), "'password' must be one line"),
        ({"user": "admin\naction=reboot"}, (), "'user' must be one line"),
    ],
)
def test_bad_fence_agents_configs_name_the_field(
    fields: dict[str, Any], where: tuple[str, ...], says: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        FenceConfig.model_validate(fence(**fields))
    error = caught.value.errors()[0]
    assert tuple(error["loc"]) == where and says in error["msg"]


def test_installed_is_checked_only_when_asked() -> None:
    missing = fence(fenceAgent="fence_surely_not_installed")
    assert FenceConfig.model_validate(missing).fence_agent == "fence_surely_not_installed"
    with pytest.raises(ValidationError, match="is not installed here"):
        FenceConfig.model_validate(missing, context={CHECK_FENCE_AGENT_INSTALLED: True})


@pytest.mark.parametrize(
    ("address", "host", "port"),
    [
        ("10.0.0.9", "10.0.0.9", None),
        ("10.0.0.9:6230", "10.0.0.9", "6230"),
        ("fd00::9", "fd00::9", None),
        ("[fd00::9]:6230", "fd00::9", "6230"),
        ("bmc.example", "bmc.example", None),
    ],
)
def test_a_bmc_address_splits_into_host_and_port(address: str, host: str, port: str | None) -> None:
    assert split_address(address) == (host, port)


@pytest.mark.parametrize("address", ["bmc:port", "bmc:0", "bmc:70000", "[fd00::9]:x"])
def test_a_bmc_address_with_a_bad_port_is_refused(address: str) -> None:
    with pytest.raises(ValidationError, match="port must be a number"):
        FenceConfig(agent="ipmi", address=address, user="u")
