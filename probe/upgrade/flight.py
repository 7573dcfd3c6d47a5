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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probe.errors import ProbeError
from probe.files import read_host_file
from probe.host import (
    InUse,
    Inventory,
    ModuleHit,
    RebootSource,
    Sight,
    describe,
    judge_sight,
    local_source,
    take_inventory,
    unreadable_note,
)
from probe.upgrade.checks import Check, Status
from probe.upgrade.profiles import Leftover, Profile, under_root
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
    fix = in_use_fix(profile, root)
    seen = f"{usage.scanned} processes scanned, {usage.denied} unreadable"
    if not present:
        return [
            Check(
                "files in use",
                Status.WARN,
                f"none of the profile's files is present under {root}: nothing to check "
                f"(is --root the drive the product is installed on?) ({seen})",
                part="files in use",
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
            part="files in use",
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
                part="files in use",
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
                part="files in use",
            )
        )
    return checks


def in_use_fix(profile: Profile, root: Path) -> str:
    """What to do about a held file: the remedy of the profile's own known issue, and the
    `fix rename-in-use` command only when that remedy includes it (001, never 000)."""
    sig = profile.signature
    stop = (
        "stop the processes listed (performance-counter readers: WMI, Performance Monitor, "
        "monitoring agents)"
    )
    if "rename-in-use" in sig.fix_actions:
        return (
            f"{stop} or set the files aside: notifyprobe fix rename-in-use --profile "
            f"{profile.id} --root {root} --apply"
        )
    return f"{stop}; the remedy of known issue {sig.id}: {sig.remedy}"


def remedy_line(profile: Profile) -> str:
    sig = profile.signature
    return f"known issue {sig.id}: {sig.remedy}"


def is_set_aside(path: str) -> bool:
    """A copy renamed by document 001's fix: its holders no longer block the installer."""
    return path.lower().endswith(SET_ASIDE_SUFFIX)


def reboot_checks(
    sources: Sequence[RebootSource],
    ignored: Iterable[str],
    profile: Profile,
    after_reboot: str = "reboot before the upgrade, then run preflight again",
) -> list[Check]:
    """Each pending-reboot source its own check; `after_reboot` is the fix (postflight: reboot
    to finish the install, then run postflight again)."""
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
            checks.append(
                Check(label, Status.NOT_RUN, f"{source.detail}: nothing to compare", part="reboot")
            )
            continue
        if not source.pending:
            checks.append(Check(label, Status.PASS, source.detail, part="reboot"))
            continue
        if source.name in ignored:
            checks.append(
                Check(
                    label,
                    Status.PASS,
                    f"{source.detail} (ignored by --ignore-reboot-source)",
                    evidence=evidence,
                    part="reboot",
                )
            )
            continue
        ours = [r for r in source.renames if _basename(r.source).lower() in names]
        fix = after_reboot
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
                    part="reboot",
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
                    part="reboot",
                )
            )
        else:
            checks.append(
                Check(
                    label, Status.FAIL, f"{source.detail} ({source.where})", fix=fix, part="reboot"
                )
            )
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
        return Check(
            label, Status.WARN, "no --backup folder given, so not checked", fix=fix, part="backup"
        )
    if not backup.is_dir():
        return Check(
            label, Status.FAIL, f"backup folder {backup} does not exist", fix=fix, part="backup"
        )
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
            part="backup",
        )
    return Check(label, Status.PASS, f"{len(found)} file(s) in {backup}", part="backup")


@dataclass(frozen=True)
class InstalledFile:
    """One of the profile's versioned files found on disk, with its PE file version."""

    relative: str  # under the root, `/`-separated
    path: str
    version: str | None  # None: no version resource

    @property
    def label(self) -> str:
        return f"{self.relative} {self.version or '(no version)'}"


def version_key(version: str) -> tuple[int, ...]:
    """`5.0.0.41` as numbers, so 5.0.0.41 sorts after 5.0.0.9."""
    return tuple(int(p) if p.isdigit() else -1 for p in version.split("."))


