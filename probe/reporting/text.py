"""Rendering a judged run (`RunReport`): the terminal report people read and the JSON machines
read, section by section the same story as the HTML report."""

from __future__ import annotations

import base64
import shlex
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal, get_args

from probe.diagnosis import next_hop_line
from probe.domain import default_domain_warning, first_check, unrouted_default_domain
from probe.history import Revision, StoredVerdict
from probe.host import ModuleState
from probe.records import INSECURE_WARNING, Bounce, Notification, Run, RunRecord
from probe.reporting.artifacts import InventoryView, KeptChecks, RunReport, StoredExplanation
from probe.reporting.nagios import STATE_WORD, bounce_lines, diagnosis_lines, next_hop_lines
from probe.verdict import Cause, Pattern, Verdict

MAX_MODULE_LINES = 10
OLD_STATES = frozenset(s.value for s in ModuleState if s.is_old)

MEANING: dict[Pattern, tuple[str, str]] = {
    Pattern.HEALTHY: (
        "Every notification went through the gateway and arrived exactly once.",
        "Nothing to do.",
    ),
    Pattern.FIRST_ONLY: (
        "The gateway handles one notification after a (re)start and fails every later one: the "
        "signature of an old performance module (MPNotifyPerf.dll) still loaded after an upgrade.",
        "Run `notifyprobe modules` on the gateway host to find the process holding the old "
        "module; see docs/patterns.md#first_only.",
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
        "docs/patterns.md#queued_per_session.",
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
        "silent and probe again. See docs/patterns.md#gateway_stalled.",
    ),
    Pattern.ALL_REFUSED: (
        "The gateway answered but accepted no notification: a temporary refusal (4xx) asks to "
        "retry later, a permanent one (5xx) is policy or a hard failure.",
        "Read the refusal replies in the evidence: 4xx, the gateway's queue or backend; 5xx, "
        "relay rules, sender or recipient policy.",
    ),
    Pattern.PROTOCOL_ERROR: (
        "The gateway answered with what is not SMTP (a reply over the cap, a line without a "
        "reply code, a code where another step was due) and accepted nothing: it is broken at "
        "the step the summary names, it refused nothing.",
        "Read the gateway's replies in the evidence: a proxy, TLS terminator or non-SMTP "
        "service may sit on that port, or the gateway is broken; see "
        "docs/patterns.md#protocol_error.",
    ),
    Pattern.GATEWAY_HUNG_UP: (
        "The gateway took the connection, then hung up (closed or reset it) at the step the "
        "summary names and accepted nothing: it refused nothing, and it did not go silent.",
        "Read the gateway's log at the time of the run for a crash or a dropped connection at "
        "that step; see docs/patterns.md#gateway_hung_up.",
    ),
    Pattern.ALL_BOUNCED: (
        "The gateway accepted the notifications, and a mail server after it refused every one: "
        "the reports that came back to the probe say which server, with what status and why.",
        "Read the status and diagnostic in the evidence: 5.1.x or 5.4.x, the route (is the "
        "probe domain routed to the sink from the gateway?); 5.7.x, a policy of the server the "
        "report names (relay rules, sender checks). Fix it there and probe again; see "
        "docs/patterns.md#all_bounced.",
    ),
    Pattern.SLOW: (
        "Everything arrived, but later than the threshold.",
        "Check the gateway's queue and its downstream relay for backlog.",
    ),
    Pattern.DUPLICATED: (
        "Everything arrived, some notifications more than once: retried after a lost reply.",
        "Check timeouts between the gateway and its relay.",
    ),
    Pattern.THROTTLED: (
        "The gateway refused part of the burst with a rate or connection limit (the reply is "
        "quoted above): its policy toward the probe's client, not a fault; what it let through "
        "was delivered. When nothing got through, nothing proves that it delivers.",
        "Probe within the limit: a message-rate limit, lower --max-rate (or --count); a "
        "connection limit, lower --concurrency or raise --per-session so the burst opens fewer "
        "sessions. Or exempt the probe's address from the limit: Postfix "
        "smtpd_client_event_limit_exceptions (the limits are smtpd_client_message_rate_limit, "
        "smtpd_client_connection_rate_limit, smtpd_client_connection_count_limit); Exim, a "
        "`hosts = !` condition on the ratelimit ACL statement, or smtp_accept_max_per_host; "
        "Exchange, the receive connector's MessageRateLimit, MaxInboundConnectionPerSource and "
        "MaxInboundConnection (Set-ReceiveConnector). See docs/patterns.md#throttled.",
    ),
    Pattern.INCONCLUSIVE: (
        "The probe could not judge the gateway.",
        "Fix what the evidence names (the probe's own sink or an interrupted run) and probe again.",
    ),
}

