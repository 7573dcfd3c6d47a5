"""Diagnosis: the verdict joined with the module inventory and a known-issue signature.

`diagnose` is pure: it takes what the run proved (the verdict), what the inventory found, the
gateway restart facts and the signatures, and names at most one cause with a confidence, the
evidence lines behind it and the signature's remediation. Nothing wrong with the mail flow and
no old copy loaded → no diagnosis.

Only a medium or high confidence is a diagnosis worth a cause and a remediation: a symptom that
matches a known issue with no module evidence behind it is a *possible* known issue, one line
saying what evidence would confirm or rule it out (`split`). A support engineer handed a
six-step remediation for a cause nothing points to goes down the wrong path.

Where the notifications were lost is evidence too. A notification that came back with a report
naming a next hop that refused it was accepted and relayed by the gateway: an issue that loses
mail inside the gateway (a signature's `lost_at`) does not explain it, so when every loss of a
run is such a refusal, that issue is not offered even as possible (`next_hop_line` says where
the mail was refused instead). Loaded module evidence stands on its own: an old copy found
keeps its diagnosis, and the refusals are named beside it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from probe.diagnosis.restarts import RestartFinding
from probe.diagnosis.signatures import LossPlace, Signature
from probe.host import Inventory, ModuleHit, NameMatcher
from probe.records import ProcessStart
from probe.verdict import Cause, Pattern, Verdict

MAX_HIT_LINES = 5


class Confidence(IntEnum):
    LOW = 1
    MEDIUM = 2
    HIGH = 3

    @property
    def word(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class RestartFacts:
    """What the run knows about the gateway's own processes."""

    starts: tuple[ProcessStart, ...] = ()  # as recorded when the run began
    run_started_at: float | None = None
    restarted_during_run: bool = False
    history: RestartFinding | None = None


@dataclass(frozen=True)
class Diagnosis:
    signature: str
    title: str
    cause: str
    confidence: Confidence
    because: tuple[str, ...]
    remediation: tuple[str, ...]
    reference: str
    runbook: str
    to_confirm: str = ""  # what evidence would confirm or rule it out (said when it is low)

    @property
    def firm(self) -> bool:
        """Evidence points to it: worth its cause and remediation."""
        return self.confidence >= Confidence.MEDIUM

    def to_dict(self) -> dict[str, Any]:
        return {
            "signature": self.signature,
            "title": self.title,
            "cause": self.cause,
            "confidence": self.confidence.word,
            "because": list(self.because),
            "remediation": list(self.remediation),
            "reference": self.reference,
            "runbook": self.runbook,
        }


@dataclass(frozen=True)
class PossibleIssue:
    """A known issue the symptom matches with no evidence behind it: one line, never a cause."""

    signature: str
    title: str
    to_confirm: str

    @property
    def line(self) -> str:
        confirm = f": {self.to_confirm}" if self.to_confirm else ""
        return f"[{self.signature}] {self.title} (low confidence){confirm}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "signature": self.signature,
            "title": self.title,
            "confidence": "low",
            "to_confirm": self.to_confirm,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PossibleIssue:
        return cls(str(data["signature"]), str(data["title"]), str(data.get("to_confirm", "")))


def split(diagnosis: Diagnosis | None) -> tuple[Diagnosis | None, tuple[PossibleIssue, ...]]:
    """A firm diagnosis, or the possible known issue a low-confidence match amounts to."""
    if diagnosis is None or diagnosis.firm:
        return diagnosis, ()
    return None, (PossibleIssue(diagnosis.signature, diagnosis.title, diagnosis.to_confirm),)


def diagnose(
    verdict: Verdict,
    inventory: Inventory | None,
    signatures: Sequence[Signature],
    restarts: RestartFacts | None = None,
) -> Diagnosis | None:
    restarts = restarts or RestartFacts()
    candidates = [
        d for sig in signatures if (d := _judge(sig, verdict, inventory, restarts)) is not None
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda d: (d.confidence, len(d.because)))


