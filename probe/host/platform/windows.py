"""Windows: loaded modules through psutil, and recorded Windows inventories for the tests.

psutil lists a process's mapped images (VirtualQueryEx + GetMappedFileName). Windows will not
let a mapped DLL be deleted or overwritten, but it can be renamed (document 001's `.old`), and
an installer that could not replace a locked DLL leaves the new copy elsewhere — so the loaded
copy is compared with the installed one named by `--installed`. GetMappedFileName answers in
device form (`\\Device\\HarddiskVolume2\\...`); `dos_path` turns that into a drive path.

The classification from a list of mapped paths (`modules_from_paths`) is pure, so recorded
inventories (fixtures/windows/*.json) drive the same code the live path runs.
"""

from __future__ import annotations

import json
import ntpath
import os
import sys
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil

from probe.errors import ProbeError
from probe.host.pe import ModuleVersion
from probe.host.platform.base import (
    HeldFile,
    HowHeld,
    MappedModule,
    NameMatcher,
    ProcessDenied,
    ProcessInfo,
    ProcessVanished,
)
from probe.host.platform.common import psutil_pids, psutil_process_info, read_whole

DEVICE_PREFIX = "\\device\\"
# Processes that run no user-mode code, so load no DLL at all: the idle process (0), System (4)
# and the minimal processes System starts. Nobody may read them, not even an elevated
# Administrator; a scan that could not read them has not missed a loaded module.
NO_USER_MODE_PIDS = frozenset({0, 4})
MINIMAL_PROCESSES = frozenset({"registry", "memory compression", "secure system"})


def loads_no_user_modules(pid: int, name: str, parent: int | None) -> bool:
    """The idle process, System, or a minimal process System itself started."""
    return pid in NO_USER_MODE_PIDS or (name.lower() in MINIMAL_PROCESSES and parent == 4)


def dos_path(path: str, devices: Mapping[str, str]) -> str:
    """`\\Device\\HarddiskVolume2\\x` → `D:\\x` using a device → drive map; others unchanged."""
    if path.startswith("\\\\?\\"):
        path = path[4:]
    if not path.lower().startswith(DEVICE_PREFIX):
        return path
    lowered = path.lower()
    for device, drive in sorted(devices.items(), key=lambda item: -len(item[0])):
        prefix = device.rstrip("\\").lower()
        if lowered == prefix or lowered.startswith(prefix + "\\"):
            return drive.rstrip("\\") + path[len(prefix) :]
    return path


def modules_from_paths(
    pid: int,
    paths: Sequence[str],
    matcher: NameMatcher,
    devices: Mapping[str, str],
    exists: Callable[[str], bool],
) -> list[MappedModule]:
    """Keep the mapped files whose name matches. A mapped image cannot be replaced in place on
    Windows, so when its path still exists the file there is the mapped one."""
    found: dict[str, MappedModule] = {}
    for raw in paths:
        path = dos_path(raw, devices)
        match = matcher.match(ntpath.basename(path))
        key = ntpath.normcase(path)
        if match is None or key in found:
            continue
        present = exists(path)
        found[key] = MappedModule(
            pid=pid, path=path, match=match, path_exists=present, same_file=present
        )
    return list(found.values())


def drive_devices() -> dict[str, str]:
    """Device name of each drive letter (QueryDosDeviceW), on Windows only."""
    if sys.platform != "win32":
        raise ProbeError("drive devices exist on Windows only")
    import ctypes

    devices: dict[str, str] = {}
    buffer = ctypes.create_unicode_buffer(1024)
    for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        drive = f"{letter}:"
        if ctypes.windll.kernel32.QueryDosDeviceW(drive, buffer, len(buffer)):
            devices[buffer.value] = drive
    return devices


class _WindowsPaths:
    platform = "windows"
    # psutil enables SeDebugPrivilege when the token holds it: an elevated Administrator's does.
    unreadable_advice = (
        "run elevated (as Administrator: SeDebugPrivilege opens other users' and services' "
        "processes; protected processes stay unreadable even then)"
    )
    loaded_copy_advice = "permission denied reading the loaded copy: run elevated (Administrator)"
    devices: dict[str, str]  # device name -> drive letter, set by each subclass

    def same_path(self, a: str, b: str) -> bool:
        return ntpath.normcase(ntpath.normpath(a)) == ntpath.normcase(ntpath.normpath(b))

    def basename(self, path: str) -> str:
        return ntpath.basename(path)

    def dirname(self, path: str) -> str:
        return ntpath.dirname(path)

    def join(self, directory: str, name: str) -> str:
        return ntpath.join(directory, name)

    def path_key(self, path: str) -> str:
        """Windows names a file by its path, case-insensitively: the identity for in-use."""
        return ntpath.normcase(ntpath.normpath(path))

    def holdings(
        self, pid: int, maps: Sequence[str], opened: Sequence[str], keys: frozenset[Hashable]
    ) -> list[HeldFile]:
        found: dict[tuple[str, str], HeldFile] = {}
        held_as: tuple[tuple[HowHeld, Sequence[str]], ...] = (("loaded", maps), ("open", opened))
        for how, paths in held_as:
            for raw in paths:
                path = dos_path(raw, self.devices)
                key = self.path_key(path)
                if key in keys and (how, key) not in found:
                    found[(how, key)] = HeldFile(pid, path, how, key)
        return list(found.values())


