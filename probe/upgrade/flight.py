"""Preflight and postflight: a profile's facts turned into pass / warn / fail checks.

Before an upgrade the question is "will the installer be able to do its job": nothing may hold
the files it replaces, no earlier reboot may still be owed, and the backup the procedure asks
for must exist. After it the question is "is this upgrade done right": the leftovers are gone,
no process runs an old copy, the installed files agree on one version, and mail flows. Gathering
(processes, registry, disk) happens in the callers' sources; this module only decides.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from probe.errors import ProbeError
from probe.files import read_host_file
from probe.host import (
    InUse,
    Inventory,
    RebootSource,
    Sight,
    describe,
    judge_sight,
    local_source,
    take_inventory,
    unreadable_note,
)
from probe.upgrade.checks import Check, Status
from probe.upgrade.profiles import Profile, under_root
from probe.verdict import Severity, Verdict

MAX_WATCHED = 5000

SET_ASIDE_SUFFIX = ".old"  # what `fix rename-in-use` (document 001) leaves behind


def check_root(root: Path) -> None:
    if not root.exists():
        raise ProbeError(f"--root {root} does not exist")
    if not root.is_dir():
        raise ProbeError(f"--root {root} is not a folder")


def is_under(path: str, root: Path) -> bool:
    norm = os.path.normcase(os.path.abspath(path))
    base = os.path.normcase(os.path.abspath(root))
    return norm == base or norm.startswith(base.rstrip(os.sep) + os.sep)


def profile_files(profile: Profile, root: Path) -> list[str]:
    """The explicit files and every file under the watched folders (bounded)."""
    paths = [str(under_root(root, f)) for f in profile.files]
    for relative in profile.watch_dirs:
        folder = under_root(root, relative)
        if not folder.is_dir():
            continue
        for directory, _, names in os.walk(folder):
            for name in sorted(names):
                if len(paths) >= MAX_WATCHED:
                    raise ProbeError(f"more than {MAX_WATCHED} files under {folder}")
                paths.append(os.path.join(directory, name))
    return paths


def in_use_checks(usage: InUse, profile: Profile, root: Path) -> list[Check]:
    present = [f for f in usage.files if f.present]
    fix = (
        "stop the processes listed (performance-counter readers: WMI, Performance Monitor, "
        f"monitoring agents) or set the files aside: notifyprobe fix rename-in-use --profile "
        f"{profile.id} --root {root} --apply"
    )
    seen = f"{usage.scanned} processes scanned, {usage.denied} unreadable"
    if not present:
        return [
            Check(
                "files in use",
                Status.WARN,
                f"none of the profile's files is present under {root}: nothing to check "
                f"(is --root the drive the product is installed on?) ({seen})",
            )
        ]
    blocking = [u for u in usage.held if not is_set_aside(u.path)]
    set_aside = [u for u in usage.held if is_set_aside(u.path)]
    sight = judge_sight(bool(blocking), usage.scanned, usage.denied)
    blind = (
        f"; {unreadable_note(usage.denied, usage.scanned, usage.unreadable_advice)}"
        if usage.denied
        else ""
    )
    checks = [
        Check(
            "files in use",
            SIGHT_STATUS[sight],
            f"{len(blocking)} of {len(present)} file(s) held by a process ({seen})"
            + (f"; {len(set_aside)} set aside as {SET_ASIDE_SUFFIX}" if set_aside else "")
            + blind,
            fix=usage.unreadable_advice if sight in (Sight.PARTIAL, Sight.BLIND) else "",
        )
    ]
    for use in blocking:
        holders = ", ".join(h.label() for h in use.holders)
        checks.append(
            Check(
                f"in use: {_rel(use.path, root)}",
                Status.FAIL,
                f"held by {holders}; the installer cannot replace it",
                fix=fix,
            )
        )
    for use in set_aside:
        holders = ", ".join(h.label() for h in use.holders)
        original = _rel(use.path, root)[: -len(SET_ASIDE_SUFFIX)]
        checks.append(
            Check(
                f"set aside: {_rel(use.path, root)}",
                Status.WARN,
                f"renamed by the fix and still held by {holders}; the installer can write "
                f"{original}",
                fix="install the update, then restart those processes so they load the new copy",
            )
        )
    return checks


def is_set_aside(path: str) -> bool:
    """A copy renamed by document 001's fix: its holders no longer block the installer."""
    return path.lower().endswith(SET_ASIDE_SUFFIX)


