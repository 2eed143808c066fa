"""Chaos trials: the real controllers (``controllers.daemon.Daemon``) in one process against a
real ZooKeeper and a fault-injecting hypervisor (``hypervisor.faulty``), with faults injected
at random and the one-copy invariants checked all along. ``harness.py`` is the cluster,
``trials.py`` the seeded generator, ``python -m tests.chaos`` the command line."""
