"""Rendering a judged run: the terminal summary people read and the JSON machines read."""

from __future__ import annotations

from typing import Any

from probe.delivery.tls import INSECURE_WARNING
from probe.diagnosis.rules import Diagnosis
from probe.host.inventory import Inventory
from probe.records import Notification, Run, RunRecord
from probe.verdict import Pattern, Severity, Verdict

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
    Pattern.ALL_REJECTED: (
        "The gateway answered but refused every notification.",
        "Read the refusal replies in the evidence: relay rules, sender or recipient policy.",
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
        "verdict": verdict.to_dict(),
        "security": run.options.get("security"),
        "warnings": warnings(run),
        "control": _notification_json(control) if control else None,
        "notifications": [_notification_json(n) for n in record.burst],
    }


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
        submit = {"stage": s.stage, "started_at": s.started_at, "finished_at": s.finished_at}
        if s.reply is not None:
            submit.update(code=s.reply.code, enhanced=s.reply.enhanced, text=s.reply.text)
        else:
            submit.update(error=s.error, kind=s.error_kind.value if s.error_kind else None)
    return {
        "seq": n.seq,
        "token": n.token,
        "submit": submit,
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


def to_text(record: RunRecord, verdict: Verdict, elapsed_s: float | None = None) -> str:
    run = record.run
    took = f" · {elapsed_s:.2f} s" if elapsed_s is not None else ""
    meaning, action = MEANING[verdict.pattern]
    lines = [
        f"notifyprobe run {run.run_id}: gateway {run.gateway} → sink {run.sink} ({run.domain})",
        f"  sent {verdict.sent} · accepted {verdict.accepted} · delivered {verdict.delivered}"
        f"{took}",
        *(f"  WARNING: {line}" for line in warnings(run)),
        "",
        f"  {_STATE_WORD[verdict.severity]}  {verdict.pattern.value}: {verdict.summary}",
        *(f"    · {line}" for line in verdict.evidence),
        "",
        f"  What it means: {meaning}",
        f"  What to do:    {action}",
    ]
    return "\n".join(lines)


def diagnosis_text(diagnosis: Diagnosis | None, inventory: Inventory | None) -> str:
    """The diagnosis section under a burst's verdict: the named cause, why, and what to do."""
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
        lines.append("  Diagnosis: none (no known issue matches this run)")
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
