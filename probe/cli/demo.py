"""`notifyprobe demo`: the whole job on this machine with no setup.

First a lab gateway that delivers only the first notification while an old MPNotifyPerf.dll is
still loaded (a stand-in DLL mapped by this very process, then upgraded on disk, as an
interrupted upgrade leaves it): the probe names the pattern, finds the old module and the known
issue. Then the same gateway after the fix: healthy, nothing to diagnose.
"""

from __future__ import annotations

import argparse
import asyncio
import mmap
import os
import shlex
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from probe.cli.common import add_db, open_ledger, own_command, positive_int
from probe.delivery import BurstSettings, Patience, ProbeSettings
from probe.diagnosis import Request
from probe.lab import FaultMode, LabGateway, build_dll, free_port, write_dll
from probe.ledger import Ledger
from probe.pipeline import Job, Probe, Probed
from probe.records import Endpoint
from probe.reporting import to_text
from probe.verdict import Pattern

MODULE = "MPNotifyPerf.dll"
# The lab gateway relays at once, so a short settle window is safe here and keeps the demo quick;
# a real gateway with no history gets the default window (docs/data-path.md).
SETTLE_S = 1.0


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    p = subparsers.add_parser(
        "demo",
        parents=parents,
        help="rehearse the probe against built-in lab gateways (first-only, then healthy)",
    )
    p.add_argument("--count", type=positive_int, default=10)
    add_db(p)
    p.set_defaults(handler=run)


@contextmanager
def stale_stand_in(directory: Path) -> Iterator[Path | None]:
    """A v4.3 stand-in of the module mapped by this process, then replaced on disk by v5.0.

    Linux only: there a replaced file stays mapped, which is exactly the stale state the probe
    detects; Windows refuses to replace a mapped DLL, so the demo skips this part there.
    """
    if not sys.platform.startswith("linux"):
        yield None
        return
    path = write_dll(directory / MODULE, "4.3.0.12")
    with open(path, "rb") as handle:
        view = mmap.mmap(handle.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
    try:
        upgrade = directory / "setup.tmp"
        upgrade.write_bytes(build_dll("5.0.0.41", name=MODULE))
        os.replace(upgrade, path)
        yield path
    finally:
        view.close()


async def rehearse(ledger: Ledger, mode: str, count: int, installed: Path | None) -> Probed:
    """One run through a lab gateway in `mode`, diagnosed and kept as `burst --module …
    --installed …` would do (no module scan when there is no stand-in to find)."""
    sink = Endpoint("127.0.0.1", free_port())
    gateway = LabGateway(Endpoint("127.0.0.1", 0), sink, FaultMode.parse(mode))
    request = (
        Request(module_names=(MODULE,), installed=(str(installed),))
        if installed is not None
        else Request()
    )
    async with gateway:
        settings = ProbeSettings(
            gateway.listen,
            sink,
            BurstSettings(count=count),
            patience=Patience(settle_s=SETTLE_S),
            lab=True,  # its own lab gateway: the default domain is routed, by the lab
        )
        job = Job(settings, request, argv=("notifyprobe", "demo"))
        return await Probe(job).once(ledger)


def next_steps(db: Path | None, ledger: Path, run_id: str) -> str:
    """Commands that work as printed, from where the user stands (no venv activated: the path of
    this program), against the ledger the demo used."""
    me = own_command()
    with_db = f" --db {shlex.quote(str(db))}" if db is not None else ""
    route = "On a real gateway: route the probe domain to this host's sink"
    lines = [
        f"Runs are kept in {ledger}. Next steps:",
        f"  {me} verdict {run_id}{with_db}                  # judge the run again",
        f"  {me} evidence {run_id} --out case.zip{with_db}  # bundle for a support case",
        f"{route} (docs/real-mail-setup.md),",
        "then, with GATEWAY-IP the address the gateway delivers from:",
        f"  {me} burst --gateway GATEWAY:25 --sink 0.0.0.0:2525 \\",
        "      --allow-remote --allow-client GATEWAY-IP --domain probe.example.org \\",
        f"      --module {MODULE} --installed 'PATH\\TO\\{MODULE}'",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    failures = 0
    with open_ledger(args.db) as ledger, tempfile.TemporaryDirectory() as tmp:
        print(f"── 1/2  lab gateway in first-only mode, with an old {MODULE} still loaded")
        print(
            f"       (settle window {SETTLE_S:g} s, as `--settle {SETTLE_S:g}`: the lab gateway "
            "relays at once)\n"
        )
        with stale_stand_in(Path(tmp)) as installed:
            first = asyncio.run(rehearse(ledger, "first-only", args.count, installed))
        print(to_text(first.report), end="\n\n")
        failures += first.report.verdict.pattern is not Pattern.FIRST_ONLY
        first_only_run = first.report.record.run.run_id

        print("── 2/2  the same gateway after the fix (old module gone, gateway restarted)\n")
        fixed = asyncio.run(rehearse(ledger, "healthy", args.count, None))
        print(to_text(fixed.report), end="\n\n")
        healthy = fixed.report.verdict.pattern is Pattern.HEALTHY
        failures += not healthy or fixed.explanation.diagnosis is not None

        print(next_steps(args.db, ledger.path, first_only_run))
    return 1 if failures else 0