def installed_files(profile: Profile, root: Path) -> tuple[InstalledFile, ...]:
    """The profile's named files that exist, and every copy of its versioned file names under
    its watched and leftover folders, each with the version it carries."""
    paths = [under_root(root, f) for f in profile.files]
    names = {n.lower() for n in profile.versioned}
    if names:
        folders = dict.fromkeys([*profile.watch_dirs, *(item.path for item in profile.leftovers)])
        for relative in folders:
            folder = under_root(root, relative)
            if not folder.is_dir():
                continue
            for directory, _, files in os.walk(folder):
                paths += [Path(directory, f) for f in sorted(files) if f.lower() in names]
    found: dict[str, InstalledFile] = {}
    for path in paths:
        if not path.is_file() or str(path) in found:
            continue
        try:
            version = describe(read_host_file(path)).file_version
        except OSError as exc:
            raise ProbeError(f"cannot read {path}: {exc.strerror or exc}") from None
        found[str(path)] = InstalledFile(_rel(str(path), root), str(path), version)
    return tuple(found.values())


def installed_version(files: Sequence[InstalledFile], expect: str | None) -> str | None:
    """The version the upgrade installed: the one asked for, else the newest found when the
    copies disagree (an older copy beside it is what the old install left). One version alone
    proves nothing: a fresh install and an untouched old one look the same."""
    if expect is not None:
        return expect
    versions = {f.version for f in files if f.version is not None}
    return max(versions, key=version_key) if len(versions) > 1 else None


def leftover_checks(
    profile: Profile, root: Path, expect: str | None = None, inventory: Inventory | None = None
) -> list[Check]:
    """A folder the procedure removes is a leftover only by what it holds: the old version of
    the profile's versioned files. With `expect` a copy at another version fails and a fresh
    install at it passes; without it the folder is judged by its content (`_by_content`). The
    fix never deletes the installed version's files."""
    installed = installed_files(profile, root) if profile.versioned else ()
    if expect is None and profile.versioned:
        evidence = install_evidence(profile, root, installed, inventory)
        return [_by_content(item, profile, root, evidence) for item in profile.leftovers]
    reference = installed_version(installed, expect)
    return [_leftover(item, profile, root, installed, reference) for item in profile.leftovers]


@dataclass(frozen=True)
class InstallEvidence:
    """What tells a fresh install from what an uninstall left, without being told the version:
    the copies of the versioned files, the rest of the installation beside them (the profile's
    named files and every program file in the folders the reinstall fills, i.e. its leftover
    folders), what could not be read or is missing, and the old copies processes still run."""

    versioned: tuple[InstalledFile, ...]
    others: tuple[InstalledFile, ...]
    unreadable: tuple[str, ...]  # under the root
    missing: tuple[str, ...]  # the profile's named files that are not there
    bare: tuple[str, ...]  # leftover folders holding no program file
    old_loaded: tuple[ModuleHit, ...]
    inventory: bool  # whether a module inventory was taken

    @property
    def versions(self) -> set[str]:
        return {f.version for f in (*self.versioned, *self.others) if f.version is not None}


def install_evidence(
    profile: Profile,
    root: Path,
    installed: Sequence[InstalledFile],
    inventory: Inventory | None,
) -> InstallEvidence:
    names = {n.lower() for n in profile.versioned}
    versioned = [f for f in installed if os.path.basename(f.path).lower() in names]
    others = {f.path: f for f in installed if f not in versioned}
    unreadable: list[str] = []
    bare: list[str] = []
    for item in profile.leftovers:
        folder = under_root(root, item.path)
        programs, failed = _program_files(folder, root) if folder.is_dir() else ([], [])
        unreadable += failed
        if not programs and not failed:
            bare.append(item.path)
        for f in programs:
            if os.path.basename(f.path).lower() not in names:
                others.setdefault(f.path, f)
    missing = [f for f in profile.files if not under_root(root, f).is_file()]
    old = [h for h in inventory.old_copies if is_under(h.mapped_path, root)] if inventory else []
    return InstallEvidence(
        tuple(versioned),
        tuple(others.values()),
        tuple(unreadable),
        tuple(missing),
        tuple(bare),
        tuple(old),
        inventory is not None,
    )


def _still_there(item: Leftover, root: Path) -> tuple[Path, str, int] | Check:
    """A leftover's path, its check's label and how many files it holds; the passing check when
    it is gone."""
    path = under_root(root, item.path)
    label = f"leftover: {item.path}"
    if not path.exists():
        return Check(label, Status.PASS, "gone", part="leftovers")
    return path, label, sum(len(files) for _, _, files in os.walk(path)) if path.is_dir() else 1


