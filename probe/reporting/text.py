"""Rendering a judged run: the terminal summary people read and the JSON machines read."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from probe.delivery import INSECURE_WARNING, SettleWindow, StoredVerdict
from probe.diagnosis import Diagnosis, PossibleIssue
from probe.host import Inventory
from probe.records import Notification, Run, RunRecord
from probe.verdict import Pattern, Revision, Severity, Verdict

MEANING: dict[Pattern, tuple[str, str]] = {
    Pattern.HEALTHY: (
        "Every notification went through the gateway and arrived exactly once.",
        "Nothing to do.",
    ),
    Pattern.FIRST_ONLY: (
        "The gateway handles one notification after a (re)start and fails every later one: the "
        "signature of an old performance module (MPNotifyPerf.dll) still loaded after an upgrade.",
        "Run `notifyprobe modules` on the gateway host to find the process holding the old "
        "module; see docs/verdicts.md#first_only.",
    ),
    Pattern.DEGRADED_AFTER_K: (
        "The gateway delivered the first notifications, then stopped: a resource runs out or a "
        "component fails after a number of messages.",
        "Check the gateway's queue and logs around the first lost notification; restart it and "
        "probe again to see if k stays the same.",
    ),
    Pattern.QUEUED_PER_SESSION: (
        "The gateway (or the MTA in front of it) holds back every message after the first K of "
        "one SMTP connection for its next queue run: a per-connection limit such as Exim's "
        "smtp_accept_queue_per_connection, not a fault. The default burst shape stays under it.",
        "Judge the run again after the gateway's queue run (command below); if notifications are "
        "still missing then, they were lost. Keep --per-session below K; see "
        "docs/verdicts.md#queued_per_session.",
    ),
    Pattern.INTERMITTENT: (
        "Notifications are lost at scattered positions: an unreliable hop, not a startup state.",
        "Look at the refused replies in the evidence and at the gateway's downstream relay.",
    ),
    Pattern.NONE_DELIVERED: (
        "The gateway accepts notifications and loses all of them.",
        "Check that the probe domain is routed to the sink, then the gateway's outbound queue.",
    ),
    Pattern.GATEWAY_UNREACHABLE: (
        "No SMTP session could be opened with the gateway.",
        "Check that the gateway service runs and listens on that address.",
    ),
    Pattern.GATEWAY_STALLED: (
        "The gateway took the connection, then stopped answering at the SMTP phase the evidence "
        "names: it is hung (a blocked queue, a deadlocked service, a backend it waits on), it "
        "did not refuse anything.",
        "Check the gateway's service, queue and logs at that phase; restart it if it stays "
        "silent and probe again. See docs/verdicts.md#gateway_stalled.",
    ),
    Pattern.ALL_REJECTED: (
        "The gateway answered but accepted no notification: a temporary refusal (4xx) asks to "
        "retry later, a permanent one (5xx) is policy or a hard failure.",
        "Read the refusal replies in the evidence: 4xx, the gateway's queue or backend; 5xx, "
        "relay rules, sender or recipient policy.",
    ),
    Pattern.SLOW: (
        "Everything arrived, but later than the threshold.",
        "Check the gateway's queue and its downstream relay for backlog.",
    ),
    Pattern.DUPLICATED: (
        "Everything arrived, some notifications more than once: retried after a lost reply.",
        "Check timeouts between the gateway and its relay.",
    ),
    Pattern.INCONCLUSIVE: (
        "The probe could not judge the gateway.",
        "Fix what the evidence names (the probe's own sink or an interrupted run) and probe again.",
    ),
}


def to_json(record: RunRecord, verdict: Verdict) -> dict[str, Any]:
    run = record.run
    control = record.control
    return {
        "run_id": run.run_id,
        "gateway": run.gateway,
        "sink": run.sink,
        "domain": run.domain,
        "status": run.status,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "sent": verdict.sent,
        "accepted": verdict.accepted,
        "delivered": verdict.delivered,
        "not_attempted": verdict.not_attempted,
        "verdict": verdict.to_dict(),
        "settle": _window_json(run),
        "security": run.options.get("security"),
        "warnings": warnings(run),
        "control": _notification_json(control) if control else None,
        "notifications": [_notification_json(n) for n in record.burst],
    }


def _window_json(run: Run) -> dict[str, Any] | None:
    window = SettleWindow.from_options(run.options)
    return window.to_dict() if window is not None else None


def warnings(run: Run) -> list[str]:
    """What the operator must not miss about how the run was made (not about the gateway)."""
    security = run.options.get("security")
    if isinstance(security, dict) and security.get("insecure"):
        return [INSECURE_WARNING]
    return []


def _notification_json(n: Notification) -> dict[str, Any]:
    submit: dict[str, Any] | None = None
    s = n.submission
    if s is not None:
        submit = {"stage": s.stage, "started_at": s.started_at, "finished_at": s.finished_at,
                  "session": s.session, "position": s.position}  # fmt: skip
        if s.reply is not None:
            submit.update(code=s.reply.code, enhanced=s.reply.enhanced, text=s.reply.text)
        else:
            submit.update(error=s.error, kind=s.error_kind.value if s.error_kind else None,
                          stalled_at=s.stalled_at.value if s.stalled_at else None)  # fmt: skip
    return {
        "seq": n.seq,
        "token": n.token,
        "submit": submit,
        "not_attempted": n.not_attempted,
        "delivered_at": n.delivered_at,
        "latency_s": round(n.latency_s, 6) if n.latency_s is not None else None,
        "copies": n.copies,
        "found_in": sorted({d.found_in for d in n.deliveries}),
    }


_STATE_WORD = {
    Severity.OK: "OK",
    Severity.WARNING: "WARNING",
    Severity.CRITICAL: "CRITICAL",
    Severity.UNKNOWN: "UNKNOWN",
}


def to_text(
    record: RunRecord, verdict: Verdict, elapsed_s: float | None = None, db: Path | None = None
) -> str:
    """`db`: the ledger the run is in, for the command that judges it again."""
    run = record.run
    took = f" · {elapsed_s:.2f} s" if elapsed_s is not None else ""
    skipped = f" · not attempted {verdict.not_attempted}" if verdict.not_attempted else ""
    meaning, action = MEANING[verdict.pattern]
    window = SettleWindow.from_options(run.options)
    rejudge = f"notifyprobe verdict {run.run_id}" + (f" --db {db}" if db is not None else "")
    lines = [
        f"notifyprobe run {run.run_id}: gateway {run.gateway} → sink {run.sink} ({run.domain})",
        *shape_line(run),
        f"  sent {verdict.sent} · accepted {verdict.accepted} · delivered {verdict.delivered}"
        f"{skipped}{took}",
        *([f"  settle window {window.describe()}"] if window is not None else []),
        *(f"  WARNING: {line}" for line in warnings(run)),
        "",
        f"  {_STATE_WORD[verdict.severity]}  {verdict.pattern.value}: {verdict.summary}",
        *(f"    · {line}" for line in verdict.evidence),
        "",
        f"  What it means: {meaning}",
        f"  What to do:    {action}",
    ]
    if verdict.pattern is Pattern.QUEUED_PER_SESSION:
        lines.append(f"  Re-judge:      {rejudge}")
    return "\n".join(lines)


def revision_text(revision: Revision) -> str:
    """Under a re-judged run: what arrived after the verdict given at the end of the run."""
    word = "CHANGED" if revision.changed else "unchanged"
    return f"\n  Since the verdict ({word}): {revision.summary()}"


def history_text(original: StoredVerdict, correction: StoredVerdict | None) -> str:
    """Both verdicts the ledger keeps: the one given when the run ended, and its correction by
    late mail with the time it was stored (an alert raised by the first can be annotated)."""
    lines = [f"  Original verdict:  {_stored(original)}"]
    if correction is None:
        lines.append("  Corrected verdict: none (no late mail changed the pattern)")
    else:
        later = ""
        if correction.at is not None and original.at is not None:
            later = f", {correction.at - original.at:.1f} s after the original"
        lines.append(f"  Corrected verdict: {_stored(correction)}{later}")
    return "\n".join(["", *lines])


def _stored(verdict: StoredVerdict) -> str:
    when = _utc(verdict.at) if verdict.at is not None else "at an unknown time"
    return f"{verdict.pattern} ({verdict.severity.upper()}) at {when}"


def _utc(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def shape_line(run: Run) -> list[str]:
    """How the burst was sent, from the run's options (runs kept before it was: nothing)."""
    options = run.options
    if "per_session" not in options:
        return []
    return [
        f"  shape: {run.count} notifications · concurrency {options.get('concurrency')} · "
        f"{options['per_session']} per SMTP session"
    ]


