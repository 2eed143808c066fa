"""Which VMs a node's periodic resync reconciles.

Events drive the node's VM controller: libvirt's lifecycle events, the node index's
watch and each spec's watch. The resync is the net under them, for an event that never
came (libvirtd restarted, a watch lost with a session). Reconciling every VM on every
pass made an idle node's work grow with its VMs: two ZooKeeper round trips and a libvirt
lookup per VM every 30 s, the largest part of an idle node's CPU (issue 16).

So a pass compares instead: one listing of the domains, set against the one the pass
before saw and against the VMs placed here. A VM is reconciled when something the
controller acts on changed without an event having to say so: a domain appeared, went
or changed state, or a VM was placed here or left; unless the VM is placed here and its
last reconcile ended seeing its domain as the listing shows it now (no event was missed).
Every ``full_every``-th pass reconciles every VM anyway, so whatever no listing shows
(a status written over, a reconcile that settled too early) is still caught, only later.
"""

from __future__ import annotations

import logging
import threading

from hypervisor import DomainDriver, DomainState, HypervisorError

log = logging.getLogger(__name__)

FULL_RESYNC_EVERY = 10
"""Every 10th pass reconciles every VM: with the default 30 s period, every 5 minutes."""


class ResyncPlan:
    def __init__(self, full_every: int = FULL_RESYNC_EVERY) -> None:
        if full_every < 1:
            raise ValueError("full_every must be at least 1")
        self.full_every = full_every
        self.passes = 0
        """Passes planned so far."""
        self._domains: dict[str, DomainState] | None = None
        self._placed: set[str] = set()
        # name -> the domain state its last reconcile left it in, when that reconcile said
        # (observe); a reconcile under way has none (forget).
        self._observed: dict[str, DomainState] = {}
        self._lock = threading.Lock()

    def observe(self, name: str, state: DomainState) -> None:
        """A reconcile of ``name`` ended with its domain in ``state``, placed here."""
        with self._lock:
            self._observed[name] = state

    def forget(self, name: str) -> None:
        """A reconcile of ``name`` begins (or the VM left): what it saw before is old."""
        with self._lock:
            self._observed.pop(name, None)

    def keys(self, placed: set[str], domains: dict[str, DomainState] | None) -> set[str]:
        """The VMs this pass reconciles. ``placed``: the VMs the node index places here;
        ``domains``: this node's PVC domains and their states, or None when they could not
        be listed (then every VM placed here is reconciled, as nothing can be compared)."""
        self.passes += 1
        full = self.passes % self.full_every == 0
        before_domains, before_placed = self._domains, self._placed
        self._domains, self._placed = domains, set(placed)
        if domains is None:
            return set(placed)
        everything = set(placed) | set(domains)
        if full:
            return everything
        if before_domains is None:
            # The first pass has no listing to compare with: every VM, but those whose
            # reconcile since the daemon started saw them as they are now (the first pass
            # of every node came in the middle of a converge and reconciled each VM once
            # more, issue 16).
            changed = everything
        else:
            changed = placed ^ before_placed
            for name in set(domains) | set(before_domains):
                if domains.get(name) != before_domains.get(name):
                    changed.add(name)
        # What a reconcile already saw as it is now needs no other: a VM placed and started
        # since the last pass was reconciled by its events (every new VM was reconciled
        # once more by the next pass, issue 16). A VM that left is never skipped.
        with self._lock:
            seen = {
                name
                for name in changed
                if name in placed and name in domains and self._observed.get(name) == domains[name]
            }
        return changed - seen


def domain_states(driver: DomainDriver, owner_tag: str, node: str) -> dict[str, DomainState] | None:
    """This cluster's domains on ``node`` and their states; None when libvirt cannot say."""
    try:
        return {d.name: d.state for d in driver.list_managed() if d.owner_tag == owner_tag}
    except HypervisorError as exc:
        log.warning("event=list_domains_failed node=%s error=%s", node, exc)
        return None
