"""Linux: loaded modules straight from /proc/PID/maps.

psutil's `memory_maps()` parses smaps (about 20× slower) and drops the "(deleted)" marker and the
inode, so it cannot see a replaced file. Here each maps file is read raw and only searched for
the module name; matching lines give the mapped path, the device and inode. Comparing those with
the file now at that path tells whether the process still runs an old copy. The old copy's bytes
come from /proc/PID/map_files/START-END, which reopens the mapped inode itself (root or
CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN only); without it the state is still known, the old
version is not.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
from collections.abc import Hashable
from pathlib import Path

from probe.files import Opener, read_host_file
from probe.host.pe import ModuleVersion, describe
from probe.host.platform.base import (
    HeldFile,
    MappedModule,
    NameMatcher,
    ProcessDenied,
    ProcessInfo,
    ProcessVanished,
)
from probe.host.platform.common import psutil_pids, psutil_process_info, read_whole

DELETED = " (deleted)"
# What each read needs for a process of another user (checked on Linux 6.x with setpriv, and by
# tests/host/test_unprivileged_scan.py): /proc/PID/maps and exe pass the kernel's ptrace read
# check (CAP_SYS_PTRACE); /proc/PID/fd and map_files are folders only their owner may open
# (CAP_DAC_READ_SEARCH), and following an fd link needs both.
UNREADABLE_ADVICE = (
    "run as root, or grant the service CAP_SYS_PTRACE (to read /proc/PID/maps and exe of "
    "other users' processes) and CAP_DAC_READ_SEARCH (to list /proc/PID/fd and map_files)"
)
# Reopening a mapped inode through map_files is the checkpoint/restore interface on top of that.
LOADED_COPY_ADVICE = (
    "reading the replaced copy through /proc/PID/map_files needs root, or CAP_CHECKPOINT_RESTORE "
    "(Linux 5.9 and later; before: CAP_SYS_ADMIN) with CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"
)
SKIPPED_PREFIXES = ("/dev/", "/memfd:", "/SYSV", "/proc/")


def read_maps(proc: str, pid: int) -> bytes:
    """The raw maps of `pid`. A process in the middle of exec() or exit() refuses for a moment
    even to root: one more try tells that apart from a real refusal."""
    with contextlib.suppress(PermissionError):
        return _read_maps(proc, pid)
    try:
        return _read_maps(proc, pid)
    except PermissionError:
        raise ProcessDenied(pid) from None


def _read_maps(proc: str, pid: int) -> bytes:
    try:
        with open(f"{proc}/{pid}/maps", "rb") as handle:
            return handle.read()
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessVanished(pid) from None


def parse_maps_line(line: bytes) -> tuple[int, int, int, int, str] | None:
    """(start, end, device, inode, path) of a file-backed mapping line, else None."""
    fields = line.split(maxsplit=5)
    if len(fields) < 6 or not fields[5].startswith(b"/"):
        return None
    start, _, end = fields[0].partition(b"-")
    major, _, minor = fields[3].partition(b":")
    return (
        int(start, 16),
        int(end, 16),
        os.makedev(int(major, 16), int(minor, 16)),
        int(fields[4]),
        os.fsdecode(fields[5].rstrip(b"\n")),
    )


class LinuxModules:
    """The module source for Linux. `opener` opens map_files entries (tests pass one that fails
    with PermissionError to prove the inventory still judges correctly without privilege)."""

    platform = "linux"
    unreadable_advice = UNREADABLE_ADVICE
    loaded_copy_advice = LOADED_COPY_ADVICE

    def __init__(self, proc: Path = Path("/proc"), opener: Opener = os.open):
        self.proc = proc
        self._proc = str(proc)
        self.opener = opener

    def pids(self) -> list[int]:
        return psutil_pids()

    def process_info(self, pid: int) -> ProcessInfo:
        return psutil_process_info(pid)

    def mapped_modules(self, pid: int, matcher: NameMatcher) -> list[MappedModule]:
        data = read_maps(self._proc, pid)
        lowered = data.lower()
        if not matcher.could_match(lowered):
            return []
        found: dict[tuple[int, int, str], MappedModule] = {}
        for line, low in zip(data.split(b"\n"), lowered.split(b"\n"), strict=True):
            if not matcher.could_match(low):
                continue
            parsed = parse_maps_line(line)
            if parsed is None:
                continue
            start, end, dev, inode, path = parsed
            if path.startswith(SKIPPED_PREFIXES):
                continue
            marked_deleted = path.endswith(DELETED)
            if marked_deleted:
                path = path[: -len(DELETED)]
            match = matcher.match(posixpath.basename(path))
            if match is None or (dev, inode, path) in found:
                continue
            handle = f"{start:x}-{end:x}"
            exists, same = self._compare(pid, handle, path, dev, inode)
            found[(dev, inode, path)] = MappedModule(
                pid=pid,
                path=path,
                match=match,
                marked_deleted=marked_deleted,
                path_exists=exists,
                same_file=same,
                handle=handle,
                identity=(dev, inode),
            )
        return list(found.values())

    def _compare(
        self, pid: int, handle: str, path: str, dev: int, inode: int
    ) -> tuple[bool | None, bool | None]:
        """Is something at `path`, and is it the mapped file (same device and inode)?"""
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return False, False
        except OSError:
            return None, None
        if (st.st_dev, st.st_ino) == (dev, inode):
            return True, True
        # Overlay and some network filesystems report another device in maps than stat does;
        # map_files (when readable) resolves to the mapped file as this namespace sees it.
        try:
            mapped = os.stat(self.proc / str(pid) / "map_files" / handle)
        except OSError:
            return True, False
        return True, (mapped.st_dev, mapped.st_ino) == (st.st_dev, st.st_ino)

    def read_loaded_copy(self, module: MappedModule) -> ModuleVersion:
        """The bytes the process runs: via the path while it still names the mapped file, else
        by reopening the mapped inode through map_files."""
        if module.same_file:
            return read_whole(module.path)
        mapped = self.proc / str(module.pid) / "map_files" / module.handle
        return describe(read_host_file(mapped, follow_link=True, opener=self.opener))

    def read_file(self, path: str) -> ModuleVersion:
        return read_whole(path)

    def same_path(self, a: str, b: str) -> bool:
        return os.path.normpath(a) == os.path.normpath(b)

    def basename(self, path: str) -> str:
        return posixpath.basename(path)

    def dirname(self, path: str) -> str:
        return posixpath.dirname(path)

    def join(self, directory: str, name: str) -> str:
        return posixpath.join(directory, name)

    def file_key(self, path: str) -> tuple[int, int] | None:
        """Device and inode of the file at `path` now; None when nothing is there."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def held_files(self, pid: int, keys: frozenset[Hashable]) -> list[HeldFile]:
        """Which of the files named by `keys` the process maps or has open. Compared by device
        and inode, so a file opened under another name (a hard link, a renamed directory) is
        still found; the path shown is the kernel's name for it."""
        if pid == os.getpid():
            return []
        found = self._mapped(pid, keys)
        fd_dir = f"{self._proc}/{pid}/fd"
        try:
            names = os.listdir(fd_dir)
        except (FileNotFoundError, ProcessLookupError):
            raise ProcessVanished(pid) from None
        except PermissionError:
            if found:
                return found
            raise ProcessDenied(pid) from None
        for name in names:
            link = f"{fd_dir}/{name}"
            try:
                st = os.stat(link)
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in keys:
                try:
                    path = os.readlink(link)
                except OSError:
                    path = link
                found.append(HeldFile(pid, path.removesuffix(DELETED), "open", key))
        return found

    def _mapped(self, pid: int, keys: frozenset[Hashable]) -> list[HeldFile]:
        data = read_maps(self._proc, pid)
        tokens = {f" {key[1]} ".encode() for key in keys if isinstance(key, tuple)}
        if not any(token in data for token in tokens):
            return []
        found: dict[Hashable, HeldFile] = {}
        for line in data.split(b"\n"):
            if not any(token in line for token in tokens):
                continue
            parsed = parse_maps_line(line)
            if parsed is None:
                continue
            start, end, dev, inode, path = parsed
            key: Hashable = (dev, inode)
            if key not in keys:
                # Overlay filesystems report another device in maps than stat does.
                try:
                    st = os.stat(self.proc / str(pid) / "map_files" / f"{start:x}-{end:x}")
                except OSError:
                    continue
                key = (st.st_dev, st.st_ino)
            if key in keys and key not in found:
                found[key] = HeldFile(pid, path.removesuffix(DELETED), "loaded", key)
        return list(found.values())
