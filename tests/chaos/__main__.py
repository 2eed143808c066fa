"""``python -m tests.chaos [--trials N] [--seed S] [--steps K] [--nodes M] [--zk-members Z]``:
N seeded chaos trials (seeds S, S+1, ...; S random when not given) against one ZooKeeper
server, or an ensemble of Z members started once for the run (then every trial also kills
and restarts members, never more than a minority at once). Prints each trial's seed and
outcome, a failing trial's full report with the command that replays it, and last the line
``N trials, M violations``; exits 1 when M > 0."""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from localcluster.zookeeper import ZooKeeperServer, start_ensemble
from tests.chaos.harness import ChaosTimings
from tests.chaos.trials import run_trial


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--trials", type=int, default=1, help="how many trials (default 1)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the first trial")
    parser.add_argument("--steps", type=int, default=12, help="steps per trial (default 12)")
    parser.add_argument("--nodes", type=int, default=4, help="nodes per trial (default 4)")
    parser.add_argument(
        "--zk-members",
        type=int,
        default=1,
        help="ZooKeeper members (default 1; 3 or more: an ensemble, with member loss faults)",
    )
    parser.add_argument("--keep", action="store_true", help="keep every trial's logs")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print every trial's steps, not only a failing one's",
    )
    args = parser.parse_args(argv)
    if args.nodes < 2:
        parser.error("--nodes must be at least 2")
    if args.zk_members < 1:
        parser.error("--zk-members must be at least 1")
    # Daemon logs go to each trial's file; none to the terminal (not even Python's
    # last-resort handler, between trials).
    logging.getLogger().addHandler(logging.NullHandler())
    base = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    timings = ChaosTimings()
    print(
        f"chaos: {args.trials} trial(s) from seed {base}, {args.steps} steps, {args.nodes} nodes"
        + (f", {args.zk_members} ZooKeeper members" if args.zk_members != 1 else "")
        + "; "
        f"convergence bound {timings.converge_bound:g}s after the faults are healed",
        flush=True,
    )
    workdir = Path(tempfile.mkdtemp(prefix="pvc-chaos-"))
    if args.zk_members > 1:
        members = start_ensemble(workdir / "zookeeper", args.zk_members)
    else:
        members = [ZooKeeperServer(workdir / "zookeeper")]
        members[0].start()
    violations = 0
    migrations = migrated = 0
    failed: list[str] = []
    started = time.monotonic()
    done = 0
    try:
        for i in range(args.trials):
            seed = base + i
            result = run_trial(
                seed,
                args.steps,
                args.nodes,
                zookeeper=members,
                workdir=workdir / f"trial-{seed}",
                timings=timings,
                keep=args.keep,
            )
            done += 1
            violations += len(result.failures)
            migrations += result.migrations
            migrated += result.migrated
            print(f"[{i + 1}/{args.trials}] {result.report()}", flush=True)
            if args.verbose and result.ok:
                print("\n".join(f"  {line}" for line in result.log), flush=True)
            if not result.ok:
                failed.append(result.replay)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    finally:
        for member in members:
            member.stop()
    if not failed and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    if failed:
        print(f"failing trials ({len(failed)}), replay with:")
        for command in failed:
            print(f"  {command}")
    print(
        f"({time.monotonic() - started:.0f}s; {migrations} live migrations, {migrated} completed)"
    )
    print(f"{done} trials, {violations} violations", flush=True)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