def _by_content(item: Leftover, profile: Profile, root: Path, evidence: InstallEvidence) -> Check:
    """A leftover folder judged without `--expect-version`, by what it holds and what lies
    beside it. It fails when it holds an old copy: loaded by a process, or at another version
    than the rest of the installation, or the versioned file alone with no other program file
    of the product (what the uninstall left). It passes as a fresh install only when the
    installation is complete (the versioned file, the profile's named files, a program file in
    every leftover folder) and every file in it carries one version, with no old copy loaded.
    Anything less decides nothing: a warning with the reason and the `--expect-version` hint."""
    there = _still_there(item, root)
    if isinstance(there, Check):
        return there
    path, label, count = there
    held = f"{count} file(s) inside"
    if count == 0:
        return Check(
            label,
            Status.PASS,
            f"{path} is empty: nothing of the old version is left",
            part="leftovers",
        )
    names = ", ".join(profile.versioned)
    inside_v = [f for f in evidence.versioned if is_under(f.path, path)]
    inside = [*inside_v, *(f for f in evidence.others if is_under(f.path, path))]

    def short(files: Sequence[InstalledFile]) -> str:
        return ", ".join(
            f"{os.path.relpath(f.path, path)} {f.version or '(no version)'}" for f in files
        )

    def listed(files: Sequence[InstalledFile], limit: int = 3) -> str:
        shown = ", ".join(
            f"{os.path.basename(f.path)} {f.version or '(no version)'}" for f in files[:limit]
        )
        return shown + (" …" if len(files) > limit else "")

    proof = tuple(f.label for f in inside)
    loaded = [h for h in evidence.old_loaded if is_under(h.mapped_path, path)]
    if loaded:
        return Check(
            label,
            Status.FAIL,
            f"{path} holds a copy of {names} a process still runs at an old version: "
            + "; ".join(
                f"{os.path.relpath(h.mapped_path, path)} loaded "
                f"{h.loaded.version.label if h.loaded.version else '?'} by pid "
                f"{h.process.pid} {h.process.name or '?'} ({h.state.value})"
                for h in loaded
            ),
            fix=f"{remedy_line(profile)}; then run postflight again",
            evidence=proof,
            part="leftovers",
        )
    versions = evidence.versions
    if len(versions) > 1:  # the installation disagrees: the newest is what was installed
        newest = max(versions, key=version_key)
        old = [f for f in inside if f.version is not None and f.version != newest]
        rest = [f for f in (*evidence.versioned, *evidence.others) if f.version == newest]
        if old:
            new = [f for f in inside if f.version == newest]
            keep = (
                f"do not delete the folder: it also holds {newest} "
                f"({', '.join(f.relative for f in new)}); "
                if new
                else f"nothing of {newest} is in it, so it can go once the reboot released it; "
            )
            return Check(
                label,
                Status.FAIL,
                f"{path} holds {short(old)}, while the rest of the installation is at "
                f"{newest} ({listed(rest)}): the old version is still there",
                fix=keep + remedy_line(profile),
                evidence=proof,
                part="leftovers",
            )
        return _undecided(
            label,
            profile,
            f"{path} holds {short(inside) or held}, the newest version found; the older "
            "copies elsewhere fail, so which version was installed is not proven",
            proof,
        )
    if not inside_v and not evidence.versioned:
        found = f"{short(inside)}; " if inside else f"{held}; "
        return _undecided(
            label,
            profile,
            f"{path} holds {found}no {names} under the profile's folders to tell which version "
            "its files belong to",
            proof,
        )
    unversioned = [f for f in inside_v if f.version is None]
    if unversioned:
        return _undecided(
            label, profile, f"{path} holds {short(unversioned)}: no version to compare", proof
        )
    if evidence.unreadable:
        return _undecided(
            label,
            profile,
            f"{path} holds {held}; cannot read {', '.join(evidence.unreadable[:3])}"
            + (" …" if len(evidence.unreadable) > 3 else "")
            + " to compare its version",
            proof,
        )
    compared = [f for f in evidence.others if f.version is not None]
    if not evidence.others:  # the versioned file alone: the product is not installed there
        if not inside_v:
            return _undecided(
                label,
                profile,
                f"{path} holds {held} and no program file, while the rest of the installation "
                f"is only {listed(evidence.versioned)}",
                proof,
            )
        (version,) = versions
        return Check(
            label,
            Status.FAIL,
            f"{path} holds {short(inside_v)} without the rest of an installation: no other "
            f"program file of the product in {', '.join(i.path for i in profile.leftovers)}, "
            f"so {version} is what the uninstall left behind",
            fix=f"nothing of a new install is in it, so it can go once the reboot released it; "
            f"{remedy_line(profile)}",
            evidence=proof,
            part="leftovers",
        )
    if not compared:
        return _undecided(
            label,
            profile,
            f"{path} holds {held}; none of the installation's other files "
            f"({listed(evidence.others)}) carries a version to compare {names} with",
            proof,
        )
    if evidence.missing or evidence.bare:
        gaps = [f"{m} is missing" for m in evidence.missing] + [
            f"{b} holds no program file" for b in evidence.bare
        ]
        return _undecided(
            label,
            profile,
            f"{path} holds {short(inside) or held}, but the installation is incomplete "
            f"({'; '.join(gaps)}): what an uninstall left and a fresh install cannot be told "
            "apart",
            proof,
        )
    (version,) = versions
    seen = (
        "no process runs an old copy of it"
        if evidence.inventory
        else "the module inventory could not run"
    )
    dll = listed(evidence.versioned)
    others = listed(compared)
    return Check(
        label,
        Status.PASS,
        f"a fresh install of {version} in the same place: {short(inside) or held} ({held}); "
        f"fresh because the whole installation is there at {version} ({dll} with "
        f"{len(compared)} other program file(s) of the product: {others}, a program file in "
        f"every folder) and {seen}",
        evidence=proof,
        part="leftovers",
    )


