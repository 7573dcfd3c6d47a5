"""Relocated-install drift: two copies of a bin folder, and the settings that choose one.

Document 002: a service pack updates the copy on the default drive and leaves the relocated copy
old, may point registry values back at the default drive, and may drop the share the connector
needs. Drift compares the two copies file by file (PE version first, because that is what an
engineer quotes; SHA-256 when versions agree or are absent), then checks that every value the
procedure names points into the relocated copy, and that the share still exists. Registry
answers come from a `RegistryReader`, so the same checks run live and on a customer's export.
"""

from __future__ import annotations

import ntpath
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path, PurePath, PureWindowsPath
from typing import Any

from probe.errors import ProbeError
from probe.files import UnsafeFileError, read_host_file
from probe.host import ModuleVersion, RegistryReader, describe
from probe.upgrade.checks import Check, Status
from probe.upgrade.profiles import Profile, under_root

SHARES = r"HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Services\LanmanServer\Shares"
WINDOWS_NT = r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows NT\CurrentVersion"
MAX_FILES = 20_000
MAX_DEPTH = 64  # folders below a bin folder; a real one has a few


class Drift(str, Enum):
    """How the relocated copy of one file compares with the default copy."""

    IDENTICAL = "identical"
    OLDER = "older"  # the relocated copy has a lower version: the service pack missed it
    NEWER = "newer"  # the relocated copy is ahead of the default one
    DIFFERS = "differs"  # same or no version, other content
    MISSING = "missing"  # only in the default copy
    EXTRA = "extra"  # only in the relocated copy
    UNCHECKED = "unchecked"  # a copy is not a regular file, too large, unreadable or ambiguous


@dataclass(frozen=True)
class FileFacts:
    path: str
    size: int
    sha256: str
    version: str | None
    problem: str | None = None  # why this copy could not be read or compared


@dataclass(frozen=True)
class FileDrift:
    name: str  # path relative to the bin folder, `/`-separated
    state: Drift
    default: FileFacts | None
    relocated: FileFacts | None

    @property
    def needs_copy(self) -> bool:
        """Document 002 step 2 copies the default copy over: for files that are behind."""
        return self.state in (Drift.OLDER, Drift.MISSING, Drift.DIFFERS)

    def to_dict(self) -> dict[str, Any]:
        def facts(f: FileFacts | None) -> dict[str, Any] | None:
            if f is None:
                return None
            facts = {"path": f.path, "size": f.size, "sha256": f.sha256, "version": f.version}
            return {**facts, "problem": f.problem} if f.problem else facts

        return {
            "name": self.name,
            "state": self.state.value,
            "default": facts(self.default),
            "relocated": facts(self.relocated),
        }


def read_tree(folder: Path) -> dict[str, FileFacts]:
    """Every file under `folder`, keyed by lower-cased relative path (Windows folders compare
    case-insensitively). Links are not followed and nothing but a regular file is read (a FIFO
    would block, a device never ends); such entries, oversized files and names that differ only
    in case are kept with the reason they could not be compared."""
    if not folder.exists():
        raise ProbeError(f"folder {folder} does not exist")
    if not folder.is_dir():
        raise ProbeError(f"{folder} is not a folder")
    found: dict[str, FileFacts] = {}
    for path in _walk(folder):
        if len(found) >= MAX_FILES:
            raise ProbeError(f"{folder} holds more than {MAX_FILES} files: not a bin folder?")
        key = path.relative_to(folder).as_posix().lower()
        try:
            facts = _facts(str(path), describe(read_host_file(path)))
        except UnsafeFileError as exc:
            facts = FileFacts(str(path), 0, "", None, problem=exc.strerror)
        except OSError as exc:
            facts = FileFacts(str(path), 0, "", None, problem=f"unreadable: {exc.strerror or exc}")
        twin = found.get(key)
        if twin is not None:
            problem = f"two files differ only in case: {Path(twin.path).name}, {path.name}"
            facts = FileFacts(twin.path, 0, "", None, problem=problem)
        found[key] = facts
    return found


def _walk(folder: Path) -> list[Path]:
    """Every non-folder entry below `folder`, in name order, without following links; bounded
    in depth so that a hostile tree is a clear error, not a crash."""
    entries: list[Path] = []
    stack: list[tuple[Path, int]] = [(folder, 0)]
    while stack:
        directory, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ProbeError(f"{folder} nests folders deeper than {MAX_DEPTH}: not a bin folder?")
        try:
            with os.scandir(directory) as scan:
                listed = sorted(scan, key=lambda e: e.name)
        except OSError as exc:
            raise ProbeError(f"cannot list {directory}: {exc.strerror or exc}") from None
        for entry in listed:
            if entry.is_dir(follow_symlinks=False):
                stack.append((Path(entry.path), depth + 1))
            else:
                entries.append(Path(entry.path))
    return sorted(entries)


