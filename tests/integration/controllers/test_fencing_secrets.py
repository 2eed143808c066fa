"""A Node whose spec names a fence password that is not stored (an older version's half-done
write): the fence fails saying so, in an event and the Node's condition, and no fence agent
is ever given the mask as the password."""

from __future__ import annotations

import pytest

from controllers.fencing import FenceController, FenceStepFailed
from controllers.scheduler import Scheduler
from hypervisor.fence.base import FenceAgent, PowerState
from schemas import ClusterSpec, FenceConfig, Node, parse_resource
from schemas.node import NodeStatus
from zkstore import Store, paths
from zkstore.events import EventLog
from zkstore.secrets import SecretMissing


class _AlwaysOff(FenceAgent):
    def power_off(self) -> None:
        pass

    def power_on(self) -> None:
        pass

    def power_status(self) -> PowerState:
        return PowerState.OFF

    @property
    def description(self) -> str:
        return "a test agent"


def test_a_fence_without_its_stored_password_fails_clearly_and_never_tries_the_mask(
    store: Store,
) -> None:
    fence = {"agent": "ipmi", "address": "10.0.0.9", "user": "root", "password": "hunter2"}
    node = parse_resource(
        {
            "apiVersion": "pvc/v1",
            "kind": "Node",
            "metadata": {"name": "hv2"},
            "spec": {"fence": fence},
        }
    )
    store.create(node)
    store.write_status(Node, "hv2", NodeStatus())
    store.client.delete(store.path(paths.secret("nodes", "hv2")))
    with pytest.raises(SecretMissing, match=r"spec\.fence\.password"):
        store.reveal(store.get(Node, "hv2"))

    given: list[str | None] = []

    def agents(_name: str, config: FenceConfig) -> FenceAgent:
        given.append(config.password.get_secret_value() if config.password else None)
        return _AlwaysOff()

    epoch = store.bump_epoch("test")
    controller = FenceController(store, "hv1", epoch, Scheduler(store, epoch), agents=agents)
    with pytest.raises(FenceStepFailed, match=r"no stored spec\.fence\.password"):
        controller.fence(store.get(Node, "hv2"), ClusterSpec())
    assert given == []  # no agent was made, least of all with "********"
    failed = [e for e in EventLog(store).list("Node", "hv2") if e.reason == "FenceFailed"]
    assert failed and "no stored spec.fence.password" in failed[-1].message
    status = store.get(Node, "hv2").status
    assert status is not None
    fenced = next(c for c in status.conditions if c.type == "Fenced")
    assert (fenced.status.value, fenced.reason) == ("False", "FenceFailed")
    assert "apply the Node again" in fenced.message
