"""Remediation with an undo journal: the documented fixes, never silent, always reversible.

Two fixes come straight from the documents: rename files in use to `.old` (001) and copy the
newer binaries over a relocated bin folder after backing it up (002, steps 1-2). Both are plans
first: a dry run prints the plan and touches nothing. Applying writes a JSON journal *before*
each step (fsynced), so a crash or a failure half-way leaves a record of exactly which steps ran.
Each step is atomic on its own — a rename, or a copy to a temporary file then `os.replace` — so
every file is either the old one or the new one, never lost or half-written. `undo` checks every
file against the journal's hashes before it changes anything, then reverses in reverse order.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import platformdirs

from probe.diagnosis import FixAction as FixName
from probe.errors import ProbeError
from probe.upgrade.drift import FileDrift, inside
from probe.upgrade.profiles import Profile

JOURNAL_FORMAT = "notifyprobe-undo-journal"
JOURNAL_VERSION = 1
TMP_SUFFIX = ".notifyprobe-tmp"
_CHUNK = 1 << 20

StepOp = Literal["rename", "backup", "replace"]
StepStatus = Literal["planned", "started", "done", "failed", "undone"]


@dataclass(frozen=True)
class FixAction:
    """One reversible change. `op`: rename (source → target), backup (copy the folder `source`
    to `target`), replace (copy `source` over `target`; the old file is kept at `backup`)."""

    op: StepOp
    source: str
    target: str
    old_sha256: str | None = None  # target before (replace) / the renamed file (rename)
    new_sha256: str | None = None  # target after (replace)
    backup: str | None = None
    made_dirs: tuple[str, ...] = ()
    status: StepStatus = "planned"

    def describe(self) -> str:
        if self.op == "rename":
            return f"rename {self.source} -> {Path(self.target).name}"
        if self.op == "backup":
            return f"back up {self.source} -> {self.target}"
        verb = "replace" if self.old_sha256 else "add"
        return f"{verb} {self.target} with {self.source}"


@dataclass(frozen=True)
class Plan:
    action: str
    steps: tuple[FixAction, ...]
    notes: tuple[str, ...] = ()

    def text(self, applied: bool) -> str:
        if not self.steps:
            head = "nothing to do"
        elif applied:
            head = "applied"
        else:
            head = "dry run: nothing changed; rerun with --apply to do this"
        lines = [f"notifyprobe fix {self.action}: {len(self.steps)} step(s), {head}"]
        lines += [f"  {i}. {s.describe()}" for i, s in enumerate(self.steps, 1)]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


NOT_A_FILE = "not-a-file"


def _sha_or_none(path: Path) -> str | None:
    """The file's hash, None when nothing is there, NOT_A_FILE for a folder in its place."""
    try:
        return sha256_file(path)
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        return NOT_A_FILE
    except OSError as exc:
        raise ProbeError(f"cannot read {path}: {exc.strerror or exc}") from None