def reboot_checks(
    sources: Sequence[RebootSource], ignored: Iterable[str], profile: Profile
) -> list[Check]:
    ignored = set(ignored)
    names = {n.lower() for n in profile.modules} | {
        f.rsplit("/", 1)[-1].lower() for f in profile.files
    }
    checks = []
    for source in sources:
        label = f"reboot: {source.name}"
        evidence = tuple(f"{r.source} -> {r.target or '(delete)'}" for r in source.renames[:20]) + (
            (f"… {len(source.renames) - 20} more",) if len(source.renames) > 20 else ()
        )
        if not source.checked:
            checks.append(Check(label, Status.NOT_RUN, f"{source.detail}: nothing to compare"))
            continue
        if not source.pending:
            checks.append(Check(label, Status.PASS, source.detail))
            continue
        if source.name in ignored:
            checks.append(
                Check(
                    label,
                    Status.PASS,
                    f"{source.detail} (ignored by --ignore-reboot-source)",
                    evidence=evidence,
                )
            )
            continue
        ours = [r for r in source.renames if _basename(r.source).lower() in names]
        fix = "reboot before the upgrade, then run preflight again"
        if ours:
            checks.append(
                Check(
                    label,
                    Status.FAIL,
                    f"{source.detail}, including the profile's "
                    f"{', '.join(_basename(r.source) for r in ours)}: an earlier "
                    "install or uninstall is not finished",
                    fix=fix,
                    evidence=evidence,
                )
            )
        elif source.noisy:
            checks.append(
                Check(
                    label,
                    Status.WARN,
                    f"{source.detail} (often set by antivirus or browser updates)",
                    fix=fix + f", or pass --ignore-reboot-source {source.name}",
                    evidence=evidence,
                )
            )
        else:
            checks.append(Check(label, Status.FAIL, f"{source.detail} ({source.where})", fix=fix))
    return checks


def _basename(path: str) -> str:
    return path.replace("/", "\\").rsplit("\\", 1)[-1]


def backup_check(profile: Profile, backup: Path | None) -> Check | None:
    spec = profile.backup
    if spec is None:
        return None
    label = f"backup: {spec.what}"
    fix = f"back up the {spec.what} before the upgrade and pass the folder with --backup DIR"
    if backup is None:
        return Check(label, Status.WARN, "no --backup folder given, so not checked", fix=fix)
    if not backup.is_dir():
        return Check(label, Status.FAIL, f"backup folder {backup} does not exist", fix=fix)
    found = []
    for directory, _, names in os.walk(backup):
        for name in names:
            path = Path(directory) / name
            if any(fnmatch.fnmatch(name.lower(), p.lower()) for p in spec.patterns):
                try:
                    if path.is_file() and path.stat().st_size > 0:
                        found.append(path)
                except OSError:
                    continue
    if not found:
        return Check(
            label,
            Status.FAIL,
            f"no non-empty file matching {', '.join(spec.patterns)} in {backup}",
            fix=fix,
        )
    return Check(label, Status.PASS, f"{len(found)} file(s) in {backup}")


def leftover_checks(profile: Profile, root: Path) -> list[Check]:
    checks = []
    for leftover in profile.leftovers:
        path = under_root(root, leftover.path)
        label = f"leftover: {leftover.path}"
        if not path.exists():
            checks.append(Check(label, Status.PASS, "gone"))
            continue
        count = sum(len(files) for _, _, files in os.walk(path)) if path.is_dir() else 1
        status = Status.FAIL if leftover.severity == "fail" else Status.WARN
        checks.append(
            Check(
                label,
                status,
                f"{path} still exists ({count} file(s) inside)",
                fix=f"delete {path} and its contents (reboot first if a file in it is locked)",
            )
        )
    return checks


# What a scan that found nothing wrong may claim: pass only when it read every process. A
# partial scan warns (what it read is clean, the rest is unknown); a scan that read nothing (or
# had nothing to read) did not run, whatever it found.
SIGHT_STATUS = {
    Sight.OLD_COPY: Status.FAIL,
    Sight.CLEAN: Status.PASS,
    Sight.PARTIAL: Status.WARN,
    Sight.BLIND: Status.NOT_RUN,
    Sight.EMPTY: Status.NOT_RUN,
}


