"""What a run keeps in the ledger beside its rows: explanation, log, command line, host facts.

`burst` stores these as named JSON artifacts when it ends, so `notifyprobe evidence` on an old run
rebuilds the same bundle without re-running anything or re-scanning a host that has changed
since. Everything is cleaned of secrets before it is stored: the ledger itself never holds one.
Reading back gives typed records, not loose dicts: `RunEvidence` is all of it for one run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from probe.diagnosis import (
    Confidence,
    Diagnosis,
    Explanation,
    PossibleIssue,
    rediagnose,
    split,
)
from probe.history import (
    Revision,
    StoredVerdict,
    Story,
    as_told,
    kept_verdicts,
    revision_of,
    story_of,
)
from probe.host import HostFacts, Inventory, collect_facts, unreadable_note
from probe.ledger import Ledger
from probe.records import ProcessStart, RunRecord
from probe.reporting.redact import Redactor, clean_argv
from probe.verdict import Verdict, judge_recorded

EXPLANATION = "explanation"  # diagnosis, module inventory, gateway processes
LOG = "log"  # the structured log events of the run
COMMAND_LINE = "command_line"  # argv with secrets removed
HOST = "host"  # host facts when the run ended
KNOWN = (EXPLANATION, LOG, COMMAND_LINE, HOST)


@dataclass(frozen=True)
class InventoryRow:
    """One process with a matching module loaded, as the run's inventory judged it."""

    pid: int
    process: str
    module: str
    mapped_path: str
    state: str
    reason: str
    loaded_version: str | None
    installed_version: str | None
    installed_path: str | None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InventoryRow:
        return cls(
            pid=int(d.get("pid") or 0),
            process=str(d.get("process") or "?"),
            module=str(d.get("module") or ""),
            mapped_path=str(d.get("mapped_path") or ""),
            state=str(d.get("state") or "unknown"),
            reason=str(d.get("reason") or ""),
            loaded_version=d.get("loaded_version"),
            installed_version=d.get("installed_version"),
            installed_path=d.get("installed_path"),
        )


@dataclass(frozen=True)
class InventoryView:
    names: tuple[str, ...]
    platform: str
    scanned: int
    denied: int
    vanished: int
    rows: tuple[InventoryRow, ...]
    unreadable_advice: str = ""  # absent from inventories stored before it was kept

    def unreadable_line(self) -> str | None:
        """What a scan that could not read every process leaves unknown (None: it read all)."""
        if not self.denied:
            return None
        return unreadable_note(self.denied, self.scanned, self.unreadable_advice)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InventoryView:
        return cls(
            names=tuple(str(n) for n in d.get("names", [])),
            platform=str(d.get("platform", "")),
            scanned=int(d.get("scanned", 0)),
            denied=int(d.get("denied", 0)),
            vanished=int(d.get("vanished", 0)),
            rows=tuple(InventoryRow.from_dict(h) for h in d.get("hits", [])),
            unreadable_advice=str(d.get("unreadable_advice") or ""),
        )


@dataclass(frozen=True)
class StoredExplanation:
    """The diagnosis side of a run as `burst` saw it (None/empty when not taken)."""

    diagnosis: Diagnosis | None = None
    possible: tuple[PossibleIssue, ...] = ()
    inventory: InventoryView | None = None
    gateway_processes: tuple[ProcessStart, ...] = ()
    modules_json: dict[str, Any] | None = None  # Inventory.to_dict(), kept whole for modules.json

    @classmethod
    def from_json(cls, text: str | None) -> StoredExplanation:
        if not text:
            return cls()
        data = json.loads(text)
        d = data.get("diagnosis")
        diagnosis = (
            Diagnosis(
                signature=str(d["signature"]),
                title=str(d["title"]),
                cause=str(d["cause"]),
                confidence=Confidence[str(d["confidence"]).upper()],
                because=tuple(d.get("because", [])),
                remediation=tuple(d.get("remediation", [])),
                reference=str(d.get("reference", "")),
                runbook=str(d.get("runbook", "")),
            )
            if d
            else None
        )
        modules = data.get("modules")
        starts = tuple(
            ProcessStart(p["kind"], str(p["name"]), int(p["pid"]), float(p["started_at"]))
            for p in data.get("gateway_processes", [])
        )
        diagnosis, demoted = split(diagnosis)  # a run kept before low matches became one line
        kept = tuple(PossibleIssue.from_dict(p) for p in data.get("possible_known_issues", []))
        return cls(
            diagnosis=diagnosis,
            possible=demoted + kept,
            inventory=InventoryView.from_dict(modules) if modules else None,
            gateway_processes=starts,
            modules_json=modules,
        )

    def json_fields(self) -> dict[str, Any]:
        return {
            "diagnosis": self.diagnosis.to_dict() if self.diagnosis else None,
            "possible_known_issues": [p.to_dict() for p in self.possible],
            "modules": self.modules_json,
            "gateway_processes": [s.to_dict() for s in self.gateway_processes],
        }

    def for_verdict(self, verdict: Verdict, run_started_at: float) -> StoredExplanation:
        """The diagnosis and possible known issues again, for `verdict`, from the inventory and
        gateway processes this run kept (the host is not scanned again)."""
        inventory = Inventory.from_dict(self.modules_json) if self.modules_json else None
        diagnosis, possible = rediagnose(verdict, inventory, self.gateway_processes, run_started_at)
        return replace(self, diagnosis=diagnosis, possible=possible)


