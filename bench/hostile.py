"""What hostile hosts cost the probe: the module scan beside 1,000 mapped files, and the `.reg`
reader on exports of 1 and 10 MB (it must stay linear: 10 MB in about 10 × the time of 1 MB)."""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.figures import Figure, spread, timed
from fixtures.make_reg import hex_value
from probe.host.regfile import RegFile

KEY = r"HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Services\Bench"


def module_scan_beside_mapped_files(rounds: int) -> list[Figure]:
    from bench.module_scan import plain_read
    from fixtures.hold_module import held
    from probe.host.inventory import take_inventory
    from probe.host.platform.linux import LinuxModules

    source = LinuxModules()
    with tempfile.TemporaryDirectory() as tmp:
        files = [Path(tmp) / f"mapped-{i}.bin" for i in range(1000)]
        for path in files:
            path.write_bytes(b"\0" * 4096)
        with held(*files):
            reads, scans = [], []
            for _ in range(rounds):  # interleaved, so drift hits both sides alike
                reads += timed(plain_read, 1)
                scans += timed(lambda: take_inventory(source, ["MPNotifyPerf.dll"]), 1)
    ratios = [s / r for r, s in zip(reads, scans, strict=True)]
    return [
        Figure(
            "module scan with 1,000 mapped files in one process",
            statistics.median(scans) * 1000,
            "ms",
            "plain read of every /proc/*/maps",
            statistics.median(reads) * 1000,
            statistics.median(ratios),
            2.0,
            spread(ratios),
            False,
        )
    ]


def reg_export(path: Path, megabytes: int) -> Path:
    """A regedit-4 export holding one binary value of about `megabytes` MB of text."""
    data = bytes(range(256)) * (megabytes * 2**20 // (3 * 256))
    path.write_text(f"REGEDIT4\r\n\r\n[{KEY}]\r\n{hex_value('Blob', None, data)}\r\n")
    return path


def reg_reader(rounds: int) -> list[Figure]:
    with tempfile.TemporaryDirectory() as tmp:
        small, large = reg_export(Path(tmp) / "1mb.reg", 1), reg_export(Path(tmp) / "10mb.reg", 10)
        load: Callable[[Path], Callable[[], object]] = lambda p: lambda: RegFile.load(p)  # noqa: E731
        one, ten = [], []
        for _ in range(rounds):
            one += timed(load(small), 1)
            ten += timed(load(large), 1)
    ratios = [t / (10 * o) for o, t in zip(one, ten, strict=True)]
    return [
        Figure(
            ".reg reader, 10 MB export vs 10 × a 1 MB export",
            statistics.median(ten),
            "s",
            "10 × the 1 MB export",
            10 * statistics.median(one),
            statistics.median(ratios),
            1.5,
            spread(ratios),
            False,
        )
    ]