def _undecided(label: str, profile: Profile, reason: str, proof: tuple[str, ...]) -> Check:
    return Check(
        label,
        Status.WARN,
        reason,
        fix="run postflight again with --expect-version VERSION (the version you installed); "
        f"if these files are not the new install's, {remedy_line(profile)}",
        evidence=proof,
        part="leftovers",
    )


def _leftover(
    item: Leftover,
    profile: Profile,
    root: Path,
    installed: Sequence[InstalledFile],
    reference: str | None,
) -> Check:
    there = _still_there(item, root)
    if isinstance(there, Check):
        return there
    path, label, count = there
    held = f"{count} file(s) inside"
    if not profile.versioned:  # nothing tells old from new here: the profile's severity says
        return Check(
            label,
            Status.FAIL if item.severity == "fail" else Status.WARN,
            f"{path} still exists ({held})",
            fix=f"delete {path} and its contents (reboot first if a file in it is locked)",
            part="leftovers",
        )
    if count == 0:
        return Check(
            label,
            Status.PASS,
            f"{path} is empty: nothing of the old version is left",
            part="leftovers",
        )
    inside = [f for f in installed if is_under(f.path, path)]

    def short(files: Sequence[InstalledFile]) -> str:
        return ", ".join(
            f"{os.path.relpath(f.path, path)} {f.version or '(no version)'}" for f in files
        )

    names = ", ".join(profile.versioned)
    if reference is None:
        found = (
            f"{short(inside)}: a fresh install of that version or what the uninstall left behind"
            if inside
            else f"no {names} to tell which version its files belong to"
        )
        return Check(
            label,
            Status.WARN,
            f"{path} holds {held}; {found}",
            fix="run postflight again with --expect-version VERSION (the version you installed)",
            part="leftovers",
        )
    old = [f for f in inside if f.version is not None and f.version != reference]
    new = [f for f in inside if f.version == reference]
    if old:
        keep = (
            f"do not delete the folder: it also holds the installed {reference} "
            f"({', '.join(f.relative for f in new)}); "
            if new
            else f"nothing of {reference} is in it, so it can go once the reboot released it; "
        )
        return Check(
            label,
            Status.FAIL,
            f"{path} holds {short(old)}, not the installed version "
            f"{reference}: the old version is still there",
            fix=keep + remedy_line(profile),
            evidence=tuple(f.label for f in inside),
            part="leftovers",
        )
    if not new:
        new = [f for f in _programs(path, root) if f.version == reference]
    if new:
        shown = short(new[:3]) + (" …" if len(new) > 3 else "")
        return Check(
            label,
            Status.PASS,
            f"a fresh install of {reference} in the same place: {shown} ({held})",
            part="leftovers",
        )
    return Check(
        label,
        Status.WARN,
        f"{path} holds {held} and no program file at {reference}: nothing in it tells the "
        "old version from the new one",
        fix=f"check that these files belong to the new install; if not, {remedy_line(profile)}",
        part="leftovers",
    )