class WindowsModules(_WindowsPaths):
    """The live Windows source: psutil for processes and their mapped images."""

    def __init__(self, devices: Mapping[str, str] | None = None):
        self.devices = dict(devices) if devices is not None else drive_devices()

    def pids(self) -> list[int]:
        return psutil_pids()

    def process_info(self, pid: int) -> ProcessInfo:
        return psutil_process_info(pid)

    def mapped_modules(self, pid: int, matcher: NameMatcher) -> list[MappedModule]:
        try:
            process = psutil.Process(pid)
            maps = process.memory_maps(grouped=True)
        except psutil.NoSuchProcess:
            raise ProcessVanished(pid) from None
        except (psutil.AccessDenied, OSError):
            if _kernel_side(pid):
                return []
            raise ProcessDenied(pid) from None
        paths = [m.path for m in maps if m.path]
        return modules_from_paths(pid, paths, matcher, self.devices, os.path.exists)

    def read_loaded_copy(self, module: MappedModule) -> ModuleVersion:
        return read_whole(module.path)

    def read_file(self, path: str) -> ModuleVersion:
        return read_whole(path)

    def file_key(self, path: str) -> Hashable | None:
        return self.path_key(os.path.abspath(path)) if os.path.exists(path) else None

    def held_files(self, pid: int, keys: frozenset[Hashable]) -> list[HeldFile]:
        """Mapped images and open handles (psutil's open_files: regular files only)."""
        try:
            proc = psutil.Process(pid)
            maps = [m.path for m in proc.memory_maps(grouped=True) if m.path]
            opened = [f.path for f in proc.open_files()]
        except psutil.NoSuchProcess:
            raise ProcessVanished(pid) from None
        except (psutil.AccessDenied, OSError):
            raise ProcessDenied(pid) from None
        return self.holdings(pid, maps, opened, keys)


def _kernel_side(pid: int) -> bool:
    try:
        process = psutil.Process(pid)
        return loads_no_user_modules(pid, process.name(), process.ppid())
    except (psutil.Error, OSError):
        return pid in NO_USER_MODE_PIDS


@dataclass(frozen=True)
class RecordedProcess:
    pid: int
    name: str
    exe: str | None
    started_at: float | None
    maps: tuple[str, ...]
    error: Literal["denied", "vanished"] | None
    open_files: tuple[str, ...] = ()
    parent: int | None = None


class RecordedWindows(_WindowsPaths):
    """A Windows inventory recorded as JSON: processes with their mapped paths (device form),
    the device map, and the recorded facts of each file (sha256, versions)."""

    def __init__(
        self,
        processes: Sequence[RecordedProcess],
        devices: Mapping[str, str],
        files: Mapping[str, ModuleVersion],
    ):
        self.processes = {p.pid: p for p in processes}
        self.devices = dict(devices)
        self.files = {ntpath.normcase(path): facts for path, facts in files.items()}

    @classmethod
    def load(cls, path: Path) -> RecordedWindows:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            processes = [
                RecordedProcess(
                    pid=int(p["pid"]),
                    name=str(p.get("name", "")),
                    exe=p.get("exe"),
                    started_at=p.get("create_time"),
                    maps=tuple(p.get("maps", ())),
                    error=p.get("error"),
                    open_files=tuple(p.get("open_files", ())),
                    parent=p.get("ppid"),
                )
                for p in data["processes"]
            ]
            files = {
                name: ModuleVersion(
                    sha256=f["sha256"],
                    size=int(f["size"]),
                    kind=f.get("kind", "pe"),
                    file_version=f.get("file_version"),
                    product_version=f.get("product_version"),
                )
                for name, f in data["files"].items()
            }
            return cls(processes, data["devices"], files)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ProbeError(f"cannot load recorded inventory {path}: {exc}") from exc

    def pids(self) -> list[int]:
        return sorted(self.processes)

    def _process(self, pid: int) -> RecordedProcess:
        proc = self.processes.get(pid)
        if proc is None or proc.error == "vanished":
            raise ProcessVanished(pid)
        if proc.error == "denied":
            raise ProcessDenied(pid)
        return proc

    def process_info(self, pid: int) -> ProcessInfo:
        proc = self.processes[pid]
        return ProcessInfo(pid, proc.name, proc.exe, proc.started_at)

    def mapped_modules(self, pid: int, matcher: NameMatcher) -> list[MappedModule]:
        recorded = self.processes.get(pid)
        if (
            recorded is not None
            and recorded.error == "denied"
            and loads_no_user_modules(pid, recorded.name, recorded.parent)
        ):
            return []
        proc = self._process(pid)
        return modules_from_paths(
            pid, proc.maps, matcher, self.devices, lambda p: ntpath.normcase(p) in self.files
        )

    def read_loaded_copy(self, module: MappedModule) -> ModuleVersion:
        return self.read_file(module.path)

    def read_file(self, path: str) -> ModuleVersion:
        try:
            return self.files[ntpath.normcase(path)]
        except KeyError:
            raise FileNotFoundError(path) from None

    def file_key(self, path: str) -> Hashable | None:
        key = self.path_key(path)
        return key if key in self.files else None

    def held_files(self, pid: int, keys: frozenset[Hashable]) -> list[HeldFile]:
        proc = self._process(pid)
        return self.holdings(pid, proc.maps, proc.open_files, keys)
