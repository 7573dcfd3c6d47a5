"""What a platform provides to the module inventory and the files-in-use check, and the
shared parts (name matching, the process scan loop)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from probe.errors import UsageError
from probe.host.pe import ModuleVersion

T = TypeVar("T")

GLOB_CHARS = "*?["
# What installers and admins append when they move a locked DLL aside (document 001: `.old`).
RENAME_SUFFIXES = (".old", ".bak", ".orig", ".prev", ".save", ".tmp", "~")


class ProcessDenied(Exception):
    """The process exists but we may not look at its mappings (AccessDenied)."""


class ProcessVanished(Exception):
    """The process exited between listing and reading it."""


@dataclass(frozen=True)
class NameMatch:
    """Which pattern a mapped file's basename matched, and whether it carries a rename suffix."""

    pattern: str
    renamed: bool
    canonical: str  # the basename without the rename suffix: the name it was installed under


class NameMatcher:
    """Module names, case-insensitive, globs allowed, renamed copies (`X.dll.old`) included."""

    def __init__(self, patterns: Iterable[str]):
        self.patterns = tuple(dict.fromkeys(p.strip() for p in patterns if p.strip()))
        if not self.patterns:
            raise UsageError("no module name to look for")
        self._lowered = tuple((p, p.lower()) for p in self.patterns)
        literals = [_longest_literal(low) for _, low in self._lowered]
        # Any line that can match contains one of these bytes; "" means no cheap test exists.
        self.literals: tuple[bytes, ...] | None = (
            None if any(not lit for lit in literals) else tuple(lit.encode() for lit in literals)
        )

    def could_match(self, lowered: bytes) -> bool:
        """Cheap prefilter on lower-cased raw text (a whole maps file, or one line)."""
        return self.literals is None or any(lit in lowered for lit in self.literals)

    def match(self, basename: str) -> NameMatch | None:
        name = basename.lower()
        for pattern, low in self._lowered:
            if _name_matches(name, low):
                return NameMatch(pattern, renamed=False, canonical=basename)
        for suffix in RENAME_SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix):
                stem = name[: -len(suffix)]
                for pattern, low in self._lowered:
                    if _name_matches(stem, low):
                        return NameMatch(pattern, renamed=True, canonical=basename[: len(stem)])
        return None


def _name_matches(name: str, pattern: str) -> bool:
    if any(c in pattern for c in GLOB_CHARS):
        return fnmatch.fnmatchcase(name, pattern)
    return name == pattern


def _longest_literal(pattern: str) -> str:
    runs: list[str] = []
    current: list[str] = []
    in_class = False
    for c in pattern:
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            runs.append("".join(current))
            current = []
        elif c in "*?":
            runs.append("".join(current))
            current = []
        else:
            current.append(c)
    runs.append("".join(current))
    return max(runs, key=len)


class ProcessFilter:
    """The process names a scan is restricted to: case-insensitive, globs allowed, and on
    Windows the `.exe` may be left out (`--process gateway` keeps gateway.exe).

    The filter is decided on the name alone, which any user may read (Linux /proc/PID/stat and
    cmdline, Windows' process list): a process it leaves out is never read, so it cannot make
    the scan blind. A process whose name cannot be read is kept — it might be the one asked for.
    """

    def __init__(self, patterns: Iterable[str]):
        self.patterns = tuple(dict.fromkeys(p.strip() for p in patterns if p.strip()))
        if not self.patterns:
            raise UsageError("--process needs a process name")
        self._lowered = tuple(p.lower() for p in self.patterns)

    def keeps(self, name: str) -> bool:
        if not name:
            return True
        low = name.lower()
        names = (low, low.removesuffix(".exe"))
        return any(_name_matches(n, p) for n in names for p in self._lowered)


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    name: str
    exe: str | None = None
    started_at: float | None = None  # epoch seconds


@dataclass(frozen=True)
class MappedModule:
    """One file a process has mapped, as the OS reports it now.

    `path` is where the OS says the mapped file lives (device paths converted, Linux's
    "(deleted)" marker removed and kept in `marked_deleted`). `same_file` says whether the file
    at `path` today is the very file that was mapped (None: could not tell). `handle` is how the
    platform reaches the mapped copy again (Linux: the map_files entry); `identity` names the
    mapped file so each copy is read once however many processes map it.
    """

    pid: int
    path: str
    match: NameMatch
    marked_deleted: bool = False
    path_exists: bool | None = None
    same_file: bool | None = None
    handle: str = ""
    identity: tuple[int, int] | None = None


class ModuleSource(Protocol):
    """What a platform provides to the inventory. Errors: ProcessDenied, ProcessVanished,
    OSError from the readers. `unreadable_advice` says what would let a scan read the processes
    it was refused (root, a capability, a privilege: each platform its own), and
    `loaded_copy_advice` what reading a mapped copy that is no longer at its path needs."""

    platform: str
    unreadable_advice: str
    loaded_copy_advice: str

    def pids(self) -> list[int]: ...

    def mapped_modules(self, pid: int, matcher: NameMatcher) -> list[MappedModule]: ...

    def process_info(self, pid: int) -> ProcessInfo: ...

    def read_loaded_copy(self, module: MappedModule) -> ModuleVersion: ...

    def read_file(self, path: str) -> ModuleVersion: ...

    def same_path(self, a: str, b: str) -> bool: ...

    def basename(self, path: str) -> str: ...

    def dirname(self, path: str) -> str: ...

    def join(self, directory: str, name: str) -> str: ...


HowHeld = Literal["loaded", "open"]  # mapped into the process, or an open handle


@dataclass(frozen=True)
class HeldFile:
    """A file one process holds: `loaded` (mapped like a module) or `open` (a handle/fd).
    `key` is the platform's identity of the file (Linux: device and inode; Windows: the
    normalised path), the same thing `HolderSource.file_key` returns for a path."""

    pid: int
    path: str
    how: HowHeld
    key: Hashable


class HolderSource(Protocol):
    """What the files-in-use check needs from a platform, beside the process list."""

    platform: str
    unreadable_advice: str

    def pids(self) -> list[int]: ...

    def process_info(self, pid: int) -> ProcessInfo: ...

    def file_key(self, path: str) -> Hashable | None: ...

    def held_files(self, pid: int, keys: frozenset[Hashable]) -> list[HeldFile]: ...


@dataclass(frozen=True)
class ScanCounts:
    """How a scan of every process went: read, refused (AccessDenied), gone meanwhile, and
    left out by a process filter (never read, so never unreadable)."""

    scanned: int = 0
    denied: int = 0
    vanished: int = 0
    out_of_scope: int = 0


def scan_processes(
    pids: Iterable[int],
    read: Callable[[int], Iterable[T]],
    in_scope: Callable[[int], bool] | None = None,
) -> tuple[list[T], ScanCounts]:
    """`read` every process (that `in_scope` keeps) and collect what it finds; one unreadable
    process never fails it. `in_scope` decides from what anyone may read (the process name),
    so a process it leaves out is neither scanned nor unreadable; it may raise
    ProcessVanished."""
    found: list[T] = []
    scanned = denied = vanished = out_of_scope = 0
    for pid in pids:
        try:
            if in_scope is not None and not in_scope(pid):
                out_of_scope += 1
                continue
            found.extend(read(pid))
        except ProcessDenied:
            denied += 1
        except ProcessVanished:
            vanished += 1
        else:
            scanned += 1
    return found, ScanCounts(scanned, denied, vanished, out_of_scope)