# The verdicts whose first suspect is a probe domain that routes nowhere (the default one, through
# a real gateway): the notifications were accepted and none reached the sink. Pattern values, in
# this one place: `all_bounced` (every notification came back as a bounce) counts as soon as a
# verdict names it.
UNROUTED_DOMAIN_PATTERNS = frozenset({Pattern.NONE_DELIVERED, Pattern.ALL_BOUNCED})


SCHEMA_VERSION = 1  # of every JSON report; docs/schema/ describes it, a removed key bumps it


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
        "bounced": verdict.bounced,
        "delayed": verdict.delayed,
        "verdict": verdict.to_dict(),
        "settle": _window_json(run),
        "security": asdict(run.options.security),
        "warnings": warnings(run),
        "domain_warning": domain_warning(record),
        "control": _notification_json(control) if control else None,
        "notifications": [_notification_json(n) for n in record.burst],
    }


def _window_json(run: Run) -> dict[str, Any] | None:
    window = run.options.settle
    return window.to_dict() if window is not None else None


def warnings(run: Run) -> list[str]:
    """What the operator must not miss about how the run was made (not about the gateway)."""
    return [INSECURE_WARNING] if run.options.security.insecure else []


def domain_warning(record: RunRecord) -> str | None:
    """The run's default probe domain routes nowhere (not a lab run): said in the header."""
    return default_domain_warning(record.run.domain) if unrouted_default_domain(record) else None


def _notification_json(n: Notification) -> dict[str, Any]:
    submit: dict[str, Any] | None = None
    s = n.submission
    if s is not None:
        submit = {
            "stage": s.stage,
            "started_at": s.started_at,
            "finished_at": s.finished_at,
            "session": s.session,
            "position": s.position,
        }
        if s.reply is not None:
            submit.update(code=s.reply.code, enhanced=s.reply.enhanced, text=s.reply.text)
            wire = s.reply.wire
            if wire != s.reply.text.encode("utf-8"):  # shown escaped or decoded: give the bytes
                submit["raw_b64"] = base64.b64encode(wire).decode("ascii")
        else:
            submit.update(
                error=s.error,
                kind=s.error_kind.value if s.error_kind else None,
                stalled_at=s.stalled_at.value if s.stalled_at else None,
            )
    return {
        "seq": n.seq,
        "token": n.token,
        "submit": submit,
        "not_attempted": n.not_attempted,
        "delivered_at": n.delivered_at,
        "latency_s": round(n.latency_s, 6) if n.latency_s is not None else None,
        "copies": n.copies,
        "found_in": sorted({d.found_in for d in n.deliveries}),
        "outcome": outcome(n),
        "bounce": _bounce_json(n.bounce) if n.bounce is not None else None,  # the deciding one
        "bounces": [_bounce_json(b) for b in n.bounces],
    }


# One word for what became of a notification: the `outcome` of each in the JSON report.
Outcome = Literal["delivered", "bounced", "delayed", "lost", "not sent"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)


def outcome(n: Notification) -> Outcome:
    """One word for what became of a notification: delivered, bounced, delayed, lost (nothing
    came back), or not sent."""
    if n.copies:
        return "delivered"
    if n.bounced:
        return "bounced"
    if n.delayed:
        return "delayed"
    return "lost" if n.attempted else "not sent"


def _bounce_json(b: Bounce) -> dict[str, Any]:
    return {
        "received_at": b.received_at,
        "action": b.action,
        "status": b.status,
        "diagnostic": b.diagnostic,
        "remote_mta": b.remote_mta,
        "reporting_mta": b.reporting_mta,
        "recipient": b.recipient,
        "named_by": b.named_by,
        "confirmed": b.confirmed,
        "format": b.format,
    }


