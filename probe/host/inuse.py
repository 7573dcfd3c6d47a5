"""Files in use: which processes have a file loaded or open, so an installer would stop.

An installer cannot replace a file a process holds (document 001: "files in use"); Windows
Restart Manager, which installers ask, misses some holders, so the probe looks itself: mapped
images (how a DLL is held) and open handles or descriptors (how a template or a log is held).
Files are compared by identity, not by name — on Linux device and inode, on Windows the
normalised path — so a file reached through another name is still found. A process that cannot
be read is counted, never fatal: the report says how many were denied and what would let the
probe read them, and "nobody holds it" is only said of a scan that read every process.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from probe.host.platform import HeldFile, HolderSource, HowHeld, ScanCounts, scan_processes


@dataclass(frozen=True)
class Holder:
    pid: int
    name: str
    exe: str | None
    how: HowHeld
    path: str  # the holder's name for the file

    def label(self) -> str:
        return f"pid {self.pid} {self.name or '?'} ({self.how})"


@dataclass(frozen=True)
class FileUse:
    path: str
    present: bool
    holders: tuple[Holder, ...]

    @property
    def in_use(self) -> bool:
        return bool(self.holders)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "present": self.present,
            "holders": [
                {"pid": h.pid, "process": h.name, "exe": h.exe, "how": h.how, "path": h.path}
                for h in self.holders
            ],
        }


@dataclass(frozen=True)
class InUse:
    files: tuple[FileUse, ...]
    scanned: int
    denied: int
    vanished: int
    elapsed_s: float
    unreadable_advice: str = ""  # the platform's word for what would let it read the denied

    @property
    def held(self) -> tuple[FileUse, ...]:
        return tuple(f for f in self.files if f.in_use)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scanned": self.scanned,
            "denied": self.denied,
            "vanished": self.vanished,
            "unreadable_advice": self.unreadable_advice if self.denied else None,
            "elapsed_s": round(self.elapsed_s, 4),
            "files": [f.to_dict() for f in self.files],
        }


def files_in_use(source: HolderSource, paths: Sequence[str]) -> InUse:
    """Scan every process once for all `paths` (deduplicated by file identity)."""
    t0 = time.perf_counter()
    keys: dict[str, Hashable | None] = {p: source.file_key(p) for p in dict.fromkeys(paths)}
    wanted = frozenset(k for k in keys.values() if k is not None)
    held: dict[Hashable, list[HeldFile]] = {k: [] for k in wanted}
    counts = ScanCounts()
    if wanted:
        found, counts = scan_processes(source.pids(), lambda pid: source.held_files(pid, wanted))
        for item in found:
            held[item.key].append(item)
    infos = {}
    files = []
    for path, key in keys.items():
        holders = []
        for item in held.get(key, []) if key is not None else []:
            if item.pid not in infos:
                infos[item.pid] = source.process_info(item.pid)
            info = infos[item.pid]
            holders.append(Holder(item.pid, info.name, info.exe, item.how, item.path))
        holders.sort(key=lambda h: (h.pid, h.how))
        files.append(FileUse(path, key is not None, tuple(holders)))
    return InUse(
        tuple(files),
        counts.scanned,
        counts.denied,
        counts.vanished,
        time.perf_counter() - t0,
        source.unreadable_advice,
    )
