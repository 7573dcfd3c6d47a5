"""How much a full module scan costs against a plain read of every /proc/*/maps.

The inventory must stay cheap enough to run after every burst: the target is at most twice the
cost of just reading every maps file. Both are timed side by side in one run, alternating, five
rounds by default, and the medians compared. A helper process holds a stale MPNotifyPerf.dll
during the measurement so the scan also pays for judging a real hit.

    python -m bench.module_scan [--rounds 5] [--name MPNotifyPerf.dll]
"""

from __future__ import annotations

import argparse
import glob
import statistics
import tempfile
import time
from pathlib import Path

from fixtures.hold_module import upgraded_while_loaded
from probe.host.inventory import take_inventory
from probe.host.platform.linux import LinuxModules


def plain_read() -> int:
    """The baseline: read every /proc/*/maps once, do nothing with it."""
    total = 0
    for path in glob.glob("/proc/[0-9]*/maps"):
        try:
            with open(path, "rb") as handle:
                total += len(handle.read())
        except OSError:
            continue
    return total


def measure(rounds: int, name: str) -> tuple[float, float, int, int]:
    source = LinuxModules()
    scans, reads = [], []
    hits = scanned = 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        plain_read()
        reads.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        inventory = take_inventory(source, [name])
        scans.append(time.perf_counter() - t0)
        hits, scanned = len(inventory.hits), inventory.scanned
    return statistics.median(scans), statistics.median(reads), hits, scanned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--name", default="MPNotifyPerf.dll")
    parser.add_argument("--no-hit", action="store_true", help="measure with nothing to find")
    args = parser.parse_args()
    if args.no_hit:
        plain_read()
        scan, read, hits, scanned = measure(args.rounds, args.name)
        report(scan, read, hits, scanned, args.rounds)
        return
    with tempfile.TemporaryDirectory() as tmp:
        with upgraded_while_loaded(Path(tmp) / args.name):
            plain_read()  # warm the dentry cache for both sides alike
            scan, read, hits, scanned = measure(args.rounds, args.name)
    report(scan, read, hits, scanned, args.rounds)


def report(scan: float, read: float, hits: int, scanned: int, rounds: int) -> None:
    print(f"processes scanned: {scanned}, hits: {hits}, rounds: {rounds} (median)")
    print(f"plain read of every /proc/*/maps: {read * 1000:.1f} ms")
    print(f"full module scan:                 {scan * 1000:.1f} ms")
    print(f"ratio: {scan / read:.2f}× (target ≤ 2×)")


if __name__ == "__main__":
    main()