CAUSE_ADVICE: dict[Cause, tuple[str, str]] = {
    Cause.CUT_OFF: (
        "The run was cut off (interrupted or killed) before it could be judged: what happened to "
        "the notifications it reached says nothing about the gateway.",
        "Probe again and let the run end; `notifyprobe verdict RUN_ID` judges this one again "
        "if a sink that kept running recorded the missing mail.",
    ),
    Cause.SINK_REFUSED: (
        "The probe's own sink refused its control message, so it cannot record what the gateway "
        "relays either: the run ended at once, without judging the gateway.",
        "Read the sink's reply in the evidence: a wrong --domain (the sink accepts only its own "
        "probe domain) or an --allow-client rule; fix it and probe again.",
    ),
    Cause.SINK_UNPROVEN: (
        "The probe could not prove that its own sink records mail: the control message sent "
        "straight to it never arrived.",
        "Check the sink's address (--sink) and that it runs; then probe again.",
    ),
    Cause.AUTH: (
        "The gateway refused the probe's credentials (AUTH): no notification was handed over.",
        "Check --user and the password source (--password-env, --password-file) against the "
        "gateway's account, and that the account may submit mail; then probe again.",
    ),
    Cause.TLS: (
        "The TLS handshake with the gateway failed: its certificate is not trusted for that "
        "name (or expired), or it does not speak the TLS mode asked for.",
        "Read the TLS error in the evidence; give the CA that signed the gateway's certificate "
        "with --ca-file, use the name the certificate carries in --gateway, or set --tls to "
        "what the gateway offers (starttls or implicit).",
    ),
    Cause.DNS: (
        "The gateway's host name did not resolve: no address to connect to.",
        "Check the name in --gateway (`getent hosts NAME` on this host) and this host's DNS "
        "resolver, or give the gateway's address.",
    ),
    Cause.CONNECTION_REFUSED: (
        "Nothing accepted the connection at that address: the service is down, listens "
        "elsewhere, or a firewall rejects it.",
        "Check that the gateway service runs and listens on that address and port.",
    ),
    Cause.TIMEOUT: (
        "The gateway's address did not answer the TCP handshake within the step timeout: the "
        "host is down or a firewall drops the packets.",
        "Check the host is up and that a firewall between this host and the gateway lets SMTP "
        "through; --step-timeout sets how long each step may take.",
    ),
    Cause.PROTOCOL: (
        "The gateway answered with something that is not an SMTP reply the probe can read: a "
        "reply over the cap (100 lines or 64 KiB), a line without a reply code, or a code "
        "where another step was due. It is not a refusal and says nothing of delivery.",
        "Read the gateway's replies in the evidence (escaped as \\xNN where they were not "
        "text): a proxy, TLS terminator or non-SMTP service may sit on that port, or the "
        "gateway is broken; check --gateway points at its SMTP port.",
    ),
    Cause.RESET: (
        "The gateway (or what answers on its port) took the TCP connection, then hung up: it "
        "closed or reset it at the step the summary names, without an SMTP reply. It is not a "
        "refusal, not a hung gateway (it did not go silent) and not an unreachable one.",
        "Read the gateway's log at the time of the run: a worker that crashes (at connect, on "
        "a command, on the message after the final dot), a connection or size limit enforced "
        "by closing, a load balancer with no healthy server behind it, a port that wants TLS "
        "(--tls); see docs/patterns.md#gateway_hung_up.",
    ),
    Cause.INTERNAL: (
        "The probe failed to record part of the run in its ledger, so the run cannot be "
        "judged: an internal failure of the probe, not of the gateway.",
        "Read the cause in the evidence (a full disk, a read-only ledger, a bug to report with "
        "the log), fix it and probe again.",
    ),
}