PROGRAM_SUFFIXES = (".dll", ".exe")


def _programs(folder: Path, root: Path) -> list[InstalledFile]:
    """The program files (.dll, .exe) under `folder` with their versions: a fresh install
    shows itself by carrying the installed version even where no versioned file lies."""
    found: list[InstalledFile] = []
    for directory, _, names in os.walk(folder):
        for name in sorted(names):
            if not name.lower().endswith(PROGRAM_SUFFIXES) or len(found) >= MAX_WATCHED:
                continue
            path = os.path.join(directory, name)
            try:
                version = describe(read_host_file(Path(path))).file_version
            except OSError:
                continue  # unreadable: it proves nothing either way
            found.append(InstalledFile(_rel(path, root), path, version))
    return found


def _program_files(folder: Path, root: Path) -> tuple[list[InstalledFile], list[str]]:
    """`_programs`, and the program files that could not be read (under the root): a file
    that cannot be read is not evidence that nothing is there."""
    found: list[InstalledFile] = []
    failed: list[str] = []
    for directory, _, names in os.walk(folder):
        for name in sorted(names):
            if not name.lower().endswith(PROGRAM_SUFFIXES):
                continue
            if len(found) + len(failed) >= MAX_WATCHED:
                raise ProbeError(f"more than {MAX_WATCHED} program files under {folder}")
            path = os.path.join(directory, name)
            try:
                version = describe(read_host_file(Path(path))).file_version
            except OSError:
                failed.append(_rel(path, root))
                continue
            found.append(InstalledFile(_rel(path, root), path, version))
    return found, failed


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
        return Check(label, Status.NOT_RUN, "the profile names no modules", part="modules")
    if inventory is None:
        return Check(
            label, Status.NOT_RUN, "the module inventory could not run here", part="modules"
        )
    hits = [h for h in inventory.hits if is_under(h.mapped_path, root)]
    old = [h for h in hits if h.state.is_old]
    names = ", ".join(profile.modules)
    sight = judge_sight(bool(old), inventory.scanned, inventory.denied)
    note = inventory.unreadable_note() if inventory.denied else ""
    if sight is Sight.CLEAN:
        return Check(
            label,
            Status.PASS,
            f"{len(hits)} process(es) map {names}, none an old copy",
            part="modules",
        )
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
            part="modules",
        )
    evidence = tuple(
        f"pid {h.process.pid} {h.process.name or '?'}: {h.state.value}, {h.reason}" for h in old
    )
    return Check(
        label,
        Status.FAIL,
        f"{len(old)} process(es) still run an old copy of {names}" + (f"; {note}" if note else ""),
        fix=f"{remedy_line(profile)}; then run postflight again",
        evidence=evidence,
        part="modules",
    )


def version_check(
    profile: Profile,
    root: Path,
    expect: str | None,
    installed: Sequence[InstalledFile] | None = None,
) -> Check:
    """Do the profile's versioned files carry one version (or `expect`)? Files with no version
    resource prove nothing, and a version asked for but not comparable is said, never passed."""
    label = "installed versions"
    asked = Status.WARN if expect is not None else Status.NOT_RUN
    if not profile.files and not profile.versioned:
        return Check(
            label,
            asked,
            f"the {profile.id} profile names no files whose version could be compared",
            part="versions",
        )
    found = installed_files(profile, root) if installed is None else installed
    if not found:
        missing = (
            f"no {', '.join(profile.versioned)} under the profile's folders in {root}"
            if profile.versioned
            else f"none of the profile's files is under {root}"
        )
        return Check(label, asked, missing, part="versions")
    evidence = tuple(f"{f.relative}: {f.version or 'no version'}" for f in found)
    unversioned = [f.relative for f in found if f.version is None]
    if len(unversioned) == len(found):
        return Check(
            label,
            asked,
            f"none of the {len(found)} file(s) carries a version resource",
            evidence=evidence,
            part="versions",
        )
    if expect is not None:
        off = [f for f in found if f.version != expect]
        if off:
            return Check(
                label,
                Status.FAIL,
                f"{len(off)} file(s) not at {expect}: "
                + ", ".join(f"{f.relative} at {f.version or 'no version'}" for f in off),
                fix=f"{remedy_line(profile)}; then run postflight again",
                evidence=evidence,
                part="versions",
            )
        return Check(
            label,
            Status.PASS,
            f"all {len(found)} file(s) at {expect}",
            evidence=evidence,
            part="versions",
        )
    distinct = {f.version for f in found if f.version is not None}
    if len(distinct) > 1:
        return Check(
            label,
            Status.FAIL,
            f"the installed files disagree: {', '.join(sorted(distinct, key=version_key))}",
            fix=f"{remedy_line(profile)}; so every file comes from the new version",
            evidence=evidence,
            part="versions",
        )
    (version,) = distinct
    if unversioned:
        return Check(
            label,
            Status.WARN,
            f"{len(found) - len(unversioned)} file(s) at {version}; "
            f"{', '.join(unversioned)} carry no version to compare",
            evidence=evidence,
            part="versions",
        )
    return Check(
        label,
        Status.PASS,
        f"all {len(found)} file(s) at {version}",
        evidence=evidence,
        part="versions",
    )


