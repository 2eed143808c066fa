"""An rbd StoragePool whose key is not stored: each node reports the pool unreachable saying
so (and what to do), and never hands the mask to Ceph or libvirt as the key."""

from __future__ import annotations

from controllers.storage import PoolProber
from hypervisor.libvirt_driver import LibvirtDriver
from tests.helpers import wait_for
from tests.integration.zkstore.test_zkstore_acl import rbd_pool
from zkstore import Store, paths


def test_a_pool_without_its_stored_key_is_unreachable_saying_why(store: Store) -> None:
    pool = rbd_pool("ceph", monitor="127.0.0.1:1")
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