def explanations(
    kept: str | None, record: RunRecord, revision: Revision | None
) -> tuple[StoredExplanation, StoredExplanation | None]:
    """The explanation to show with the run's verdict, and what was said when the run ended if
    that differs: once late mail has changed the verdict, its hints are recomputed for the
    corrected verdict (a first_only corrected to slow no longer points to an old DLL)."""
    stored = StoredExplanation.from_json(kept)
    if kept is None or revision is None or not revision.changed:
        return stored, None
    return stored.for_verdict(revision.current, record.run.started_at), stored


def keep_artifacts(
    ledger: Ledger,
    run_id: str,
    *,
    explanation: Explanation,
    log_events: Sequence[dict[str, Any]],
    argv: Sequence[str],
    host: HostFacts,
    secrets: Sequence[str] = (),
) -> None:
    """Store the run's artifacts, cleaned of every known secret first."""
    clean = Redactor(secrets)
    documents = {
        EXPLANATION: explanation.json_fields(),
        LOG: list(log_events),
        COMMAND_LINE: clean_argv(argv),
        HOST: host.to_dict(),
    }
    ledger.put_artifacts(
        run_id,
        {
            name: json.dumps(clean.redact_data(value), ensure_ascii=False)
            for name, value in documents.items()
        },
    )


def keep_log(
    ledger: Ledger, run_id: str, events: Sequence[dict[str, Any]], secrets: Sequence[str] = ()
) -> None:
    """Store a run's log events alone (`watch` keeps no other artifact), cleaned of secrets."""
    value = Redactor(secrets).redact_data(list(events))
    ledger.put_artifact(run_id, LOG, json.dumps(value, ensure_ascii=False))


@dataclass(frozen=True)
class KeptCheck:
    status: str
    name: str
    reason: str
    fix: str
    part: str = ""


CHECK_WORD = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "not_run": "NOT RUN"}


@dataclass(frozen=True)
class KeptChecks:
    """Upgrade checks kept with the run (`postflight --gateway` keeps its checks with its burst):
    the command's one status, each part's, every check, and the module inventory it took."""

    name: str  # the artifact's name: postflight, preflight
    status: str
    profile: str
    checks: tuple[KeptCheck, ...]
    parts: tuple[tuple[str, str], ...] = ()  # (part, status) in the order the views show them
    signature: str = ""
    modules_json: dict[str, Any] | None = None  # the inventory the command took
    versions: tuple[dict[str, Any], ...] = ()  # loaded, installed and expected versions

    @classmethod
    def from_artifact(cls, name: str, value: Any) -> KeptChecks | None:
        """None when the document is not a list of checks."""
        if not isinstance(value, dict) or not isinstance(value.get("checks"), list):
            return None
        checks = tuple(
            KeptCheck(
                str(c.get("status", "?")),
                str(c.get("name", "")),
                str(c.get("reason", "")),
                str(c.get("fix") or ""),
                str(c.get("part") or ""),
            )
            for c in value["checks"]
            if isinstance(c, dict)
        )
        parts = value.get("parts")
        modules = value.get("modules")
        return cls(
            name,
            str(value.get("status", "?")),
            str(value.get("profile", "?")),
            checks,
            tuple((str(k), str(v)) for k, v in parts.items()) if isinstance(parts, dict) else (),
            str(value.get("signature") or ""),
            modules if isinstance(modules, dict) else None,
            tuple(v for v in value.get("versions") or () if isinstance(v, dict)),
        )

    @property
    def title(self) -> str:
        return f"{self.name} {self.profile}"

    def headline(self) -> str:
        """`notifyprobe postflight meetingplace: FAIL · delivery pass · …`: what every view of
        the run opens with."""
        word = CHECK_WORD.get(self.status, self.status.upper())
        parts = " · ".join(f"{p} {s.replace('_', ' ')}" for p, s in self.parts)
        return f"notifyprobe {self.title}: {word}" + (f" · {parts}" if parts else "")

    def to_do(self) -> list[str]:
        """The failed checks first, then the warnings, each with its fix: what the command says
        to do, whatever the delivery part below says about mail alone."""
        order = {"fail": 0, "warn": 1}
        bad = sorted((c for c in self.checks if c.status in order), key=lambda c: order[c.status])
        return [f"{c.status.upper()} {c.name}" + (f": {c.fix}" if c.fix else "") for c in bad]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "profile": self.profile,
            "parts": dict(self.parts),
            "checks": [vars(c) for c in self.checks],
            "versions": list(self.versions),
        }


