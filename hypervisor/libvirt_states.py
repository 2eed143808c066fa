"""libvirt's domain states and shut-off reasons, as DomainDriver reports them."""

from __future__ import annotations

import libvirt

from hypervisor.domain import DomainState, StopReason

_STOP_REASONS = {
    libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN: StopReason.GUEST_SHUTDOWN,
    libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED: StopReason.DESTROYED,
    libvirt.VIR_DOMAIN_SHUTOFF_CRASHED: StopReason.CRASHED,
    libvirt.VIR_DOMAIN_SHUTOFF_FAILED: StopReason.CRASHED,
    libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED: StopReason.MIGRATED,
}

_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: DomainState.RUNNING,
    # Blocked means waiting on a resource (idle vCPUs, I/O): the guest runs.
    libvirt.VIR_DOMAIN_BLOCKED: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: DomainState.PAUSED,
    # Suspended to RAM by the guest: its memory is alive, so it is held, like paused.
    libvirt.VIR_DOMAIN_PMSUSPENDED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: DomainState.SHUTTING_DOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: DomainState.SHUTOFF,
    libvirt.VIR_DOMAIN_CRASHED: DomainState.CRASHED,
}


def domain_state_of(state: int, reason: int) -> DomainState:
    # QEMU reports a guest crash with on_crash=destroy (libvirt's default) as
    # shut off for reason "crashed"; RerunOnFailure needs to see it as such.
    if state == libvirt.VIR_DOMAIN_SHUTOFF and reason == libvirt.VIR_DOMAIN_SHUTOFF_CRASHED:
        return DomainState.CRASHED
    return _STATES.get(state, DomainState.OTHER)


def stop_reason_of(reason: int) -> StopReason:
    """Why a shut-off domain stopped, from libvirt's shut-off reason."""
    return _STOP_REASONS.get(reason, StopReason.OTHER)
