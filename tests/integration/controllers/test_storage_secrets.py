"""An rbd StoragePool whose key is not stored: each node reports the pool unreachable saying
so (and what to do), and never hands the mask to Ceph or libvirt as the key."""

from __future__ import annotations

from controllers.storage import PoolProber
from hypervisor.libvirt_driver import LibvirtDriver
from schemas import StoragePool, parse_resource
from tests.helpers import wait_for
from zkstore import Store, paths

KEY = "AQBvaBFZAAAAABAA9VHgwCg3rWn8fMaX8KL01A=="


def test_a_pool_without_its_stored_key_is_unreachable_saying_why(store: Store) -> None:
    rbd = {"monitors": ["127.0.0.1:1"], "pool": "rbd", "user": "pvc", "key": KEY}
    pool = parse_resource(
        {
            "apiVersion": "pvc/v1",
            "kind": "StoragePool",
            "metadata": {"name": "ceph"},
            "spec": {"type": "rbd", "rbd": rbd},
        }
    )
    assert isinstance(pool, StoragePool)
    store.create(pool)
    store.client.delete(store.path(paths.secret("storagepools", "ceph")))

    prober = PoolProber(store, LibvirtDriver("test:///default"), "n1", timeout=2.0)
    prober.pools.start()
    try:
        wait_for(lambda: prober.pools.keys() == ["ceph"], 10, "the pool in the informer")
        [state] = prober.look()
    finally:
        prober.pools.close()
    assert not state.reachable
    assert state.message is not None and "no stored spec.rbd.key" in state.message
    assert "apply the StoragePool again" in state.message