# What the gateway said explains these verdicts by itself: a rate limit, a reply that is not SMTP,
# a TLS handshake, a name that does not resolve, refused credentials. A known issue matched on
# the delivery pattern alone would send a support engineer the wrong way.
EXPLAINED = frozenset({Cause.PROTOCOL, Cause.TLS, Cause.DNS, Cause.AUTH})


def explained(verdict: Verdict) -> bool:
    """The evidence names the cause: no known issue is matched on the pattern alone."""
    return verdict.pattern is Pattern.THROTTLED or verdict.cause in EXPLAINED


def _judge(
    sig: Signature, verdict: Verdict, inventory: Inventory | None, restarts: RestartFacts
) -> Diagnosis | None:
    old = [
        h
        for h in (inventory.hits if inventory else ())
        if covers(sig, h) and h.state in sig.module_states
    ]
    if not sig.patterns:
        if not old:
            return None
        because = [_hit_line(h) for h in old[:MAX_HIT_LINES]]
        because += _more(old)
        return _diagnosis(sig, Confidence.MEDIUM, because)
    if verdict.pattern not in sig.patterns or explained(verdict):
        return None
    elsewhere = not lost_at(verdict) & sig.lost_at  # lost only where this issue loses none
    if elsewhere and not old:
        return None

    because = [f"verdict {verdict.pattern.value}: {verdict.summary}"]
    if elsewhere:
        because.append(
            "the old copy loaded is evidence of its own, whatever the bounces say, but it does "
            f"not explain them: {next_hop_line(verdict)}"
        )
    elif verdict.next_hop is not None:
        because.append(next_hop_line(verdict))
    if old:
        confidence = Confidence.HIGH
        because += [_hit_line(h) for h in old[:MAX_HIT_LINES]] + _more(old)
    else:
        confidence = Confidence.LOW
        because.append(_no_old_copy_line(sig, inventory))
        if inventory is not None and inventory.denied:
            because.append(f"{inventory.unreadable_note()}: the module evidence is incomplete")

    if verdict.sink_verified:
        because.append(
            "the probe's own sink received its control message in this run, so the loss is not "
            "in the sink"
        )
    else:
        confidence = Confidence(max(Confidence.LOW, confidence - 1))
        because.append(
            "the probe's own sink was not proven healthy in this run (no control message): "
            "the sink itself is not ruled out"
        )

    because += _restart_lines(restarts)
    finding = restarts.history
    if sig.first_after_restart and finding is not None and finding.matches:
        confidence = Confidence(min(Confidence.HIGH, confidence + 1))
    return _diagnosis(sig, confidence, because, _to_confirm(sig, inventory))


def lost_at(verdict: Verdict) -> frozenset[LossPlace]:
    """Where the run's notifications were lost: refused by a next hop, at the gateway, or both."""
    hop = verdict.next_hop
    if hop is None:
        return frozenset({"gateway"})
    return frozenset({"next_hop"}) if hop.all_lost else frozenset({"gateway", "next_hop"})


def next_hop_line(verdict: Verdict) -> str:
    """Where the notifications a next hop refused were refused, and what to check; "" when no
    loss was refused beyond the gateway."""
    hop = verdict.next_hop
    if hop is None:
        return ""
    report = (
        f"{hop.status}: {hop.diagnostic}" if hop.status else hop.diagnostic or "no reason given"
    )
    check = f"check the policy and rate limits of {hop.remote_mta} for the probe's mail"
    if hop.all_lost:
        return (
            f"every lost notification ({hop.lost}) was accepted by the gateway and refused further "
            f"on, by {hop.remote_mta} ({report}): the gateway relayed them, so nothing inside it "
            f"lost them; {check}"
        )
    return (
        f"{hop.refused} of the {hop.lost} lost notifications were bounces: accepted by the "
        f"gateway and refused further on, by {hop.remote_mta} ({report}); the other "
        f"{hop.lost - hop.refused} were lost at the gateway; for the bounces, {check}"
    )


