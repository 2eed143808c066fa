"""Several simulated nodes in one process: one real ``Daemon`` per ``--config`` (each its own
test-driver hypervisor, ZooKeeper session, lease, heartbeat and controllers), in threads.

    python -m controllers.simhost --config node4.yaml --config node5.yaml ...

For a local cluster of many nodes on a small machine (``pvcctl local up --nodes 64
--nodes-per-process 8``, bench/scale.py, tests/integration/scale): a daemon process costs
~40 MB of Python before it does anything, so 64 of them would measure the interpreter, not
PVC. Every config file path stays on the command line, so the local power switch finds each
node's process by its config; powering one node off kills the process, so every node in it
dies together (the scale bench uses that to kill 8 nodes at once). One node whose daemon
fails stops the whole process, as a host would go down: the local cluster's power-on then
starts that node again on its own.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import signal
import sys
import threading
from types import FrameType

from controllers.config import ConfigError, DaemonConfig, load_config
from controllers.daemon import Daemon
from hypervisor import HypervisorError
from schemas.daemon_logging import setup_logging

log = logging.getLogger("pvcnoded")


def run_daemons(configs: list[DaemonConfig], stop: threading.Event) -> int:
    """Run one Daemon per config until ``stop`` is set or one of them ends with an error;
    then stop them all. Returns 0 after an orderly stop, 1 after a failure."""
    daemons: list[Daemon] = []
    failed = threading.Event()
    for config in configs:
        try:
            daemons.append(Daemon(config))
        except HypervisorError as exc:
            log.error("event=simhost_hypervisor_failed node=%s error=%s", config.node, exc)
            return 1

    def run(daemon: Daemon) -> None:
        try:
            daemon.run()
        except Exception as exc:
            log.exception("event=fatal node=%s error=%r", daemon.config.node, exc)
            failed.set()
            stop.set()

    threads = [
        threading.Thread(target=run, args=(d,), name=f"daemon-{d.config.node}", daemon=True)
        for d in daemons
    ]
    for thread in threads:
        thread.start()
    log.info("event=simhost_running nodes=%s", ",".join(c.node for c in configs))
    stop.wait()
    for daemon in daemons:
        daemon.stopped.set()
    for thread in threads:
        thread.join(60.0)
    return 1 if failed.is_set() else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pvc-simhost",
        description="several simulated pvcnoded nodes (test-driver hosts) in one process",
    )
    parser.add_argument(
        "--config",
        action="append",
        required=True,
        help="a node daemon's YAML config (repeat: one per node)",
    )
    args = parser.parse_args(argv)
    try:
        configs = [load_config(path) for path in args.config]
    except ConfigError as exc:
        print(f"pvc-simhost: {exc}", file=sys.stderr)
        return 2
    names = [c.node for c in configs]
    if len(set(names)) != len(names):
        print(f"pvc-simhost: a node is named twice: {', '.join(names)}", file=sys.stderr)
        return 2
    setup_logging(configs[0].log_level, configs[0].log_priority)
    faulthandler.enable()
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("event=signal signum=%d", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return run_daemons(configs, stop)


if __name__ == "__main__":
    sys.exit(main())
