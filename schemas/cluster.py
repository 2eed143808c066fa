"""Cluster: the singleton ``cluster`` holding cluster-wide settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from schemas.meta import DnsLabel, Model, ObjectMeta, Status
from schemas.quantity import Duration, to_seconds
from schemas.resource import Resource
from schemas.vm import PlacementPolicy

CLUSTER_NAME = "cluster"


class FencingConfig(Model):
    keepalive_interval: Duration = "5s"
    fence_intervals: int = Field(default=6, ge=1, le=100)
    saving_throws: int = Field(default=6, ge=0, le=100)
    successful_fence: Literal["migrate", "none"] = "migrate"
    failed_fence: Literal["none", "migrate"] = "none"
    self_fence_after: Duration | None = None

    @field_validator("keepalive_interval")
    @classmethod
    def _positive_interval(cls, value: str) -> str:
        if to_seconds(value) <= 0:
            raise ValueError("keepaliveInterval must be greater than zero")
        return value

    def dead_after(self) -> float:
        """Seconds of silence after which a node counts as dead."""
        return to_seconds(self.keepalive_interval) * self.fence_intervals

    def fence_after(self) -> float:
        """Seconds of silence after which the primary fences and then recovers."""
        return to_seconds(self.keepalive_interval) * (self.fence_intervals + self.saving_throws)

    def earliest_recovery(self) -> float:
        """The earliest moment, after a node is cut off, at which the primary may fence it
        and recover its VMs: its lease can be gone at once (a session expiry), and then two
        silent intervals make it dead, or its whole heartbeat window, whichever is first;
        then its saving throws."""
        interval = to_seconds(self.keepalive_interval)
        return interval * (min(self.fence_intervals, 2) + self.saving_throws)

    @model_validator(mode="after")
    def _no_recovery_without_power_off(self) -> FencingConfig:
        if self.failed_fence == "migrate":
            raise ValueError(
                "failedFence: migrate is refused: a node whose power-off was not confirmed may "
                "still run its VMs, and starting them elsewhere would run two copies; use none "
                "(the fence is retried until a power-off is confirmed)"
            )
        return self

    @model_validator(mode="after")
    def _self_fence_before_recovery(self) -> FencingConfig:
        # A cut-off node must have killed its domains before anyone else may start them.
        if self.self_fence_after is not None:
            limit = self.earliest_recovery()
            if to_seconds(self.self_fence_after) >= limit:
                raise ValueError(
                    f"selfFenceAfter ({self.self_fence_after}) must be below keepaliveInterval x "
                    f"(min(fenceIntervals, 2) + savingThrows) = {limit:g}s: the earliest a cut-off "
                    "node can be recovered elsewhere (its lease may expire at once, then two "
                    "silent intervals and its saving throws)"
                )
        return self


class MaxParallel(Model):
    cluster: int = Field(default=4, ge=1)
    per_node: int = Field(default=1, ge=1)


class MigrationConfig(Model):
    policy: PlacementPolicy = PlacementPolicy.MEM
    """The placement policy of VMs that name none."""
    max_parallel: MaxParallel = Field(default_factory=MaxParallel)


class ClusterSpec(Model):
    maintenance: bool = False
    fencing: FencingConfig = Field(default_factory=FencingConfig)
    migration: MigrationConfig = Field(default_factory=MigrationConfig)
    primary: DnsLabel | None = None


class ClusterStatus(Status):
    primary: str | None = None
    epoch: int | None = None


class Cluster(Resource):
    KIND = "Cluster"
    PLURAL = "clusters"
    SHORT_NAMES = ("cluster", "clusters")

    kind: Literal["Cluster"] = "Cluster"
    metadata: ObjectMeta
    spec: ClusterSpec = Field(default_factory=ClusterSpec)
    status: ClusterStatus | None = None

    @model_validator(mode="after")
    def _singleton(self) -> Cluster:
        if self.metadata.name != CLUSTER_NAME:
            raise ValueError(
                f"the Cluster object is a singleton and must be named {CLUSTER_NAME!r}"
            )
        return self
