"""Where an apply's time goes, hop by hop: each VM's chain read back from ZooKeeper's own
timestamps once it ran, for PVC's VMs and the chain floor's alike.

ZooKeeper stamps every znode with the server's wall clock when it is created (``ctime``)
and last written (``mtime``), in milliseconds. Read after the run (the reads are not
timed), they give each step's moment without tracing a single process:

- ``spec``: the VM's znode created (the API's write; the floor's ``create``);
- ``placed``: its placement znode created (the scheduler's transaction);
- ``claimed``: the node's holder znode created (its claim, the one-copy rule);
- ``starting``: PVC only: the status znode created, by the Starting write (the fencing
  token's gate, made before the start);
- ``running``: the status written Running (PVC's second status write; the floor creates
  its status Running).

Each is given in ms after the apply was sent (the bench's ``time.time()`` just before the
POST). The two clocks are one only when ZooKeeper runs on this machine: with a remote
server the figures carry the clocks' offset, and ``same_clock`` says so. ZooKeeper's
millisecond stamps (each the whole millisecond it fell in, read as that millisecond's
middle) make one VM's figures coarse, ±0.5 ms; the p50 over many is what to read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from benchlib import percentile

STEPS = ("spec", "placed", "claimed", "starting", "running")


def vm_hops(
    client: Any,
    sent_wall: Mapping[str, float],
    spec_path: Callable[[str], str],
    holder_path: Callable[[str, str], str],
    node_of: Callable[[bytes], str],
    *,
    starting_write: bool,
) -> list[dict[str, Any]]:
    """Per VM of ``sent_wall`` (name -> wall-clock send time, seconds): the moment of each
    of ``STEPS`` in ms after the send, None where the znode is gone or the step not made
    (``starting_write``: the status is first written Starting, then Running). A VM's
    placement names its node (``node_of`` the placement znode's bytes); its status and
    placement are ``status`` and ``placement`` below ``spec_path``."""
    from kazoo.exceptions import NoNodeError

    rows: list[dict[str, Any]] = []
    for name, sent in sent_wall.items():
        base = spec_path(name)
        spec = client.exists_async(base)
        placement = client.get_async(f"{base}/placement")
        status = client.exists_async(f"{base}/status")
        row: dict[str, Any] = {"name": name, **dict.fromkeys(STEPS)}

        def after(ms: int, sent: float = sent) -> float:
            # A stamp is the millisecond it fell in: its middle is the unbiased moment.
            return round(ms + 0.5 - sent * 1000.0, 3)

        if (stat := spec.get()) is not None:
            row["spec"] = after(stat.ctime)
        try:
            data, stat = placement.get()
        except NoNodeError:
            data = None
        if data is not None:
            row["placed"] = after(stat.ctime)
            holder = client.exists(holder_path(name, node_of(data)))
            if holder is not None:
                row["claimed"] = after(holder.ctime)
        if (stat := status.get()) is not None:
            if not starting_write:
                row["running"] = after(stat.ctime)
            else:
                row["starting"] = after(stat.ctime)
                # Starting, then Running: a later write (none in the bench) hides it.
                row["running"] = after(stat.mtime) if stat.version == 1 else None
        rows.append(row)
    return rows


def summarize(
    rows: Sequence[Mapping[str, Any]], observed_ms: Mapping[str, float]
) -> dict[str, Any]:
    """p50 and mean of each step (ms after the send) over ``rows``, its gap to the step
    before it (``gap_p50_ms``, ``gap_mean_ms``: of each VM's own difference), and
    ``observed`` (the bench's watch saw it Running: ``observed_ms``, name -> ms after
    the send)."""
    steps = [*STEPS, "observed"]
    values: dict[str, list[float]] = {s: [] for s in steps}
    gaps: dict[str, list[float]] = {s: [] for s in steps}
    for row in rows:
        moments = {s: row.get(s) for s in STEPS}
        moments["observed"] = observed_ms.get(str(row["name"]))
        previous: float | None = 0.0
        for step in steps:
            at = moments[step]
            if at is None:
                continue
            values[step].append(at)
            if previous is not None:
                gaps[step].append(at - previous)
            previous = at
    return {
        step: {
            "count": len(values[step]),
            "p50_ms": round(percentile(values[step], 50), 2) if values[step] else None,
            "mean_ms": round(sum(values[step]) / len(values[step]), 2) if values[step] else None,
            "gap_p50_ms": round(percentile(gaps[step], 50), 2) if gaps[step] else None,
            # Two stamps' difference is whole milliseconds: the mean says more than the p50.
            "gap_mean_ms": round(sum(gaps[step]) / len(gaps[step]), 2) if gaps[step] else None,
        }
        for step in steps
        if values[step]
    }


def placement_node(data: bytes) -> str:
    """The node a PVC placement znode names."""
    return str(json.loads(data)["node"])


def line(hops: Mapping[str, Mapping[str, Any]]) -> str:
    """One line: each step's p50 (ms after the send) and, in brackets, the mean of each
    VM's own gap to the step before."""
    return "  ".join(
        f"{step} {h['p50_ms']:.1f} (+{h['gap_mean_ms']:.1f})"
        for step, h in hops.items()
        if h.get("p50_ms") is not None and h.get("gap_mean_ms") is not None
    )