@dataclass(frozen=True)
class VersionRow:
    """One line of the versions table: a file as installed on disk, the versions processes
    have loaded of it, and the version asked for."""

    file: str  # under the root, or the module name when no copy is on disk
    installed: str | None  # None: not on disk (or no version resource)
    loaded: tuple[str, ...]  # "pid 42 perfmon: 4.3.0.12 (stale)"
    expected: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "installed": self.installed,
            "loaded": list(self.loaded),
            "expected": self.expected,
        }


def version_table(
    installed: Sequence[InstalledFile],
    inventory: Inventory | None,
    root: Path,
    expect: str | None,
) -> tuple[VersionRow, ...]:
    """Loaded, installed and expected versions side by side, one row per file: a loaded copy
    is shown on the row of the file it was loaded as (a renamed `.old` copy under its name)."""
    rows: dict[str, tuple[str, str | None, list[str]]] = {}
    for f in installed:
        rows[f.path.lower()] = (f.relative, f.version, [])
    hits = [h for h in inventory.hits if is_under(h.mapped_path, root)] if inventory else []
    for h in hits:
        key = (h.installed.path or h.mapped_path).lower()
        if key.endswith(SET_ASIDE_SUFFIX) and key[: -len(SET_ASIDE_SUFFIX)] in rows:
            key = key[: -len(SET_ASIDE_SUFFIX)]
        if key not in rows:
            version = h.installed.version.file_version if h.installed.version else None
            rows[key] = (_rel(h.installed.path or h.mapped_path, root), version, [])
        loaded = h.loaded.version.label if h.loaded.version else "?"
        rows[key][2].append(
            f"pid {h.process.pid} {h.process.name or '?'}: {loaded} ({h.state.value})"
        )
    return tuple(
        VersionRow(name, version, tuple(loaded), expect) for name, version, loaded in rows.values()
    )


def version_table_lines(rows: Sequence[VersionRow]) -> list[str]:
    """The versions table for the terminal."""
    if not rows:
        return []
    head = ("file", "installed", "loaded", "expected")
    body = [
        (r.file, r.installed or "-", "; ".join(r.loaded) or "not loaded", r.expected or "-")
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(3)]
    lines = ["", "  versions (loaded, installed, expected):"]
    for row in [head, *body]:
        cells = [row[i].ljust(widths[i]) for i in range(3)]
        lines.append("    " + "  ".join([*cells, row[3]]).rstrip())
    return lines


def burst_check(verdict: Verdict | None) -> Check:
    label = "burst"
    if verdict is None:
        return Check(
            label,
            Status.NOT_RUN,
            "no --gateway given, mail flow not tested",
            fix="rerun with --gateway HOST:PORT to prove every notification arrives",
            part="delivery",
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
        part="delivery",
    )


def _rel(path: str, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return path


def held_candidates(profile: Profile, root: Path, inventory: Inventory | None = None) -> list[str]:
    """The profile's files, plus every copy of its modules a process maps under the root (from
    `inventory` when the caller took it, so its report can show the same scan)."""
    paths = profile_files(profile, root)
    if profile.modules:
        inv = inventory or take_inventory(local_source(), list(profile.modules), [])
        paths += [h.mapped_path for h in inv.hits if is_under(h.mapped_path, root)]
    return paths
