"""The local nodes' power switch, kept to the standard library for the fast paths: it is the
fence agent the primary runs, and every millisecond it takes to start adds to failover time.

    python -m localcluster.power --state-dir DIR NODE on|off|status
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path


def _pid(state_dir: Path, node: str) -> int:
    state = json.loads((state_dir / "state.json").read_text())
    if node not in state["nodes"]:
        raise KeyError(node)
    return int(state["nodes"][node])


def _ours(pid: int, marker: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        stat = Path(f"/proc/{pid}/stat").read_text().split()
    except OSError:
        return False
    return marker in cmdline and stat[2] != "Z"


def _kill_host_processes(folder: Path) -> None:
    """What else ran on the "host": processes naming a file in the node's folder (the
    primary's dnsmasq, whose config is there). A dead host runs nothing."""
    from localcluster.process import processes_naming  # only on power off

    for pid in processes_naming(folder):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pvc-local-power")
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("node")
    parser.add_argument("action", choices=["on", "off", "status"])
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir.absolute()
    try:
        pid = _pid(state_dir, args.node)
    except (OSError, ValueError, KeyError) as exc:
        print(f"no local node {args.node!r} in {state_dir}: {exc}", file=sys.stderr)
        return 1
    alive = _ours(pid, str(state_dir / f"{args.node}.yaml"))
    if args.action == "status":
        print("on" if alive else "off")
        return 0
    if args.action == "off":
        if alive:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while _ours(pid, str(state_dir / f"{args.node}.yaml")):
                if time.monotonic() > deadline:
                    print(f"{args.node} (pid {pid}) did not die", file=sys.stderr)
                    return 1
                time.sleep(0.01)
        _kill_host_processes(state_dir / args.node)
        print("off")
        return 0
    from localcluster.cluster import LocalCluster  # the slow path: starting a daemon

    LocalCluster(state_dir).start_node(args.node)
    print("on")
    return 0


if __name__ == "__main__":
    sys.exit(main())
