"""The one small interface between the module inventory and the operating system.

`local_source()` and `local_holders()` pick this machine's platform (linux.py, windows.py); the
interface itself is in base.py.

The inventory needs four things from a platform: which processes exist, which files each one has
mapped (filtered by name, so a full scan stays cheap), who a process is, and the bytes of a
mapped copy and of an installed file. Linux answers from /proc directly; Windows answers through
psutil; recorded Windows inventories answer from JSON, so the Windows path is tested here.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from probe.errors import ProbeError
from probe.host.platform.base import (
    HeldFile,
    HolderSource,
    HowHeld,
    MappedModule,
    ModuleSource,
    NameMatch,
    NameMatcher,
    ProcessDenied,
    ProcessFilter,
    ProcessInfo,
    ProcessVanished,
    ScanCounts,
    scan_processes,
)

if TYPE_CHECKING:
    from probe.host.platform.linux import LinuxModules
    from probe.host.platform.windows import WindowsModules

__all__ = [
    "HeldFile",
    "HolderSource",
    "HowHeld",
    "MappedModule",
    "ModuleSource",
    "NameMatch",
    "NameMatcher",
    "ProcessDenied",
    "ProcessFilter",
    "ProcessInfo",
    "ProcessVanished",
    "ScanCounts",
    "local_holders",
    "local_source",
    "scan_processes",
]


def local_holders() -> HolderSource:
    """The files-in-use source for the machine the probe runs on (same classes as modules)."""
    return _local_platform()


def local_source() -> ModuleSource:
    """The module source for the machine the probe runs on."""
    return _local_platform()


def _local_platform() -> LinuxModules | WindowsModules:
    if sys.platform.startswith("linux"):
        from probe.host.platform.linux import LinuxModules

        return LinuxModules()
    if sys.platform == "win32":
        from probe.host.platform.windows import WindowsModules

        return WindowsModules()
    raise ProbeError(f"the module inventory supports Linux and Windows, not {sys.platform}")
