"""Building a managed network on one host, and taking its gateway, next to the raw tools in
the same run.

- **bridge**: what the network agent does for a managed network on a node
  (NetlinkHostBridges.ensure + set_peers: bridge, vxlan port, two flood peers), then its
  removal; the floor: the same links made and removed with bare pyroute2 calls in one
  session, no PVC code.
- **gateway**: what the primary does for a managed network with DHCP (the gateway address
  on the bridge, then dnsmasq started and serving: Dnsmasq.start), then its stop; the floor:
  ``ip addr add`` and a bare ``dnsmasq --keep-in-foreground`` with the same flags until its
  pid file is written, then its kill.

All inside a network namespace this script makes (root needed) and deletes.

    .venv/bin/python bench/networks.py             # 30 runs each
    .venv/bin/python bench/networks.py --runs 50

The last line: ``bridge_p50_ms=… bridge_floor_ms=… bridge_ratio=… gateway_p50_ms=…
gateway_floor_ms=… gateway_ratio=…``. JSON to bench/results/networks.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchlib import REPO_ROOT, now_iso, summary
from failover import environment, write_json

sys.path.insert(0, str(REPO_ROOT))

from hypervisor.dnsmasq import Dnsmasq, DnsmasqConfig
from hypervisor.hostnet import BridgeSpec, NetlinkHostBridges

VNI = 4321
PEERS = ("10.99.0.2", "10.99.0.3")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def bridge_pvc(ns: str, runs: int) -> list[float]:
    spec = BridgeSpec(
        network="bench", bridge=f"vmbr{VNI}", kind="vxlan", vni=VNI, local="10.99.0.1"
    )
    times = []
    with NetlinkHostBridges(ns) as bridges:
        for _ in range(runs):
            start = time.perf_counter()
            bridges.ensure(spec)
            bridges.set_peers(spec, PEERS)
            times.append(time.perf_counter() - start)
            bridges.remove(spec.bridge)
    return times


def bridge_floor(ns: str, runs: int) -> list[float]:
    from pyroute2 import NetNS

    times = []
    with NetNS(ns) as ipr:
        eth0 = ipr.link_lookup(ifname="eth0")[0]
        for _ in range(runs):
            start = time.perf_counter()
            ipr.link("add", ifname=f"vmbr{VNI}", kind="bridge")
            bridge = ipr.link_lookup(ifname=f"vmbr{VNI}")[0]
            ipr.link(
                "add",
                ifname=f"vxlan{VNI}",
                kind="vxlan",
                vxlan_id=VNI,
                vxlan_local="10.99.0.1",
                vxlan_port=4789,
                vxlan_learning=0,
                vxlan_link=eth0,
            )
            port = ipr.link_lookup(ifname=f"vxlan{VNI}")[0]
            ipr.link("set", index=port, master=bridge, state="up")
            ipr.link("set", index=bridge, state="up")
            for peer in PEERS:
                ipr.fdb("append", ifindex=port, lladdr="00:00:00:00:00:00", dst=peer)
            times.append(time.perf_counter() - start)
            ipr.link("del", index=port)
            ipr.link("del", index=bridge)
    return times


def dhcp_config() -> DnsmasqConfig:
    return DnsmasqConfig(
        network="bench",
        interface="vmbrg",
        address="10.98.0.1",
        prefixlen=24,
        range_start="10.98.0.100",
        range_end="10.98.0.200",
    )


def gateway_pvc(ns: str, rundir: Path, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        ip("-n", ns, "addr", "add", "10.98.0.1/24", "dev", "vmbrg")
        dhcp = Dnsmasq(dhcp_config(), rundir, ns)
        dhcp.start()
        times.append(time.perf_counter() - start)
        dhcp.stop()
        ip("-n", ns, "addr", "del", "10.98.0.1/24", "dev", "vmbrg")
    return times


def gateway_floor(ns: str, rundir: Path, runs: int) -> list[float]:
    pid_file = rundir / "floor.pid"
    times = []
    for _ in range(runs):
        pid_file.unlink(missing_ok=True)
        start = time.perf_counter()
        ip("-n", ns, "addr", "add", "10.98.0.1/24", "dev", "vmbrg")
        proc = subprocess.Popen(
            [
                *("ip", "netns", "exec", ns, "dnsmasq", "--keep-in-foreground"),
                *("--conf-file=/dev/null", "--bind-interfaces", "--listen-address=10.98.0.1"),
                *("--except-interface=lo", "--port=0", "--user=root"),
                "--dhcp-range=10.98.0.100,10.98.0.200,255.255.255.0,1h",
                f"--pid-file={pid_file}",
                f"--dhcp-leasefile={rundir / 'floor.leases'}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while not (pid_file.exists() and pid_file.read_text().strip()):
            time.sleep(0.002)
        times.append(time.perf_counter() - start)
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        ip("-n", ns, "addr", "del", "10.98.0.1/24", "dev", "vmbrg")
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench/results/networks.json")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/networks.py needs root (network namespaces)", file=sys.stderr)
        return 2
    if shutil.which("dnsmasq") is None:
        print("dnsmasq is not installed (make setup)", file=sys.stderr)
        return 2
    ns = f"pvcb-{uuid.uuid4().hex[:6]}"
    rundir = Path(tempfile.mkdtemp(prefix="pvc-bench-net-"))
    result: dict[str, Any] = {"benchmark": "networks", "started": now_iso(), "runs": args.runs}
    try:
        ip("netns", "add", ns)
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "eth1")
        ip("-n", ns, "addr", "add", "10.99.0.1/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "link", "add", "vmbrg", "type", "bridge")
        ip("-n", ns, "link", "set", "vmbrg", "up")
        pvc_b, floor_b, pvc_g, floor_g = [], [], [], []
        # Interleaved in rounds, so drift in the machine's load hits both alike.
        for _ in range(max(1, args.runs // 10)):
            pvc_b += bridge_pvc(ns, 10)
            floor_b += bridge_floor(ns, 10)
            pvc_g += gateway_pvc(ns, rundir, 3)
            floor_g += gateway_floor(ns, rundir, 3)
        figures = {
            "bridge": summary(pvc_b),
            "bridge_floor": summary(floor_b),
            "gateway": summary(pvc_g),
            "gateway_floor": summary(floor_g),
        }
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        shutil.rmtree(rundir, ignore_errors=True)
    result["figures"] = figures
    result["environment"] = environment()
    line = []
    for kind in ("bridge", "gateway"):
        p50 = float(figures[kind]["p50_s"]) * 1000
        floor = float(figures[f"{kind}_floor"]["p50_s"]) * 1000
        ratio = p50 / floor if floor else float("nan")
        result[f"{kind}_ratio"] = ratio
        print(f"{kind}: p50 {p50:.1f} ms against a floor of {floor:.1f} ms ({ratio:.2f}x)")
        line += [f"{kind}_p50_ms={p50:.1f}", f"{kind}_floor_ms={floor:.1f}"]
        line.append(f"{kind}_ratio={ratio:.2f}")
    write_json(args.out, result)
    print(" ".join(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
