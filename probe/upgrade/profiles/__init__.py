"""Upgrade profiles: what to check before and after one documented upgrade, as data.

A profile turns one reference document into checkable facts: the files an installer replaces
(in use → it stops), the folders that must be gone afterwards, the backup the procedure asks for,
and for a relocated install the registry values and the share that must name the relocated
copy. Paths are Windows paths written with `/` and resolved under `--root`, so the same profile
checks a live `C:\\` and a copy of a customer's tree. The module names come from the profile's
signature, so the known issue and the upgrade checks never disagree about which files matter.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal, TypeVar, get_args

from probe.diagnosis import Signature, TomlFields, load_signatures
from probe.errors import ProbeError, UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

LeftoverSeverity = Literal["fail", "warn"]
PointsAt = Literal["relocated"]
SEVERITIES: tuple[LeftoverSeverity, ...] = get_args(LeftoverSeverity)
POINTS_AT: tuple[PointsAt, ...] = get_args(PointsAt)
_Choice = TypeVar("_Choice", bound=str)


@dataclass(frozen=True)
class Leftover:
    path: str  # relative to the root, `/`-separated
    severity: LeftoverSeverity  # fail: the procedure requires it gone; warn: remove "if necessary"


@dataclass(frozen=True)
class Backup:
    what: str
    patterns: tuple[str, ...]  # at least one non-empty file must match one of these


@dataclass(frozen=True)
class RegistryRule:
    """A value that must name the relocated copy; `{service}` expands to each service."""

    key: str
    value: str
    points_at: PointsAt

    def expand(self, services: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
        if "{service}" not in self.key:
            return ((self.key, self.value),)
        return tuple((self.key.replace("{service}", s), self.value) for s in services)


@dataclass(frozen=True)
class Share:
    name: str
    folder: str  # the shared folder's name, a sibling of the relocated bin folder's parent


@dataclass(frozen=True)
class Profile:
    id: str
    title: str
    signature: Signature
    procedure: tuple[str, ...]
    files: tuple[str, ...]
    # File names whose PE version is the installed version of the known issue's files, found
    # wherever they are under the watched and leftover folders (MPNotifyPerf.dll for 000).
    versioned: tuple[str, ...]
    watch_dirs: tuple[str, ...]
    leftovers: tuple[Leftover, ...]
    backup: Backup | None
    services: tuple[str, ...]
    registry: tuple[RegistryRule, ...]
    share: Share | None

    @property
    def modules(self) -> tuple[str, ...]:
        return self.signature.modules


def profile_names(directory: Path | None = None) -> tuple[str, ...]:
    return tuple(name for name, _ in _files(directory))


def load_profile(name: str, directory: Path | None = None) -> Profile:
    """The profile called `name`; UsageError lists the known ones when there is none."""
    files = dict(_files(directory))
    if name not in files:
        known = ", ".join(sorted(files)) or "none"
        raise UsageError(f"no profile {name!r} (known: {known})")
    return parse_profile(f"{name}.toml", files[name], {s.id: s for s in load_signatures()})


def _files(directory: Path | None) -> list[tuple[str, str]]:
    if directory is None:
        found = [
            (f.name[:-5], f.read_text(encoding="utf-8"))
            for f in resources.files(__name__).iterdir()
            if f.name.endswith(".toml")
        ]
    else:
        found = [(f.stem, f.read_text(encoding="utf-8")) for f in directory.glob("*.toml")]
    return sorted(found)


class _Profile(TomlFields):
    def __init__(self, where: str, data: dict[str, object]):
        super().__init__(where, data, kind="profile")

    def optional_strings(self, key: str) -> tuple[str, ...]:
        return self.strings(key) if key in self.data else ()

    def tables(self, key: str) -> list[_Profile]:
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise ProbeError(f"profile {self.where}: [[{key}]] must be an array of tables")
        return [_Profile(f"{self.where} [[{key}]] #{i + 1}", v) for i, v in enumerate(value)]

    def optional_table(self, key: str) -> _Profile | None:
        return _Profile(f"{self.where} [{key}]", self.table(key)) if key in self.data else None

    def choice(self, key: str, choices: tuple[_Choice, ...], default: _Choice) -> _Choice:
        value = self.string(key) if key in self.data else default
        for choice in choices:
            if value == choice:
                return choice
        raise ProbeError(f"profile {self.where}: {key!r} must be one of {', '.join(choices)}")


def parse_profile(name: str, text: str, signatures: dict[str, Signature]) -> Profile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProbeError(f"profile {name}: not valid TOML: {exc}") from None
    fields = _Profile(name, data)
    sig_id = fields.string("signature")
    if sig_id not in signatures:
        raise ProbeError(f"profile {name}: unknown signature {sig_id!r}")
    signature = signatures[sig_id]
    backup = fields.optional_table("backup")
    share = fields.optional_table("share")
    profile = Profile(
        id=fields.string("id"),
        title=fields.string("title"),
        signature=signature,
        procedure=fields.strings("procedure"),
        files=tuple(_relative(p, name) for p in fields.optional_strings("files")),
        versioned=tuple(_file_name(n, name) for n in fields.optional_strings("versioned")),
        watch_dirs=tuple(_relative(p, name) for p in fields.optional_strings("watch_dirs")),
        leftovers=tuple(
            Leftover(_relative(t.string("path"), name), t.choice("severity", SEVERITIES, "fail"))
            for t in fields.tables("leftovers")
        ),
        backup=Backup(backup.string("what"), backup.strings("patterns")) if backup else None,
        services=fields.optional_strings("services") or signature.services,
        registry=tuple(_rule(t) for t in fields.tables("registry")),
        share=Share(share.string("name"), share.string("folder")) if share else None,
    )
    if profile.id != name.removesuffix(".toml"):
        raise ProbeError(f"profile {name}: id {profile.id!r} must match the file name")
    if not profile.procedure:
        raise ProbeError(f"profile {name}: procedure has no steps")
    if profile.backup is not None and not profile.backup.patterns:
        raise ProbeError(f"profile {name}: [backup] patterns is empty")
    return profile


def _rule(table: _Profile) -> RegistryRule:
    points_at = table.choice("points_at", POINTS_AT, "relocated")
    return RegistryRule(table.string("key"), table.string("value"), points_at)


def under_root(root: Path, relative: str) -> Path:
    """`relative` under `root`. Each part that does not exist as written is matched
    case-insensitively, as Windows would (a copy of a customer's tree keeps their casing)."""
    current = root
    for part in relative.split("/"):
        candidate = current / part
        if not candidate.exists() and current.is_dir():
            try:
                names = {entry.name.lower(): entry.name for entry in os.scandir(current)}
            except OSError:
                names = {}
            candidate = current / names.get(part.lower(), part)
        current = candidate
    return current


def _file_name(file: str, name: str) -> str:
    """A versioned file is named by its file name alone: it is found wherever it was installed."""
    if not file.strip() or "/" in file or "\\" in file:
        raise ProbeError(f"profile {name}: versioned {file!r} must be a file name, not a path")
    return file


def _relative(path: str, name: str) -> str:
    """A profile path is relative and `/`-separated; `..` would escape the root."""
    parts = [p for p in path.replace("\\", "/").split("/") if p and p != "."]
    if not parts or ".." in parts or ":" in parts[0]:
        raise ProbeError(f"profile {name}: path {path!r} must be relative to the root, no '..'")
    return "/".join(parts)