def _facts(path: str, version: ModuleVersion) -> FileFacts:
    return FileFacts(path, version.size, version.sha256, version.file_version)


def compare_trees(default: Path, relocated: Path) -> tuple[FileDrift, ...]:
    left, right = read_tree(default), read_tree(relocated)
    drifts = []
    for key in sorted(set(left) | set(right)):
        d, r = left.get(key), right.get(key)
        path, root = (d.path, default) if d else (right[key].path, relocated)
        name = Path(path).relative_to(root).as_posix()
        drifts.append(FileDrift(name, judge(d, r), d, r))
    return tuple(drifts)


def judge(default: FileFacts | None, relocated: FileFacts | None) -> Drift:
    if any(f is not None and f.problem for f in (default, relocated)):
        return Drift.UNCHECKED
    if relocated is None:
        return Drift.MISSING
    if default is None:
        return Drift.EXTRA
    if default.sha256 == relocated.sha256:
        return Drift.IDENTICAL
    if default.version and relocated.version and default.version != relocated.version:
        return (
            Drift.OLDER if _numbers(relocated.version) < _numbers(default.version) else Drift.NEWER
        )
    return Drift.DIFFERS


def _problem(d: FileDrift) -> str:
    return "; ".join(
        f"{side} copy is {f.problem}" if not f.problem.startswith("two") else f.problem
        for side, f in (("default", d.default), ("relocated", d.relocated))
        if f is not None and f.problem
    )


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


def file_checks(drifts: Sequence[FileDrift], sync_hint: str) -> list[Check]:
    counts = {state: sum(1 for d in drifts if d.state is state) for state in Drift}
    summary = ", ".join(f"{n} {s.value}" for s, n in counts.items() if n)
    checks = [
        Check(
            "bin copies",
            Status.FAIL
            if any(d.needs_copy for d in drifts)
            else Status.WARN
            if counts[Drift.UNCHECKED]
            else Status.PASS,
            f"{len(drifts)} file(s): {summary or 'none'}",
            fix=sync_hint,
        )
    ]
    for d in drifts:
        if d.state is Drift.IDENTICAL:
            continue
        dv = d.default.version or "no version" if d.default else "absent"
        rv = d.relocated.version or "no version" if d.relocated else "absent"
        status = {
            Drift.OLDER: Status.FAIL,
            Drift.MISSING: Status.FAIL,
            Drift.DIFFERS: Status.WARN,
            Drift.NEWER: Status.WARN,
            Drift.EXTRA: Status.PASS,
            Drift.UNCHECKED: Status.WARN,
        }[d.state]
        reason = {
            Drift.OLDER: f"relocated copy is older: {rv} vs default {dv}",
            Drift.MISSING: f"missing from the relocated copy (default has {dv})",
            Drift.DIFFERS: f"same version ({rv}) but other content than the default copy",
            Drift.NEWER: f"relocated copy is newer: {rv} vs default {dv}; left alone",
            Drift.EXTRA: "only in the relocated copy; left alone",
            Drift.UNCHECKED: f"not compared: {_problem(d)}",
        }[d.state]
        fix = sync_hint if d.needs_copy else ""
        checks.append(Check(f"bin: {d.name}", status, reason, fix=fix))
    return [replace(c, part="files") for c in checks]


@dataclass(frozen=True)
class Places:
    """How the machine names both copies (Windows paths), and the local relocated folder."""

    default_as: str
    relocated_as: str
    relocated_dir: Path | None


def value_paths(text: str) -> list[str]:
    """The file paths in a registry value: quoted or not, arguments dropped; event-log message
    files may list several separated by `;`."""
    paths = []
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        if part.startswith('"'):
            end = part.find('"', 1)
            paths.append(part[1:end] if end > 0 else part[1:])
            continue
        match = re.match(r"(.+?\.(?:exe|dll|sys|com))(?=\s|$)", part, re.IGNORECASE)
        paths.append(match.group(1) if match else part)
    return paths


