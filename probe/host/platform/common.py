"""What every platform does the same way: psutil for processes, bounded whole-file reads."""

from __future__ import annotations

import psutil

from probe.files import read_host_file
from probe.host.pe import ModuleVersion, describe
from probe.host.platform.base import ProcessInfo


def psutil_pids() -> list[int]:
    return psutil.pids()


def psutil_process_info(pid: int) -> ProcessInfo:
    """Name, executable and start time; whatever cannot be read is left empty."""
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            name = proc.name()
            started = proc.create_time()
            try:
                exe = proc.exe() or None
            except (psutil.AccessDenied, psutil.ZombieProcess, OSError):
                exe = None
        return ProcessInfo(pid, name, exe, started)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return ProcessInfo(pid, "")


def read_whole(path: str) -> ModuleVersion:
    """Read a module file's bytes at once, safely (`host.files`), and close it: the probe never
    keeps a module open."""
    return describe(read_host_file(path))