def diagnosis_text(
    diagnosis: Diagnosis | None,
    inventory: Inventory | None,
    possible: Sequence[PossibleIssue] = (),
) -> str:
    """The diagnosis section under a burst's verdict: a firm diagnosis with its cause, why and
    what to do; a low-confidence match only as one line under "possible known issues"."""
    lines = [""]
    if inventory is not None:
        old = inventory.old_copies
        lines.append(
            f"  Modules: {', '.join(inventory.names)} loaded in {len(inventory.hits)} place(s), "
            f"{len(old)} old · {inventory.scanned} processes scanned, {inventory.denied} denied"
        )
        lines += [
            f"    · {h.state.value}: pid {h.process.pid} {h.process.name or '?'} {h.mapped_path}"
            for h in inventory.hits[:10]
        ]
        lines.append("")
    if diagnosis is None:
        lines.append("  Diagnosis: none (no known issue matches this run with evidence)")
        if possible:
            lines.append("  Possible known issues (the symptom matches, no evidence points there):")
            lines += [f"    · {p.line}" for p in possible]
        return "\n".join(lines)
    lines += [
        f"  Diagnosis [{diagnosis.signature}] {diagnosis.title} — confidence "
        f"{diagnosis.confidence.word}",
        f"    cause: {diagnosis.cause}",
        "    because:",
        *(f"      · {line}" for line in diagnosis.because),
        "    what to do:",
        *(f"      {n}. {step}" for n, step in enumerate(diagnosis.remediation, start=1)),
        f"    reference: {diagnosis.reference}",
        f"    runbook:   {diagnosis.runbook}",
    ]
    return "\n".join(lines)