def covers(sig: Signature, hit: ModuleHit) -> bool:
    """Is this loaded module one the signature is about (by name, or by directory)?"""
    basename = re.split(r"[\\/]", hit.mapped_path)[-1]
    if sig.modules and NameMatcher(sig.modules).match(basename) is not None:
        return True
    path = _normal(hit.mapped_path)
    return any(_normal(d) in path for d in sig.directories)


def _normal(path: str) -> str:
    path = path.replace("[drive]:", "")
    return path.replace("\\", "/").lower()


def _hit_line(hit: ModuleHit) -> str:
    p = hit.process
    loaded = hit.loaded.version.label if hit.loaded.version else "an unreadable copy"
    installed = hit.installed.version.label if hit.installed.version else "nothing"
    return (
        f"pid {p.pid} {p.name or '?'} has {hit.mapped_path} loaded ({hit.state.value}): "
        f"loaded {loaded}, installed {installed}"
    )


def _more(hits: Sequence[ModuleHit]) -> list[str]:
    extra = len(hits) - MAX_HIT_LINES
    return [f"… and {extra} more process(es) with an old copy"] if extra > 0 else []


def _to_confirm(sig: Signature, inventory: Inventory | None) -> str:
    if inventory is None or not inventory.scanned:
        if sig.confirm:
            return sig.confirm
        module = sig.modules[0] if sig.modules else "NAME"
        return (
            f"run again on the gateway host with --module {module} --installed PATH: an old "
            "copy loaded confirms it, none rules it out"
        )
    names = ", ".join(sig.modules) or ", ".join(sig.directories)
    if inventory.denied:
        # A blind scan rules nothing out: the unread process may be the one with the old copy.
        return (
            f"none of the {inventory.scanned} processes read has an old copy of {names} "
            f"loaded, but that does not rule it out: {inventory.unreadable_note()}"
        )
    return (
        f"no old copy of {names} is loaded ({inventory.scanned} processes scanned), which "
        "points away from it"
    )


def _no_old_copy_line(sig: Signature, inventory: Inventory | None) -> str:
    names = ", ".join(sig.modules) or ", ".join(sig.directories)
    if inventory is None:
        return (
            f"no module inventory was taken, so the symptom matches but the module evidence is "
            f"missing (add --module {sig.modules[0] if sig.modules else 'NAME'} --installed PATH)"
        )
    if inventory.denied:
        return (
            f"none of the {inventory.scanned} processes read has an old copy of {names} "
            f"loaded, and {inventory.denied} could not be read: the symptom matches but the "
            "module evidence is missing"
        )
    return (
        f"no process has an old copy of {names} loaded ({inventory.scanned} processes "
        "scanned): the symptom matches but the module evidence is missing"
    )


def _restart_lines(restarts: RestartFacts) -> list[str]:
    lines = []
    if restarts.run_started_at is not None:
        for s in restarts.starts[:MAX_HIT_LINES]:
            ago = restarts.run_started_at - s.started_at
            lines.append(
                f"gateway {s.kind} {s.name} (pid {s.pid}) started {ago:.0f} s before this run"
            )
    if restarts.restarted_during_run:
        lines.append("a gateway process restarted during the run")
    if restarts.history is not None:
        lines += list(restarts.history.lines)
    return lines


def _diagnosis(
    sig: Signature, confidence: Confidence, because: list[str], to_confirm: str = ""
) -> Diagnosis:
    return Diagnosis(
        signature=sig.id,
        title=sig.title,
        cause=sig.cause,
        confidence=confidence,
        because=tuple(because),
        remediation=sig.remediation,
        reference=sig.reference,
        runbook=sig.runbook,
        to_confirm=to_confirm,
    )