# A partial delivery whose every loss a next hop refused: the gateway lost nothing, and what the
# pattern alone suggests (a stale module for first_only) is the wrong place. (`all_bounced`
# already means this, with what its status says of the route.)
PARTIAL = frozenset({Pattern.FIRST_ONLY, Pattern.DEGRADED_AFTER_K, Pattern.INTERMITTENT})
NEXT_HOP_ADVICE = (
    "The gateway accepted and relayed every lost notification, and a mail server after it refused "
    "them: the reports that came back name that server, the status and why. The gateway itself "
    "lost nothing.",
    "Read the status and diagnostic under Diagnosis: 5.7.x is a policy or a rate limit of the "
    "server the report names (relay rules, sender or recipient checks, messages per period). Fix "
    "it there and probe again; see docs/patterns.md#mail-refused-beyond-the-gateway.",
)


def advice(verdict: Verdict, record: RunRecord | None = None) -> tuple[str, str]:
    """What the verdict means and what to do: by its cause when it has one, else where its
    losses were refused when a next hop refused every one of a partial delivery, else its
    pattern; with the run's `record`, the default probe domain first when it explains the
    loss."""
    if verdict.cause:
        meaning, action = CAUSE_ADVICE[verdict.cause]
    elif verdict.pattern in PARTIAL and verdict.next_hop and verdict.next_hop.all_lost:
        meaning, action = NEXT_HOP_ADVICE
    else:
        meaning, action = MEANING[verdict.pattern]
    step = domain_first_step(verdict, record) if record is not None else None
    return meaning, f"{step} Then: {action}" if step else action


def report_advice(report: RunReport) -> tuple[str, str]:
    """`advice` for a run as its story tells it: a run that continues a first_only outage
    names the run that first showed it (its route to the sink was proven then)."""
    meaning, action = advice(report.verdict, report.record)
    outage = report.story.outage
    if outage is None:
        return meaning, action
    first = rejudge_command(outage.since_run, report.ledger)
    return meaning, (
        f"This run continues the first_only outage that began with run {outage.since_run} at "
        f"{_utc(outage.since_at)}: start from that run ({first}). {action}"
    )


def story_lines(report: RunReport) -> list[str]:
    """The outage timeline under the verdict: the run that started it, the runs since, and a
    restart of the gateway seen before this run."""
    lines = report.story.timeline()
    return ["", "  Outage timeline:", *(f"    {line}" for line in lines)] if lines else []


def domain_first_step(verdict: Verdict, record: RunRecord) -> str | None:
    """The default domain as the first thing to check, for a verdict of mail that never came."""
    if verdict.pattern in UNROUTED_DOMAIN_PATTERNS and unrouted_default_domain(record):
        return first_check(record.run.domain)
    return None


def plugin_long_output(report: RunReport) -> list[str]:
    """The monitoring plugin's lines after its status line: the default domain first when it
    explains the loss, then what the bounces said and where a next hop refused, then the
    diagnosis or the possible known issues."""
    step = domain_first_step(report.verdict, report.record)
    explained = report.explanation
    return [
        *(f"outage: {line}" for line in report.story.timeline()),
        *([f"what to do: {step}"] if step else []),
        *bounce_lines(report.record),
        *next_hop_lines(report.verdict),
        *diagnosis_lines(explained.diagnosis, explained.possible),
    ]


def rejudge_command(run_id: str, ledger: Path | None) -> str:
    """The command that judges the run again, exactly as it can be typed."""
    return f"notifyprobe verdict {run_id}" + (
        f" --db {shlex.quote(str(ledger))}" if ledger is not None else ""
    )


def report_json(report: RunReport) -> dict[str, Any]:
    """The JSON of `burst --json`, `verdict --json` and the bundle's report.json."""
    meaning, action = report_advice(report)
    revision: dict[str, Any] = (
        {"revision": report.revision.to_dict()} if report.revision is not None else {}
    )
    if report.revision is not None and report.original is not None:
        correction = report.correction
        revision |= {
            "original_verdict": asdict(report.original),
            "corrected_verdict": asdict(correction) if correction is not None else None,
        }
    earlier = report.explanation_at_verdict
    if earlier is not None and report.revision is not None:
        fields = earlier.json_fields()
        revision["diagnosis_at_verdict"] = {
            "verdict": report.revision.original.value,
            "diagnosis": fields["diagnosis"],
            "possible_known_issues": fields["possible_known_issues"],
        }
    return (
        overall_json(report)  # an upgrade command's own result leads, when there is one
        | {"schema_version": SCHEMA_VERSION}
        | to_json(report.record, report.verdict)
        | {"meaning": meaning, "what_to_do": action, "story": report.story.to_dict()}
        | report.explanation.json_fields()
        | {"refused_beyond_gateway": refused_beyond_gateway(report.verdict)}
        | {"upgrade_checks": [c.to_dict() for c in report.upgrade_checks]}
        | revision
    )


