"""Known-issue signatures: data files shipped in the package, one per issue.

A signature names the modules of an issue, the delivery patterns it produces, the services and
directories involved, the remediation steps and the source document. Adding an issue means
adding a TOML file here, no code. Every file is validated when loaded, so a broken signature
stops the probe with a clear message before it sends anything.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from probe.errors import ProbeError
from probe.host import ModuleState
from probe.verdict import Pattern

if TYPE_CHECKING:
    from importlib.abc import Traversable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


# The `notifyprobe fix` actions a known issue's documented remedy includes: a fix is offered or
# accepted only for a signature that lists it, so one issue's remedy is never applied to another.
FixAction = Literal["rename-in-use", "sync-relocated"]
FIX_ACTIONS: tuple[FixAction, ...] = get_args(FixAction)

# Where a known issue loses notifications (`lost_at` in [symptoms]): at the gateway (accepted
# and never delivered, refused, hung up on), or further on, refused by a next hop whose
# delivery report came back. A run whose losses are all somewhere the issue loses none does not
# show its symptom, whatever the pattern.
LossPlace = Literal["gateway", "next_hop"]
LOSS_PLACES: tuple[LossPlace, ...] = get_args(LossPlace)


@dataclass(frozen=True)
class Signature:
    id: str
    title: str
    cause: str
    reference: str
    runbook: str
    modules: tuple[str, ...]
    module_states: frozenset[ModuleState]
    services: tuple[str, ...]
    directories: tuple[str, ...]
    remediation: tuple[str, ...]
    patterns: frozenset[Pattern]  # empty: the loaded modules alone are the evidence
    first_after_restart: bool
    lost_at: frozenset[LossPlace]  # where the issue loses notifications (with `patterns`)
    symptoms: tuple[str, ...]
    confirm: str = ""  # the evidence that confirms or rules it out when only the symptom matches
    remedy: str = ""  # the remediation in one line, for a check's fix and a refusal
    fix_actions: tuple[FixAction, ...] = ()  # the `notifyprobe fix` actions of this remedy


def load_signatures(directory: Path | None = None) -> tuple[Signature, ...]:
    """All signatures, in file-name order; ProbeError names the file and field that is wrong.
    The shipped ones (no `directory`) are read once per process: they change only with the
    package, and a watch prepares a run with them every time (200 targets: 200 reads a
    minute, 7 % of its loop's time while the runs start)."""
    if directory is None:
        return _shipped()
    return _checked(sorted(directory.glob("*.toml")))


@functools.cache
def _shipped() -> tuple[Signature, ...]:
    files = sorted(
        (f for f in resources.files(__name__).iterdir() if f.name.endswith(".toml")),
        key=lambda f: f.name,
    )
    return _checked(files)


def _checked(files: Sequence[Traversable]) -> tuple[Signature, ...]:
    signatures = [parse_signature(f.name, f.read_text(encoding="utf-8")) for f in files]
    seen: set[str] = set()
    for sig in signatures:
        if sig.id in seen:
            raise ProbeError(f"signature id {sig.id!r} is used twice")
        seen.add(sig.id)
    return tuple(signatures)


def parse_signature(name: str, text: str) -> Signature:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProbeError(f"signature {name}: not valid TOML: {exc}") from None
    fields = TomlFields(name, data)
    symptoms = TomlFields(f"{name} [symptoms]", fields.table("symptoms"))
    try:
        patterns = frozenset(Pattern(p) for p in symptoms.strings("patterns"))
        states = frozenset(ModuleState(s) for s in fields.strings("module_states"))
    except ValueError as exc:
        raise ProbeError(f"signature {name}: {exc}") from None
    signature = Signature(
        id=fields.string("id"),
        title=fields.string("title"),
        cause=fields.string("cause"),
        reference=fields.string("reference"),
        runbook=fields.string("runbook"),
        modules=fields.strings("modules"),
        module_states=states,
        services=fields.strings("services"),
        directories=fields.strings("directories"),
        remediation=fields.strings("remediation"),
        patterns=patterns,
        first_after_restart=symptoms.boolean("first_after_restart"),
        lost_at=frozenset(_loss_place(name, p) for p in symptoms.strings("lost_at")),
        symptoms=symptoms.strings("text"),
        confirm=fields.string("confirm") if "confirm" in data else "",
        remedy=fields.string("remedy"),
        fix_actions=tuple(_fix_action(name, a) for a in fields.strings("fix_actions")),
    )
    if not signature.remediation:
        raise ProbeError(f"signature {name}: remediation has no steps")
    if signature.patterns and not signature.lost_at:
        raise ProbeError(f"signature {name}: patterns need lost_at (where the issue loses mail)")
    if not signature.modules and not signature.directories:
        raise ProbeError(f"signature {name}: needs modules or directories to match loaded copies")
    return signature


def _fix_action(name: str, action: str) -> FixAction:
    for known in FIX_ACTIONS:
        if action == known:
            return known
    raise ProbeError(
        f"signature {name}: fix action {action!r} is not one of {', '.join(FIX_ACTIONS)}"
    )


def _loss_place(name: str, place: str) -> LossPlace:
    for known in LOSS_PLACES:
        if place == known:
            return known
    raise ProbeError(f"signature {name}: lost_at {place!r} is not one of {', '.join(LOSS_PLACES)}")


class TomlFields:
    """Typed access to one TOML table, with errors that name the file and the field."""

    def __init__(self, where: str, data: dict[str, object], kind: str = "signature"):
        self.where = where
        self.data = data
        self.kind = kind

    def _get(self, key: str) -> object:
        if key not in self.data:
            raise ProbeError(f"{self.kind} {self.where}: missing field {key!r}")
        return self.data[key]

    def string(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str) or not value.strip():
            raise ProbeError(f"{self.kind} {self.where}: {key!r} must be a non-empty string")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        value = self._get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ProbeError(f"{self.kind} {self.where}: {key!r} must be a list of strings")
        return tuple(value)

    def boolean(self, key: str) -> bool:
        value = self._get(key)
        if not isinstance(value, bool):
            raise ProbeError(f"{self.kind} {self.where}: {key!r} must be true or false")
        return value

    def table(self, key: str) -> dict[str, object]:
        value = self._get(key)
        if not isinstance(value, dict):
            raise ProbeError(f"{self.kind} {self.where}: [{key}] must be a table")
        return value
