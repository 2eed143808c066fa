"""controllers.pool_status: a pool's status is written again for a change of shape at once,
for space numbers that moved by more than SPACE_STEP at once, and for drift at most every
SPACE_REFRESH (every node reports the free bytes of a shared pool at every heartbeat)."""

from __future__ import annotations

from controllers.pool_status import _shape, _space_change
from schemas import PoolNodeState, StoragePoolStatus

GIB = 2**30


def status(free: int, reachable: bool = True, node_free: int | None = None) -> StoragePoolStatus:
    return StoragePoolStatus(
        capacity=100 * GIB,
        free=free,
        nodes=[
            PoolNodeState(
                node="n1",
                reachable=reachable,
                capacity=100 * GIB,
                free=free if node_free is None else node_free,
            )
        ],
    )


def test_equal_space_is_no_change_and_a_small_drift_is_drift() -> None:
    assert _space_change(status(50 * GIB), status(50 * GIB)) == "none"
    assert _space_change(status(50 * GIB + 4096), status(50 * GIB)) == "drift"


def test_a_move_beyond_one_percent_of_the_capacity_counts_at_once() -> None:
    assert _space_change(status(48 * GIB), status(50 * GIB)) == "moved"
    assert _space_change(status(50 * GIB, node_free=40 * GIB), status(50 * GIB)) == "moved"


def test_reachability_is_shape_not_space() -> None:
    assert _shape(status(50 * GIB)) == _shape(status(49 * GIB))
    assert _shape(status(50 * GIB, reachable=False)) != _shape(status(50 * GIB))