def refused_beyond_gateway(verdict: Verdict) -> dict[str, Any] | None:
    """The losses a next hop refused, for the JSON report: why `possible_known_issues` offers no
    issue of the gateway for them (None: no loss was refused beyond the gateway)."""
    hop = verdict.next_hop
    if hop is None:
        return None
    return asdict(hop) | {"all_lost": hop.all_lost, "line": next_hop_line(verdict)}


def overall_json(report: RunReport) -> dict[str, Any]:
    """The run of an upgrade command (postflight --gateway): the command's own result first,
    so the healthy delivery verdict that follows is read as one of its parts."""
    command = report.command
    if command is None:
        return {}
    return {
        "overall": {
            "command": command.name,
            "profile": command.profile,
            "status": command.status,
            "parts": dict(command.parts),
            "headline": command.headline(),
            "what_to_do": command.to_do(),
        }
    }


def overall_section(report: RunReport) -> list[str]:
    command = report.command
    if command is None:
        return []
    to_do = command.to_do()
    return [
        command.headline(),
        *(["  What to do (the upgrade checks below):"] if to_do else []),
        *(f"    · {line}" for line in to_do),
        "",
        "  Delivery verdict (the burst of this command):",
    ]


def to_text(report: RunReport) -> str:
    """The terminal report: the upgrade command's result when the run was its burst, the run,
    the verdict with its evidence, the modules, the diagnosis, the upgrade checks kept with the
    run and, judged again later, what changed since."""
    return "\n".join(
        overall_section(report)
        + verdict_section(report)
        + modules_section(report.explanation.inventory)
        + diagnosis_section(report.explanation, report.verdict)
        + diagnosis_at_verdict_section(report)
        + checks_section(report.upgrade_checks)
        + ([revision_text(report.revision)] if report.revision is not None else [])
        + (
            [history_text(report.original, report.correction)]
            if report.revision is not None and report.original is not None
            else []
        )
    )


def verdict_section(report: RunReport) -> list[str]:
    run, verdict = report.record.run, report.verdict
    took = f" · {run.finished_at - run.started_at:.2f} s" if run.finished_at is not None else ""
    skipped = f" · not attempted {verdict.not_attempted}" if verdict.not_attempted else ""
    skipped += f" · bounced {verdict.bounced}" if verdict.bounced else ""
    skipped += f" · delayed {verdict.delayed}" if verdict.delayed else ""
    meaning, action = report_advice(report)
    window = run.options.settle
    unrouted = domain_warning(report.record)
    lines = [
        f"notifyprobe run {run.run_id}: gateway {run.gateway} → sink {run.sink} ({run.domain})",
        *shape_line(run),
        f"  sent {verdict.sent} · accepted {verdict.accepted} · delivered {verdict.delivered}"
        f"{skipped}{took}",
        *([f"  settle window {window.describe()}"] if window is not None else []),
        *(f"  WARNING: {line}" for line in warnings(run)),
        *([f"  WARNING: {unrouted}"] if unrouted else []),
        "",
        f"  {STATE_WORD[verdict.severity]}  {verdict.pattern.value}: {verdict.summary}",
        *(f"    · {line}" for line in verdict.evidence),
        *story_lines(report),
        "",
        f"  What it means: {meaning}",
        f"  What to do:    {action}",
    ]
    rejudge = rejudge_line(report)
    return lines + ([f"  Re-judge:      {rejudge}"] if rejudge else [])


def rejudge_line(report: RunReport) -> str | None:
    """The re-judge command, for the verdicts that late mail can still change."""
    verdict = report.verdict
    if (
        verdict.pattern is Pattern.QUEUED_PER_SESSION
        or verdict.cause is Cause.CUT_OFF
        or verdict.delayed
    ):
        return rejudge_command(report.record.run.run_id, report.ledger)
    return None


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
    if options.per_session is None:
        return []
    return [
        f"  shape: {run.count} notifications · concurrency {options.concurrency} · "
        f"{options.per_session} per SMTP session"
    ]