def default_journal(action: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    directory = platformdirs.user_data_path("notifyprobe", appauthor=False) / "journals"
    return directory / f"{action}-{stamp}-{os.getpid()}.json"


# --- planning ---------------------------------------------------------------------------------


def offered_for(profile: Profile, action: FixName) -> str | None:
    """None when `action` is part of the remedy of the profile's known issue (its signature
    lists it); otherwise the one-line reason it is refused, naming the right remedy."""
    sig = profile.signature
    if action in sig.fix_actions:
        return None
    return (
        f"fix {action} is not the remedy for {profile.id} (known issue {sig.id}, {sig.title}): "
        f"{sig.remedy}; see {sig.runbook}"
    )


def plan_renames(paths: Sequence[str], suffix: str = ".old") -> Plan:
    """Document 001: each file in use becomes `NAME.old`. An existing `.old` stops the plan:
    overwriting it would destroy the copy an earlier attempt set aside."""
    steps, clashes = [], []
    for path in dict.fromkeys(paths):
        source = Path(path)
        target = source.with_name(source.name + suffix)
        if target.exists() or target.is_symlink():
            clashes.append(str(target))
            continue
        try:
            digest = sha256_file(source)
        except OSError as exc:
            raise ProbeError(f"cannot read {source}: {exc.strerror or exc}") from None
        steps.append(FixAction("rename", str(source), str(target), old_sha256=digest))
    if clashes:
        raise ProbeError(f"{', '.join(clashes)} already exist(s): move it aside first")
    return Plan("rename-in-use", tuple(steps))


def plan_sync(
    default: Path, relocated: Path, drifts: Sequence[FileDrift], backup_dir: Path | None = None
) -> Plan:
    """Document 002 steps 1-2: back up the relocated folder, then copy every file that is older,
    missing or different there from the default copy. Newer and extra files are left alone."""
    todo = [d for d in drifts if d.needs_copy]
    notes = tuple(
        f"{d.name}: relocated copy is {d.state.value}, left alone"
        for d in drifts
        if not d.needs_copy and d.state.value in ("newer", "extra")
    )
    if not todo:
        return Plan("sync-relocated", (), notes + ("the relocated copy is up to date",))
    backup = backup_dir or _free_backup_dir(relocated)
    if backup.exists():
        raise ProbeError(f"backup folder {backup} already exists")
    if inside(backup.resolve(), relocated.resolve()):
        raise ProbeError(f"backup folder {backup} must not be inside {relocated}")
    steps = [FixAction("backup", str(relocated), str(backup))]
    for d in todo:
        assert d.default is not None
        if d.relocated is not None:
            target = Path(d.relocated.path)
            old, kept = d.relocated.sha256, str(backup / target.relative_to(relocated))
        else:
            target, old, kept = relocated / d.name, None, None
        steps.append(
            FixAction(
                "replace",
                d.default.path,
                str(target),
                old_sha256=old,
                new_sha256=d.default.sha256,
                backup=kept,
            )
        )
    return Plan("sync-relocated", tuple(steps), notes)


def _free_backup_dir(relocated: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = relocated.parent / f"{relocated.name}.backup-{stamp}"
    for n in range(100):
        candidate = base if n == 0 else base.with_name(f"{base.name}-{n}")
        if not candidate.exists():
            return candidate
    raise ProbeError(f"no free backup folder name next to {relocated}")


# --- the journal ------------------------------------------------------------------------------


class Journal:
    """The undo journal on disk, rewritten atomically and fsynced at every change."""

    def __init__(
        self, path: Path, action: str, steps: Sequence[FixAction], state: str = "applying"
    ):
        self.path = path
        self.action = action
        self.steps = list(steps)
        self.state = state

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": JOURNAL_FORMAT,
            "version": JOURNAL_VERSION,
            "action": self.action,
            "state": self.state,
            "written_at": time.time(),
            "steps": [asdict(s) for s in self.steps],
        }

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(self.path.name + TMP_SUFFIX)
        data = json.dumps(self.to_dict(), indent=2).encode("utf-8")
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self.path)
        _fsync_dir(self.path.parent)

    def mark(self, index: int, status: StepStatus, **changes: Any) -> None:
        self.steps[index] = replace(self.steps[index], status=status, **changes)
        self.save()

    @classmethod
    def load(cls, path: Path) -> Journal:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ProbeError(f"cannot read journal {path}: {exc.strerror or exc}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProbeError(f"journal {path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != JOURNAL_FORMAT:
            raise ProbeError(f"{path} is not a notifyprobe undo journal")
        try:
            steps = [
                FixAction(**{**s, "made_dirs": tuple(s.get("made_dirs", ()))})
                for s in data["steps"]
            ]
            return cls(path, str(data["action"]), steps, data["state"])
        except (KeyError, TypeError) as exc:
            raise ProbeError(f"journal {path} is damaged: {exc}") from None


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return  # Windows cannot open a directory for fsync; NTFS journals the rename itself
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- applying ---------------------------------------------------------------------------------


def apply(plan: Plan, journal_path: Path, fail_before: int | None = None) -> Journal:
    """Run the plan step by step, journal first. `fail_before` (1-based) makes that step fail
    before it changes anything: tests use it to prove a half-way failure loses nothing."""
    if journal_path.exists():
        raise ProbeError(f"journal {journal_path} already exists: choose another --journal")
    journal = Journal(journal_path, plan.action, plan.steps)
    try:
        journal.save()
    except OSError as exc:
        raise ProbeError(f"cannot write journal {journal_path}: {exc.strerror or exc}") from None
    total = len(plan.steps)
    for index, step in enumerate(plan.steps):
        journal.mark(index, "started")
        try:
            if fail_before == index + 1:
                raise OSError(f"injected failure before step {index + 1}")
            made = _RUN[step.op](step)
        except (OSError, ProbeError) as exc:
            journal.mark(index, "failed")
            journal.state = "failed"
            journal.save()
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ProbeError(
                f"step {index + 1} of {total} ({step.describe()}) failed: {why}; every file is "
                f"either old or new; undo with: notifyprobe fix undo {journal_path}"
            ) from None
        journal.mark(index, "done", made_dirs=made)
    journal.state = "applied"
    journal.save()
    return journal


def _run_rename(step: FixAction) -> tuple[str, ...]:
    if os.path.lexists(step.target):
        raise ProbeError(f"{step.target} appeared since the plan was made")
    os.rename(step.source, step.target)
    _fsync_dir(Path(step.target).parent)
    return ()


def _run_backup(step: FixAction) -> tuple[str, ...]:
    source, target = Path(step.source), Path(step.target)
    shutil.copytree(source, target, symlinks=True)
    for path in source.rglob("*"):
        if path.is_file() and not path.is_symlink():
            copy = target / path.relative_to(source)
            if sha256_file(copy) != sha256_file(path):
                raise ProbeError(f"backup copy {copy} differs from {path}")
    return ()


def _run_replace(step: FixAction) -> tuple[str, ...]:
    target = Path(step.target)
    if _sha_or_none(target) != step.old_sha256:
        raise ProbeError(f"{target} changed since the plan was made")
    made = []
    parent = target.parent
    missing = []
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        directory.mkdir()
        made.append(str(directory))
    _copy_atomically(Path(step.source), target, step.new_sha256)
    return tuple(made)


def _copy_atomically(source: Path, target: Path, expected: str | None) -> None:
    """Copy to a temporary file beside the target, check its hash, fsync, then os.replace:
    the target is the old file until the rename, the new one after it."""
    temp = target.with_name(target.name + TMP_SUFFIX)
    try:
        shutil.copy2(source, temp)
        if expected is not None and sha256_file(temp) != expected:
            raise ProbeError(f"{source} changed since the plan was made")
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, target)
    finally:
        if os.path.lexists(temp) and not os.path.isdir(temp):
            os.unlink(temp)
    _fsync_dir(target.parent)


_RUN: dict[str, Callable[[FixAction], tuple[str, ...]]] = {
    "rename": _run_rename,
    "backup": _run_backup,
    "replace": _run_replace,
}


# --- undoing ----------------------------------------------------------------------------------


def undo(journal_path: Path) -> tuple[Journal, list[str]]:
    """Reverse every step that ran (done, started or failed), newest first. Every file is
    checked before anything changes: a file changed since is reported and nothing is touched."""
    journal = Journal.load(journal_path)
    if journal.state == "undone":
        raise ProbeError(f"journal {journal_path} was already undone")
    todo: list[int] = []
    problems: list[str] = []
    for index in reversed(range(len(journal.steps))):
        step = journal.steps[index]
        if step.status not in ("started", "done", "failed"):
            continue
        needed, problem = _undo_needed(step)
        if problem:
            problems.append(f"step {index + 1} ({step.describe()}): {problem}")
        elif needed:
            todo.append(index)
    if problems:
        raise ProbeError("cannot undo, nothing changed: " + "; ".join(problems))
    done = []
    for index in todo:
        step = journal.steps[index]
        try:
            _UNDO[step.op](step)
        except OSError as exc:
            raise ProbeError(
                f"undo stopped at step {index + 1} ({step.describe()}): "
                f"{exc.strerror or exc}; fix that and run undo again"
            ) from None
        journal.mark(index, "undone")
        done.append(f"undid: {step.describe()}")
    journal.state = "undone"
    journal.save()
    return journal, done


def _undo_needed(step: FixAction) -> tuple[bool, str]:
    """(must reverse, problem). A step that never took effect needs nothing."""
    if step.op == "rename":
        at_source = _sha_or_none(Path(step.source))
        at_target = _sha_or_none(Path(step.target))
        if at_target == step.old_sha256 and at_source is None:
            return True, ""
        if at_source == step.old_sha256 and at_target is None:
            return False, ""
        return False, f"neither {step.source} nor {step.target} is the renamed file any more"
    if step.op == "replace":
        now = _sha_or_none(Path(step.target))
        if now == step.old_sha256 or (step.status != "done" and now != step.new_sha256):
            return False, ""  # never replaced: each replace is atomic, so old means untouched
        if now != step.new_sha256:
            return False, f"{step.target} was changed after the fix"
        if step.backup and _sha_or_none(Path(step.backup)) != step.old_sha256:
            return False, f"the backup {step.backup} is missing or changed"
        return True, ""
    return False, ""  # the backup folder is kept: it is the operator's safety copy


def _undo_rename(step: FixAction) -> None:
    os.rename(step.target, step.source)
    _fsync_dir(Path(step.source).parent)


def _undo_replace(step: FixAction) -> None:
    target = Path(step.target)
    if step.backup is None:
        target.unlink()
        for directory in reversed(step.made_dirs):
            try:
                os.rmdir(directory)
            except OSError:
                break
        _fsync_dir(target.parent if target.parent.exists() else target.parent.parent)
        return
    _copy_atomically(Path(step.backup), target, step.old_sha256)


_UNDO: dict[str, Callable[[FixAction], None]] = {
    "rename": _undo_rename,
    "replace": _undo_replace,
    "backup": lambda step: None,
}