def module_check(profile: Profile, inventory: Inventory | None, root: Path) -> Check:
    """No process runs an old copy of the profile's modules under the root — said only of a
    scan that could read every process; otherwise `warn` or `not run` with what was missed."""
    label = "no stale module loaded"
    if not profile.modules:
        return Check(label, Status.NOT_RUN, "the profile names no modules")
    if inventory is None:
        return Check(label, Status.NOT_RUN, "the module inventory could not run here")
    hits = [h for h in inventory.hits if is_under(h.mapped_path, root)]
    old = [h for h in hits if h.state.is_old]
    names = ", ".join(profile.modules)
    sight = judge_sight(bool(old), inventory.scanned, inventory.denied)
    note = inventory.unreadable_note() if inventory.denied else ""
    if sight is Sight.CLEAN:
        return Check(label, Status.PASS, f"{len(hits)} process(es) map {names}, none an old copy")
    if sight in (Sight.PARTIAL, Sight.BLIND, Sight.EMPTY):
        read = f"{len(hits)} of the {inventory.scanned} processes read map {names}, none old"
        return Check(
            label,
            SIGHT_STATUS[sight],
            (f"{read}; {note}" if sight is Sight.PARTIAL else note)
            or "no process could be scanned",
            fix=f"{inventory.unreadable_advice}, then run postflight again"
            if inventory.unreadable_advice
            else "",
        )
    evidence = tuple(
        f"pid {h.process.pid} {h.process.name or '?'}: {h.state.value}, {h.reason}" for h in old
    )
    return Check(
        label,
        Status.FAIL,
        f"{len(old)} process(es) still run an old copy of {names}" + (f"; {note}" if note else ""),
        fix="restart those processes (or reboot), then run postflight again",
        evidence=evidence,
    )


def version_check(profile: Profile, root: Path, expect: str | None) -> Check:
    """Do the profile's files carry one version (or `expect`)? Files with no version resource
    prove nothing, and a version asked for but not comparable is said, never passed."""
    label = "installed versions"
    if not profile.files:
        status = Status.WARN if expect is not None else Status.NOT_RUN
        return Check(
            label,
            status,
            f"the {profile.id} profile names no files whose version could be compared",
        )
    versions: dict[str, str | None] = {}
    for relative in profile.files:
        path = under_root(root, relative)
        if not path.is_file():
            continue
        try:
            versions[relative] = describe(read_host_file(path)).file_version
        except OSError as exc:
            raise ProbeError(f"cannot read {path}: {exc.strerror or exc}") from None
    missing = f"none of the profile's files is under {root}"
    if not versions:
        return Check(label, Status.WARN if expect is not None else Status.NOT_RUN, missing)
    evidence = tuple(f"{name}: {v or 'no version'}" for name, v in versions.items())
    unversioned = [n for n, v in versions.items() if v is None]
    if len(unversioned) == len(versions):
        return Check(
            label,
            Status.WARN if expect is not None else Status.NOT_RUN,
            f"none of the {len(versions)} file(s) carries a version resource",
            evidence=evidence,
        )
    if expect is not None:
        off = [n for n, v in versions.items() if v != expect]
        if off:
            return Check(
                label,
                Status.FAIL,
                f"{len(off)} file(s) not at {expect}: {', '.join(off)}",
                fix="reinstall the update",
                evidence=evidence,
            )
        return Check(label, Status.PASS, f"all {len(versions)} file(s) at {expect}")
    distinct = {v for v in versions.values() if v is not None}
    if len(distinct) > 1:
        return Check(
            label,
            Status.FAIL,
            f"the installed files disagree: {', '.join(sorted(distinct))}",
            fix="reinstall the update so every file comes from it",
            evidence=evidence,
        )
    (version,) = distinct
    if unversioned:
        return Check(
            label,
            Status.WARN,
            f"{len(versions) - len(unversioned)} file(s) at {version}; "
            f"{', '.join(unversioned)} carry no version to compare",
            evidence=evidence,
        )
    return Check(label, Status.PASS, f"all {len(versions)} file(s) at {version}", evidence=evidence)


def burst_check(verdict: Verdict | None) -> Check:
    label = "burst"
    if verdict is None:
        return Check(
            label,
            Status.NOT_RUN,
            "no --gateway given, mail flow not tested",
            fix="rerun with --gateway HOST:PORT to prove every notification arrives",
        )
    status = {Severity.OK: Status.PASS, Severity.WARNING: Status.WARN}.get(
        verdict.severity, Status.FAIL
    )
    return Check(
        label,
        status,
        f"{verdict.pattern.value}: {verdict.summary} "
        f"({verdict.delivered}/{verdict.sent} delivered)",
        evidence=verdict.evidence,
    )


def _rel(path: str, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return path


def held_candidates(profile: Profile, root: Path) -> list[str]:
    """The profile's files, plus every copy of its modules a process maps under the root."""
    paths = profile_files(profile, root)
    if profile.modules:
        inv = take_inventory(local_source(), list(profile.modules), [])
        paths += [h.mapped_path for h in inv.hits if is_under(h.mapped_path, root)]
    return paths
