"""Annotations through which imperative verbs reach the controllers.

A verb writes only spec, one of these annotations, or the placement record;
the controllers act once per new annotation value (like ``kubectl rollout
restart``), so the value is a fresh timestamp each time.
"""

from __future__ import annotations

RESTART = "pvc.io/restart"
"""Restart the VM once: graceful shutdown (up to shutdownTimeout), then start."""

FORCE_STOP = "pvc.io/force-stop"
"""With runStrategy Halted: power the VM off at once instead of waiting for ACPI."""

DOMAIN_FINALIZER = "pvc.io/domain"
"""On every VM: the node that holds its domain shuts it down (ACPI, then forced off at
shutdownTimeout) and undefines it before the object may go; the primary's scheduler
removes it from a VM that no node holds. See docs/resources.md, "Deleting a VM"."""

DELETE_VOLUMES = "pvc.io/delete-volumes"
"""Set by a graceful delete asked with ``deleteVolumes``, to the VM's deletionTimestamp: the
VM's volumes in storage pools are marked for deletion in the transaction that removes the
object. Only a value equal to the deletionTimestamp counts (a copy restored from a backup
onto a new object never does)."""

FLUSHED_ON_SHUTDOWN = "pvc.io/flushed-on-shutdown"
"""On a Node: its daemon flushed it as it stopped (``flushOnShutdown``) at this time; the
daemon unflushes it when it starts again, and removes this."""

# The reason a verb writes into the placement record, so the primary can tell a
# manual placement (which it must leave alone) from its own scheduling.
PLACEMENT_MIGRATE = "migrate"
PLACEMENT_UNMIGRATE = "unmigrate"
PLACEMENT_MOVE = "move"
PLACEMENT_FLUSH = "flush"
"""Moved off a draining node by the primary; placement.migration names that node."""
PLACEMENT_UNFLUSH = "unflush"
"""Returned to the node a flush moved it from."""