def with_kept_inventory(
    explanation: StoredExplanation, checks: Sequence[KeptChecks]
) -> StoredExplanation:
    """The run's explanation with the module inventory an upgrade command took, when the burst
    itself took none (postflight scans the profile's modules; its burst does not)."""
    if explanation.modules_json is not None:
        return explanation
    for kept in checks:
        if kept.modules_json is not None:
            return replace(
                explanation,
                inventory=InventoryView.from_dict(kept.modules_json),
                modules_json=kept.modules_json,
            )
    return explanation


@dataclass(frozen=True)
class RunReport:
    """One run as every view tells it: `burst`, `verdict RUN` and the bundle's report.txt,
    report.json and report.html render this one model, section by section, so they cannot
    disagree. `revision`: the run judged again with the mail that arrived after its verdict
    (None right after the run); `ledger`: where the run is kept, for the command that judges it
    again."""

    record: RunRecord
    verdict: Verdict
    explanation: StoredExplanation
    upgrade_checks: tuple[KeptChecks, ...] = ()
    revision: Revision | None = None
    ledger: Path | None = None
    original: StoredVerdict | None = None  # judged again: the verdict given when the run ended
    correction: StoredVerdict | None = None  # and its correction by late mail, if one was kept
    # Late mail changed the verdict: `explanation` is recomputed for it, this is what the run's
    # original verdict was told (None: nothing changed, `explanation` is what was said).
    explanation_at_verdict: StoredExplanation | None = None
    # What the run tells with the runs before it: the first_only outage it continues (then
    # `verdict` is told as that outage), a restart of the gateway seen since the run before.
    story: Story = field(default_factory=Story)

    @property
    def command(self) -> KeptChecks | None:
        """The upgrade command this run was the burst of: its status leads every view."""
        return self.upgrade_checks[0] if self.upgrade_checks else None


def told(
    ledger: Ledger, record: RunRecord, verdict: Verdict, explanation: StoredExplanation
) -> tuple[Verdict, StoredExplanation, Story]:
    """The run's verdict and explanation as its story tells them: a run that continues a
    first_only outage is reported first_only, diagnosed again for it from what it kept."""
    story = story_of(ledger, record, verdict)
    if story.outage is None:
        return verdict, explanation, story
    verdict = as_told(verdict, story)
    return verdict, explanation.for_verdict(verdict, record.run.started_at), story


def run_report(
    ledger: Ledger, record: RunRecord, verdict: Verdict, revision: Revision | None = None
) -> RunReport:
    """The model of one judged run, with what the run kept beside its rows."""
    kept = ledger.artifacts(record.run.run_id)
    original, correction = kept_verdicts(ledger, record) if revision else (None, None)
    explanation, at_verdict = explanations(kept.get(EXPLANATION), record, revision)
    checks = kept_checks(_other_artifacts(kept))
    verdict, explanation, story = told(ledger, record, verdict, explanation)
    return RunReport(
        record=record,
        verdict=verdict,
        explanation=with_kept_inventory(explanation, checks),
        story=story,
        upgrade_checks=checks,
        revision=revision,
        ledger=ledger.path,
        original=original,
        correction=correction,
        explanation_at_verdict=at_verdict,
    )


def kept_checks(artifacts: Sequence[tuple[str, Any]]) -> tuple[KeptChecks, ...]:
    found = (KeptChecks.from_artifact(name, value) for name, value in artifacts)
    return tuple(c for c in found if c is not None)


@dataclass(frozen=True)
class RunEvidence:
    """Everything the ledger holds about one run, typed: the run as every view tells it
    (`report`), and what only the evidence bundle carries beside it."""

    report: RunReport
    rows: dict[str, list[dict[str, Any]]]  # table → rows, as stored
    log_events: tuple[dict[str, Any], ...]
    run_command_line: tuple[str, ...] | None
    host: HostFacts
    host_from_run: bool  # False: the run kept no host facts, these were collected now
    other_artifacts: tuple[tuple[str, Any], ...]  # e.g. upgrade checks, by name
    returned: tuple[tuple[int, bytes], ...] = ()  # bounce messages as received, by ledger id

    @property
    def run_id(self) -> str:
        return self.report.record.run.run_id


def load_evidence(ledger: Ledger, run_id: str) -> RunEvidence:
    """Everything the ledger holds about `run_id` (host facts collected now if none were kept)."""
    record = ledger.load(run_id)
    revision = revision_of(ledger, record)
    verdict = revision.current if revision is not None else judge_recorded(record)
    kept = ledger.artifacts(run_id)
    host_json = kept.get(HOST)
    command = kept.get(COMMAND_LINE)
    return RunEvidence(
        report=run_report(ledger, record, verdict, revision),
        rows=ledger.rows(run_id),
        log_events=tuple(json.loads(kept.get(LOG) or "[]")),
        run_command_line=tuple(json.loads(command)) if command else None,
        host=HostFacts.from_dict(json.loads(host_json)) if host_json else collect_facts(),
        host_from_run=host_json is not None,
        other_artifacts=_other_artifacts(kept),
        returned=tuple(ledger.returned_messages(run_id)),
    )


def _other_artifacts(kept: dict[str, str]) -> tuple[tuple[str, Any], ...]:
    return tuple((name, json.loads(text)) for name, text in kept.items() if name not in KNOWN)
