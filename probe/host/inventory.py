"""The loaded-module inventory: which processes map a module, and is their copy the installed one?

A notification gateway that still runs an old copy of a DLL after an upgrade (document 000:
MPNotifyPerf.dll) fails in ways the mail flow alone cannot explain. Performance-counter DLLs are
loaded by whatever reads counters, so every process is scanned, not only the gateway's. One
process that cannot be read is counted (denied, vanished) and never fails the scan — but a scan
that could not read every process in its scope cannot say "no old copy": `judge_sight` says
what the scan saw, and the platform says what would let it see the rest.

`judge_state` is pure: it decides current / stale / deleted / renamed / unknown from facts the
platform gathered, so Linux and recorded Windows inventories go through the same rules.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

from probe.host.pe import ModuleVersion
from probe.host.platform import (
    MappedModule,
    ModuleSource,
    NameMatcher,
    ProcessFilter,
    ProcessInfo,
    scan_processes,
)

DEFAULT_MODULE = "MPNotifyPerf.dll"


class ModuleState(str, Enum):
    CURRENT = "current"  # the process runs the copy that is installed
    STALE = "stale"  # the loaded copy differs from the installed one
    DELETED = "deleted"  # the loaded file is gone from disk; the process still runs it
    RENAMED = "renamed"  # the loaded file was moved aside (X.dll.old) and is still in use
    UNKNOWN = "unknown"  # could not be read or compared

    @property
    def is_old(self) -> bool:
        """The process runs a copy that is not the installed one."""
        return self in (ModuleState.STALE, ModuleState.DELETED, ModuleState.RENAMED)


class Sight(str, Enum):
    """What a scan saw, before anyone may call it clean."""

    OLD_COPY = "old_copy"  # an old copy is loaded: what was read is enough to say so
    CLEAN = "clean"  # every process in scope was read and none runs an old copy
    PARTIAL = "partial"  # some processes in scope could not be read; none of the others is old
    BLIND = "blind"  # no process in scope could be read
    EMPTY = "empty"  # no process in scope at all (a process filter that matched nothing)


def judge_sight(found_old: bool, scanned: int, unreadable: int) -> Sight:
    """A scan is clean only when it read every process in its scope: an unreadable process may
    be the very one that holds the old copy, so "none found" from a partial scan is not "none
    loaded". An old copy found is a finding whatever was left unread. Vanished processes and
    processes outside a filter are not in scope."""
    if found_old:
        return Sight.OLD_COPY
    if unreadable:
        return Sight.PARTIAL if scanned else Sight.BLIND
    return Sight.CLEAN if scanned else Sight.EMPTY


def unreadable_note(unreadable: int, scanned: int, advice: str) -> str:
    """`could not read N of M processes: …; <what would let it see>`."""
    return (
        f"could not read {unreadable} of {unreadable + scanned} processes: an old copy may be "
        f"loaded there; {advice or 'run as root or Administrator'}"
    )


@dataclass(frozen=True)
class Copy:
    """One copy of a module (the loaded one or the installed one): where, and what it is."""

    path: str | None
    version: ModuleVersion | None = None
    error: str | None = None  # why `version` is missing


@dataclass(frozen=True)
class ModuleHit:
    """One process that maps a matching module, and the judgement of its copy."""

    process: ProcessInfo
    mapped_path: str
    module: str  # the name pattern it matched
    state: ModuleState
    reason: str
    loaded: Copy
    installed: Copy

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModuleHit:
        """A hit as `to_dict` kept it: what the diagnosis rules read (file sizes are not kept)."""
        process = ProcessInfo(
            int(d.get("pid") or 0), str(d.get("process") or ""), d.get("exe"), d.get("started_at")
        )
        try:
            state = ModuleState(str(d.get("state")))
        except ValueError:
            state = ModuleState.UNKNOWN
        return cls(
            process=process,
            mapped_path=str(d.get("mapped_path") or ""),
            module=str(d.get("module") or ""),
            state=state,
            reason=str(d.get("reason") or ""),
            loaded=_kept_copy(d, "loaded", d.get("mapped_path")),
            installed=_kept_copy(d, "installed", d.get("installed_path")),
        )

    def to_dict(self) -> dict[str, Any]:
        lv, iv = self.loaded.version, self.installed.version
        return {
            "pid": self.process.pid,
            "process": self.process.name,
            "exe": self.process.exe,
            "started_at": self.process.started_at,
            "module": self.module,
            "mapped_path": self.mapped_path,
            "state": self.state.value,
            "reason": self.reason,
            "loaded_version": lv.file_version if lv else None,
            "loaded_product_version": lv.product_version if lv else None,
            "loaded_sha256": lv.sha256 if lv else None,
            "loaded_soname": lv.soname if lv else None,
            "loaded_error": self.loaded.error,
            "installed_path": self.installed.path,
            "installed_version": iv.file_version if iv else None,
            "installed_product_version": iv.product_version if iv else None,
            "installed_sha256": iv.sha256 if iv else None,
            "installed_error": self.installed.error,
        }


@dataclass(frozen=True)
class Inventory:
    names: tuple[str, ...]
    installed: tuple[str, ...]
    platform: str
    hits: tuple[ModuleHit, ...]
    scanned: int
    denied: int  # processes in scope that could not be read (vanished ones are not among them)
    vanished: int
    elapsed_s: float = 0.0
    processes: tuple[str, ...] = ()  # the process filter (`--process`); empty: every process
    out_of_scope: int = 0  # processes the filter left out, never read
    unreadable_advice: str = ""  # the platform's word for what would let it read the denied

    @property
    def old_copies(self) -> tuple[ModuleHit, ...]:
        return tuple(h for h in self.hits if h.state.is_old)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Inventory:
        """An inventory as `to_dict` kept it with a run, to diagnose that run again later."""
        return cls(
            names=tuple(str(n) for n in d.get("names", [])),
            installed=tuple(str(p) for p in d.get("installed", [])),
            platform=str(d.get("platform", "")),
            hits=tuple(ModuleHit.from_dict(h) for h in d.get("hits", []) if isinstance(h, dict)),
            scanned=int(d.get("scanned", 0)),
            denied=int(d.get("denied", 0)),
            vanished=int(d.get("vanished", 0)),
            elapsed_s=float(d.get("elapsed_s", 0.0)),
            processes=tuple(str(p) for p in d.get("processes", [])),
            out_of_scope=int(d.get("out_of_scope", 0)),
            unreadable_advice=str(d.get("unreadable_advice", "")),
        )

    @property
    def sight(self) -> Sight:
        return judge_sight(bool(self.old_copies), self.scanned, self.denied)

    def unreadable_note(self) -> str:
        return unreadable_note(self.denied, self.scanned, self.unreadable_advice)

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "installed": list(self.installed),
            "platform": self.platform,
            "scanned": self.scanned,
            "denied": self.denied,
            "vanished": self.vanished,
            "processes": list(self.processes),
            "out_of_scope": self.out_of_scope,
            "sight": self.sight.value,
            "unreadable": self.denied,
            "unreadable_advice": self.unreadable_advice if self.denied else None,
            "elapsed_s": round(self.elapsed_s, 4),
            "hits": [h.to_dict() for h in self.hits],
        }


def _kept_copy(d: dict[str, Any], side: str, path: object) -> Copy:
    """The loaded or installed copy of a kept hit: its version as far as it was kept."""
    sha256, file_version = d.get(f"{side}_sha256"), d.get(f"{side}_version")
    soname = d.get(f"{side}_soname")
    version = None
    if sha256 or file_version or soname:
        kind: Literal["pe", "elf", "data"] = "pe" if file_version else "elf" if soname else "data"
        version = ModuleVersion(
            str(sha256 or ""), 0, kind, file_version, d.get(f"{side}_product_version"), soname
        )
    error = d.get(f"{side}_error")
    return Copy(str(path) if path else None, version, str(error) if error else None)


def judge_state(
    module: MappedModule, loaded: Copy, installed: Copy, installed_is_mapped_path: bool
) -> tuple[ModuleState, str]:
    """Decide the state of one loaded copy from facts already gathered (no I/O)."""
    if module.match.renamed and module.path_exists and not module.marked_deleted:
        return ModuleState.RENAMED, (
            f"the loaded file was renamed to {module.path} and is still in use; "
            f"installed copy: {_label(installed)}"
        )
    if module.marked_deleted or module.path_exists is False:
        if not module.path_exists:
            return ModuleState.DELETED, (
                f"the loaded file was deleted from disk; the process still runs {_label(loaded)}"
            )
        return _compare_or(
            ModuleState.STALE,
            f"the file at {module.path} was replaced after the process loaded it",
            loaded,
            installed,
        )
    if module.same_file is None:
        return ModuleState.UNKNOWN, f"cannot tell whether {module.path} is the mapped file"
    if module.same_file is False:
        return _compare_or(
            ModuleState.STALE,
            f"the file now at {module.path} is not the one the process mapped (other inode)",
            loaded,
            installed,
        )
    if installed_is_mapped_path:
        return ModuleState.CURRENT, "the process maps the file installed at that path"
    if loaded.version is None or installed.version is None:
        missing = loaded if loaded.version is None else installed
        return ModuleState.UNKNOWN, f"cannot compare with the installed copy: {missing.error}"
    if loaded.version.sha256 == installed.version.sha256:
        return ModuleState.CURRENT, f"same content as the installed copy {installed.path}"
    return ModuleState.STALE, (
        f"loaded {_label(loaded)} differs from installed {_label(installed)} at {installed.path}"
    )


def _compare_or(
    state: ModuleState, why: str, loaded: Copy, installed: Copy
) -> tuple[ModuleState, str]:
    """A replaced file is stale unless both copies are known and identical."""
    lv, iv = loaded.version, installed.version
    if lv is not None and iv is not None and lv.sha256 == iv.sha256:
        return ModuleState.CURRENT, f"{why}, but by an identical copy"
    return state, f"{why}: loaded {_label(loaded)}, installed {_label(installed)}"


def _label(copy: Copy) -> str:
    if copy.version is not None:
        return copy.version.label
    return f"unknown ({copy.error})" if copy.error else "unknown"


class _Reader:
    """Reads each copy once per scan, however many processes map it."""

    def __init__(self, source: ModuleSource):
        self.source = source
        self.loaded: dict[object, Copy] = {}
        self.files: dict[str, Copy] = {}

    def loaded_copy(self, module: MappedModule) -> Copy:
        key = module.identity or module.path
        if key not in self.loaded:
            try:
                version = self.source.read_loaded_copy(module)
                self.loaded[key] = Copy(module.path, version)
            except PermissionError:
                self.loaded[key] = Copy(module.path, None, self.source.loaded_copy_advice)
            except OSError as exc:
                self.loaded[key] = Copy(module.path, None, f"cannot read the loaded copy: {exc}")
        return self.loaded[key]

    def file(self, path: str) -> Copy:
        if path not in self.files:
            try:
                self.files[path] = Copy(path, self.source.read_file(path))
            except FileNotFoundError:
                self.files[path] = Copy(path, None, f"nothing installed at {path}")
            except OSError as exc:
                self.files[path] = Copy(path, None, f"cannot read {path}: {exc.strerror or exc}")
        return self.files[path]


def installed_path_for(source: ModuleSource, module: MappedModule, installed: Sequence[str]) -> str:
    """Where the installed copy of this module is: the `--installed` path with the same name,
    the only `--installed` path, or else the mapped path under its original (unrenamed) name."""
    canonical = module.match.canonical.lower()
    for path in installed:
        if source.basename(path).lower() == canonical:
            return path
    if len(installed) == 1:
        return installed[0]
    return source.join(source.dirname(module.path), module.match.canonical)


def take_inventory(
    source: ModuleSource,
    names: Sequence[str],
    installed: Sequence[str] = (),
    processes: Sequence[str] = (),
) -> Inventory:
    """Scan every process (or those named by `processes`) for the named modules and judge
    each loaded copy."""
    t0 = time.perf_counter()
    matcher = NameMatcher(names)
    keep = ProcessFilter(processes) if processes else None

    found, counts = scan_processes(
        source.pids(),
        lambda pid: source.mapped_modules(pid, matcher),
        (lambda pid: keep.keeps(source.process_info(pid).name)) if keep is not None else None,
    )
    reader = _Reader(source)
    hits = []
    for module in found:
        installed_path = installed_path_for(source, module, installed)
        loaded = reader.loaded_copy(module)
        installed_copy = reader.file(installed_path)
        state, reason = judge_state(
            module, loaded, installed_copy, source.same_path(installed_path, module.path)
        )
        hits.append(
            ModuleHit(
                process=source.process_info(module.pid),
                mapped_path=module.path,
                module=module.match.pattern,
                state=state,
                reason=reason,
                loaded=loaded,
                installed=installed_copy,
            )
        )
    hits.sort(key=lambda h: (not h.state.is_old, h.state.value, h.process.pid))
    return Inventory(
        names=tuple(names),
        installed=tuple(installed),
        platform=source.platform,
        hits=tuple(hits),
        scanned=counts.scanned,
        denied=counts.denied,
        vanished=counts.vanished,
        elapsed_s=time.perf_counter() - t0,
        processes=keep.patterns if keep is not None else (),
        out_of_scope=counts.out_of_scope,
        unreadable_advice=source.unreadable_advice,
    )