def modules_section(inventory: InventoryView | None) -> list[str]:
    if inventory is None:
        return ["", "  Modules: no module inventory was taken in this run (burst --module NAME)"]
    old = [r for r in inventory.rows if r.state in OLD_STATES]
    return [
        "",
        f"  Modules: {', '.join(inventory.names)} loaded in {len(inventory.rows)} place(s), "
        f"{len(old)} old · {inventory.scanned} processes scanned, {inventory.denied} denied",
        *([f"    · {line}"] if (line := inventory.unreadable_line()) else []),
        *(
            f"    · {r.state}: pid {r.pid} {r.process} {r.mapped_path}"
            for r in inventory.rows[:MAX_MODULE_LINES]
        ),
        *(
            [f"    · … {len(inventory.rows) - MAX_MODULE_LINES} more in report.json"]
            if len(inventory.rows) > MAX_MODULE_LINES
            else []
        ),
    ]


def diagnosis_section(explanation: StoredExplanation, verdict: Verdict) -> list[str]:
    """A firm diagnosis with its cause, why and what to do; a low-confidence match only as one
    line under "possible known issues"; and where a next hop refused notifications, one line
    that says so (no issue of the gateway is offered for those)."""
    diagnosis, possible = explanation.diagnosis, explanation.possible
    onward = next_hop_line(verdict)
    refused = [f"  Refused beyond the gateway: {onward}"] if onward else []
    if diagnosis is None:
        lines = ["", "  Diagnosis: none (no known issue matches this run with evidence)", *refused]
        if possible:
            lines.append("  Possible known issues (the symptom matches, no evidence points there):")
            lines += [f"    · {p.line}" for p in possible]
        return lines
    return [
        "",
        f"  Diagnosis [{diagnosis.signature}] {diagnosis.title} — confidence "
        f"{diagnosis.confidence.word}",
        *([f"    refused beyond the gateway: {onward}"] if onward else []),
        f"    cause: {diagnosis.cause}",
        "    because:",
        *(f"      · {line}" for line in diagnosis.because),
        "    what to do:",
        *(f"      {n}. {step}" for n, step in enumerate(diagnosis.remediation, start=1)),
        f"    reference: {diagnosis.reference}",
        f"    runbook:   {diagnosis.runbook} (in an evidence bundle: runbook-"
        f"{diagnosis.signature}.txt)",
    ]


def diagnosis_at_verdict_section(report: RunReport) -> list[str]:
    """Under a diagnosis recomputed for a corrected verdict: what the original verdict was told."""
    earlier, revision = report.explanation_at_verdict, report.revision
    if earlier is None or revision is None:
        return []
    return [
        f"  Said with the original verdict ({revision.original.value}), before late mail "
        f"corrected it to {revision.current.pattern.value}:",
        *(f"    · {line}" for line in said_lines(earlier)),
    ]


def said_lines(explanation: StoredExplanation) -> list[str]:
    """A diagnosis and its possible known issues, one line each."""
    d = explanation.diagnosis
    lines = [f"diagnosis [{d.signature}] {d.title} ({d.confidence.word} confidence)"] if d else []
    lines += [f"possible known issue {p.line}" for p in explanation.possible]
    return lines or ["no diagnosis, no possible known issue"]


def checks_section(kept: Sequence[KeptChecks]) -> list[str]:
    lines: list[str] = []
    for checks in kept:
        head = f"  Upgrade checks ({checks.name}, profile {checks.profile}): {checks.status}"
        lines += ["", head]
        for c in checks.checks:
            fix = f" — fix: {c.fix}" if c.fix and c.status in ("warn", "fail") else ""
            lines.append(f"    · {c.status:<7} {c.name}: {c.reason}{fix}")
        if checks.versions:
            lines.append("    versions (file: installed / loaded / expected):")
        for v in checks.versions:
            loaded = "; ".join(str(x) for x in v.get("loaded") or ()) or "not loaded"
            lines.append(
                f"      {v.get('file')}: {v.get('installed') or '-'} / {loaded} / "
                f"{v.get('expected') or '-'}"
            )
    return lines