def win_norm(path: str, variables: dict[str, str] | None = None) -> str:
    """Lower case, backslashes, no `\\??\\` prefix, known `%VARS%` expanded, no trailing `\\`."""
    path = path.replace("/", "\\")
    for prefix in ("\\??\\", "\\\\?\\"):
        path = path.removeprefix(prefix)
    for name, value in (variables or {}).items():
        literal = value.replace("\\", "\\\\")  # a replacement template, with no escapes
        path = re.sub(re.escape(f"%{name}%"), literal, path, flags=re.IGNORECASE)
    path = re.sub(r"\\+", r"\\", path)
    return ntpath.normcase(path).rstrip("\\")


def inside(path: PurePath, folder: PurePath) -> bool:
    """`path` is `folder` or below it, compared as given (normalise or resolve both first)."""
    return path == folder or folder in path.parents


def registry_checks(
    reader: RegistryReader, profile: Profile, services: Sequence[str], places: Places
) -> list[Check]:
    root = reader.value(WINDOWS_NT, "SystemRoot")
    variables = {"SystemRoot": root.text, "windir": root.text} if root and root.text else {}
    relocated = win_norm(places.relocated_as, variables)
    default = win_norm(places.default_as, variables)
    checks = []
    for rule in profile.registry:
        for key, name in rule.expand(tuple(services)):
            label = f"registry: {key.split(chr(92) + 'Services' + chr(92), 1)[-1]}\\{name}"
            value = reader.value(key, name)
            if value is None or value.text is None:
                why = "not present" if value is None else f"not a string ({value.type_name})"
                checks.append(
                    Check(
                        label,
                        Status.WARN,
                        f"{why} in the {reader.source}",
                        fix=f"if this service exists, set {name} under {key} to "
                        f"the relocated copy {places.relocated_as}",
                    )
                )
                continue
            checks.append(
                _value_check(label, key, name, value.text, relocated, default, variables, places)
            )
    return [replace(c, part="registry") for c in checks]


def _value_check(
    label: str,
    key: str,
    name: str,
    text: str,
    relocated: str,
    default: str,
    variables: dict[str, str],
    places: Places,
) -> Check:
    paths = value_paths(text)
    where = {p: PureWindowsPath(win_norm(p, variables)) for p in paths}
    wrong = [p for p in paths if inside(where[p], PureWindowsPath(default))]
    elsewhere = [
        p for p in paths if not inside(where[p], PureWindowsPath(relocated)) and p not in wrong
    ]
    fix = f"set {name} under {key} to the same file in {places.relocated_as}"
    if wrong:
        return Check(label, Status.FAIL, f"points at the default copy: {text}", fix=fix)
    if elsewhere:
        unexpanded = [p for p in elsewhere if "%" in p]
        why = " (cannot expand %VARIABLES% here)" if unexpanded else ""
        return Check(label, Status.WARN, f"points at neither copy{why}: {text}", fix=fix)
    missing = []
    if places.relocated_dir is not None:
        for p in paths:
            tail = win_norm(p, variables)[len(relocated) :].strip("\\").replace("\\", "/")
            if tail and not under_root(places.relocated_dir, tail).is_file():
                missing.append(p)
    if missing:
        return Check(
            label,
            Status.WARN,
            f"points at the relocated copy, but {', '.join(missing)} "
            "is not in the relocated folder",
            fix="copy the file from the default copy (notifyprobe fix sync-relocated)",
        )
    return Check(label, Status.PASS, f"points at the relocated copy: {text}")


def share_check(reader: RegistryReader | None, profile: Profile, places: Places) -> Check | None:
    found = _share_check(reader, profile, places)
    return replace(found, part="share") if found is not None else None


def _share_check(reader: RegistryReader | None, profile: Profile, places: Places) -> Check | None:
    share = profile.share
    if share is None:
        return None
    label = f"share: {share.name}"
    if reader is None:
        return Check(label, Status.NOT_RUN, "no registry to read shares from (pass --registry)")
    expected = win_norm(
        ntpath.join(ntpath.dirname(places.relocated_as.rstrip("\\/")), share.folder)
    )
    fix = f"share {expected} as {share.name} again"
    value = reader.value(SHARES, share.name)
    if value is None:
        return Check(
            label, Status.FAIL, f"not shared (no {share.name} in {reader.source})", fix=fix
        )
    path = next((s[5:] for s in value.strings if s.lower().startswith("path=")), "")
    if not path:
        return Check(label, Status.WARN, f"{share.name} has no Path= entry", fix=fix)
    if win_norm(path) == expected:
        return Check(label, Status.PASS, f"shared from the relocated folder {path}")
    return Check(
        label, Status.FAIL, f"shared from {path}, not from the relocated {expected}", fix=fix
    )
