"""The HTML report of one run: readable in a minute, self-contained, safe to open anywhere.

One file, inline CSS and an inline SVG timeline; no script, no font, no image, no link that
loads anything, so it renders the same offline, in a mail client's preview or a ticket system.
Every string that came from the run (reply texts, host names, paths) goes through `clean` (the
bundle's redactor) and then `html.escape`: a gateway reply cannot inject markup.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

from probe import __version__
from probe.diagnosis import next_hop_line
from probe.records import Notification, SettleWindow, Submission
from probe.reporting.artifacts import RunEvidence, RunReport
from probe.reporting.text import domain_warning, outcome, rejudge_line, report_advice, said_lines
from probe.verdict import Severity, gateway_order

Clean = Callable[[str], str]
MAX_ROWS = 200  # timeline rows; a larger burst shows its first rows and says so
ROW_H = 22
LEFT, RIGHT, TOP = 80, 260, 46
WIDTH = 1100
COLOURS = {
    Severity.OK: "#1a7f37",
    Severity.WARNING: "#9a6700",
    Severity.CRITICAL: "#cf222e",
    Severity.UNKNOWN: "#57606a",
}

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:0;
 color:#1f2328;background:#fff}
main{max-width:1140px;margin:0 auto;padding:20px 24px 48px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;
 border-bottom:1px solid #d0d7de;padding-bottom:4px}
.meta{color:#57606a;font-size:13px}
.verdict{border-left:8px solid var(--c);background:#f6f8fa;padding:12px 16px;margin:16px 0}
.verdict .state{display:inline-block;background:var(--c);color:#fff;font-weight:700;
 padding:2px 10px;border-radius:4px;margin-right:8px}
.verdict .pattern{font-weight:700;font-size:18px}
.verdict p{margin:6px 0 0}
.counts span{display:inline-block;margin-right:18px}
.diagnosis{border:1px solid #d0d7de;border-radius:6px;padding:12px 16px}
.diagnosis .cause{font-weight:600}
ol.steps li{margin:3px 0}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border:1px solid #d0d7de;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.state-stale,.state-deleted,.state-renamed{color:#cf222e;font-weight:700}
.state-current,.state-pass{color:#1a7f37}
.state-fail{color:#cf222e;font-weight:700}
.state-warn{color:#9a6700;font-weight:700}
ul.evidence li,ul.because li{margin:2px 0}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
svg text{font-family:system-ui,Arial,sans-serif;font-size:12px}
footer{margin-top:32px;color:#57606a;font-size:12px}
"""


def render(ev: RunEvidence, clean: Clean, runbooks: Sequence[str] = ()) -> str:
    """The page; `runbooks`: the known issues' runbook texts, embedded whole."""

    def esc(text: object) -> str:
        return html.escape(clean(str(text)), quote=True)

    report = ev.report
    record, verdict = report.record, report.verdict
    run = record.run
    colour = COLOURS[verdict.severity]
    meaning, action = report_advice(report)
    unrouted = domain_warning(record)
    started = _utc(run.started_at)
    window = run.options.settle
    rejudge = rejudge_line(report)
    command = report.command
    title = (
        f"{command.headline()} — run {run.run_id}"
        if command is not None
        else f"notifyprobe run {run.run_id}: {verdict.pattern.value}"
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>",
        f"<style>{CSS}</style></head><body><main>",
        f'<h1>notifyprobe evidence — run <span class="mono">{esc(run.run_id)}</span></h1>',
        f'<div class="meta">gateway <b>{esc(run.gateway)}</b> → sink {esc(run.sink)} · '
        f"domain {esc(run.domain)} · started {esc(started)} · status {esc(run.status)}</div>",
        *([f'<p id="domain-warning"><b>Warning:</b> {esc(unrouted)}</p>'] if unrouted else []),
        *_overall(report, esc),
        f'<section class="verdict" id="verdict" style="--c:{colour}">',
        *(["<p><b>Delivery verdict</b> (the burst of this command)</p>"] if command else []),
        f'<span class="state">{esc(verdict.severity.name)}</span>'
        f'<span class="pattern">{esc(verdict.pattern.value)}</span>',
        f"<p>{esc(verdict.summary)}</p>",
        f'<p class="counts"><span>sent <b>{verdict.sent}</b></span>'
        f"<span>accepted <b>{verdict.accepted}</b></span>"
        f"<span>delivered <b>{verdict.delivered}</b></span>"
        f"<span>not attempted <b>{verdict.not_attempted}</b></span>"
        f"<span>bounced <b>{verdict.bounced}</b></span>"
        f"<span>delayed <b>{verdict.delayed}</b></span>"
        f"<span>sink verified <b>{esc(_yes_no(verdict.sink_verified))}</b></span></p>",
        f"<p><b>What it means:</b> {esc(meaning)}</p>",
        *(
            [f'<p class="meta" id="settle">settle window {esc(window.describe())}</p>']
            if window is not None
            else []
        ),
        *(
            [f'<p class="meta" id="rejudge">re-judge: <code>{esc(rejudge)}</code></p>']
            if rejudge
            else []
        ),
        *(
            [f'<p id="revision"><b>Since the verdict:</b> {esc(report.revision.summary())}</p>']
            if report.revision is not None
            else []
        ),
        *_outage(report, esc),
        "</section>",
        *_diagnosis(report, esc, action, embedded=bool(runbooks)),
        '<h2 id="timeline">Timeline</h2>',
        _timeline(record.notifications, run.started_at, esc, window, run.finished_at),
        *_inventory(report, esc),
        *_upgrade_checks(report, esc),
        '<h2 id="evidence">Evidence</h2><ul class="evidence">',
        *(f"<li>{esc(line)}</li>" for line in verdict.evidence),
        "</ul>",
        *_notifications_table(record.notifications, run.started_at, esc),
        *(['<h2 id="runbooks">Runbooks</h2>'] if runbooks else []),
        *(f'<pre class="mono runbook">{esc(text)}</pre>' for text in runbooks),
        "<footer>Made by notifyprobe "
        f"{esc(__version__)} from the ledger. The full SMTP transcripts (client and sink side) "
        "are in <code>transcripts/</code>, the ledger rows in <code>ledger/</code>, the "
        "structured log in <code>log.jsonl</code>; <code>manifest.json</code> lists every file "
        "with its SHA-256.</footer>",
        "</main></body></html>",
    ]
    return "\n".join(parts) + "\n"


CHECK_COLOURS = {
    "pass": COLOURS[Severity.OK],
    "warn": COLOURS[Severity.WARNING],
    "fail": COLOURS[Severity.CRITICAL],
}


def _overall(report: RunReport, esc: Callable[[object], str]) -> list[str]:
    """The upgrade command's one status, before anything else: a healthy delivery verdict
    below it is one of its parts, never the headline of a failed upgrade."""
    command = report.command
    if command is None:
        return []
    colour = CHECK_COLOURS.get(command.status, COLOURS[Severity.UNKNOWN])
    word = command.status.replace("_", " ").upper()
    return [
        f'<section class="verdict" id="overall" style="--c:{colour}">',
        f'<span class="state">{esc(word)}</span><span class="pattern">{esc(command.title)}</span>',
        '<p class="counts">'
        + "".join(
            f'<span>{esc(part)} <b class="state-{esc(status)}">{esc(status.replace("_", " "))}'
            "</b></span>"
            for part, status in command.parts
        )
        + "</p>",
        *(['<p><b>What to do:</b></p><ul class="because">'] if command.to_do() else []),
        *(f"<li>{esc(line)}</li>" for line in command.to_do()),
        *(["</ul>"] if command.to_do() else []),
        f"<p>Every check is under “Upgrade checks: {esc(command.name)}”.</p>",
        "</section>",
    ]


def _diagnosis(
    report: RunReport, esc: Callable[[object], str], action: str, embedded: bool = False
) -> list[str]:
    return _current_diagnosis(report, esc, action, embedded) + _diagnosis_at_verdict(report, esc)


def _diagnosis_at_verdict(report: RunReport, esc: Callable[[object], str]) -> list[str]:
    """A diagnosis recomputed for a corrected verdict: what the original verdict was told."""
    earlier, revision = report.explanation_at_verdict, report.revision
    if earlier is None or revision is None:
        return []
    return [
        f'<p class="meta" id="diagnosis-at-verdict">Said with the original verdict '
        f"({esc(revision.original.value)}), before late mail corrected it to "
        f"{esc(revision.current.pattern.value)}:</p>",
        '<ul class="because">',
        *(f"<li>{esc(line)}</li>" for line in said_lines(earlier)),
        "</ul>",
    ]


def _current_diagnosis(
    report: RunReport, esc: Callable[[object], str], action: str, embedded: bool = False
) -> list[str]:
    d = report.explanation.diagnosis
    out = ['<h2 id="diagnosis">Diagnosis</h2>']
    onward = next_hop_line(report.verdict)
    if onward:
        out.append(f'<p id="next-hop"><b>Refused beyond the gateway:</b> {esc(onward)}</p>')
    if d is None:
        possible = report.explanation.possible
        heading = (
            '<p id="possible">Possible known issues (the symptom matches, no evidence points '
            'there):</p><ul class="because">'
        )
        out += [
            '<div class="diagnosis"><p>No known issue matches this run with evidence.</p>',
            *([heading] if possible else []),
            *(f"<li>{esc(p.line)}</li>" for p in possible),
            *(["</ul>"] if possible else []),
            f"<p><b>What to do:</b> {esc(action)}</p></div>",
        ]
        return out
    out += [
        '<div class="diagnosis">',
        f"<p><b>[{esc(d.signature)}] {esc(d.title)}</b> — confidence "
        f"<b>{esc(d.confidence.word)}</b></p>",
        f'<p class="cause">{esc(d.cause)}</p>',
        '<p>Because:</p><ul class="because">',
        *(f"<li>{esc(line)}</li>" for line in d.because),
        '</ul><p id="remediation"><b>What to do:</b></p><ol class="steps">',
        *(f"<li>{esc(step)}</li>" for step in d.remediation),
        "</ol>",
        f'<p class="meta">reference: {esc(d.reference)} · runbook: '
        + (
            f"under Runbooks below, and runbook-{esc(d.signature)}.txt in this bundle</p>"
            if embedded
            else f"{esc(d.runbook)}</p>"
        ),
        "</div>",
    ]
    return out


def _upgrade_checks(report: RunReport, esc: Callable[[object], str]) -> list[str]:
    """Preflight/postflight checks kept with this run (postflight with --gateway keeps them)."""
    out: list[str] = []
    for kept in report.upgrade_checks:
        out += [
            f'<h2 id="{esc(kept.name)}">Upgrade checks: {esc(kept.name)}</h2>',
            f'<p>overall <b class="state-{esc(kept.status)}">{esc(kept.status)}</b> · profile '
            f"{esc(kept.profile)}</p>",
            "<table><tr><th>status</th><th>check</th><th>why</th><th>what to do</th></tr>",
        ]
        for check in kept.checks:
            out.append(
                f'<tr><td class="state-{esc(check.status)}">{esc(check.status)}</td>'
                f"<td>{esc(check.name)}</td><td>{esc(check.reason)}</td>"
                f"<td>{esc(check.fix)}</td></tr>"
            )
        out.append("</table>")
        if kept.versions:
            out.append(
                '<table id="versions"><tr><th>file</th><th>installed</th><th>loaded</th>'
                "<th>expected</th></tr>"
            )
            for v in kept.versions:
                loaded = "; ".join(str(x) for x in v.get("loaded") or ()) or "not loaded"
                out.append(
                    f'<tr><td class="mono">{esc(v.get("file"))}</td>'
                    f"<td>{esc(v.get('installed') or '-')}</td><td>{esc(loaded)}</td>"
                    f"<td>{esc(v.get('expected') or '-')}</td></tr>"
                )
            out.append("</table>")
    return out


def _inventory(report: RunReport, esc: Callable[[object], str]) -> list[str]:
    inv = report.explanation.inventory
    out = ['<h2 id="modules">Module inventory</h2>']
    if inv is None:
        out.append("<p>No module inventory was taken in this run (burst --module NAME).</p>")
        return out
    out.append(
        f"<p>{esc(', '.join(inv.names))} on {esc(inv.platform)}: {len(inv.rows)} process(es) "
        f"with it loaded · {inv.scanned} scanned · {inv.denied} denied · {inv.vanished} gone</p>"
    )
    unread = inv.unreadable_line()
    if unread is not None:
        out.append(f"<p><strong>Unknown:</strong> {esc(unread)}</p>")
    if not inv.rows:
        return out
    out.append(
        "<table><tr><th>state</th><th>pid</th><th>process</th><th>loaded from</th>"
        "<th>loaded version</th><th>installed version</th><th>why</th></tr>"
    )
    for r in inv.rows:
        out.append(
            f'<tr><td class="state-{esc(r.state)}">{esc(r.state)}</td>'
            f'<td class="num">{r.pid}</td><td>{esc(r.process)}</td>'
            f'<td class="mono">{esc(r.mapped_path)}</td><td>{esc(r.loaded_version or "?")}</td>'
            f"<td>{esc(r.installed_version or '?')}</td><td>{esc(r.reason)}</td></tr>"
        )
    out.append("</table>")
    return out


def _notifications_table(
    notifications: Sequence[Notification], t0: float, esc: Callable[[object], str]
) -> list[str]:
    out = [
        '<h2 id="notifications">Notifications</h2><table><tr><th>seq</th><th>submitted</th>'
        "<th>gateway reply</th><th>delivered</th><th>latency</th><th>copies</th>"
        "<th>report that came back</th></tr>"
    ]
    for n in notifications[:MAX_ROWS]:
        s = n.submission
        submitted = f"+{s.started_at - t0:.3f} s" if s else "never"
        reply = (
            s.describe() if s else f"not attempted: {n.not_attempted}" if n.not_attempted else ""
        )
        delivered = f"+{n.delivered_at - t0:.3f} s" if n.delivered_at is not None else outcome(n)
        bounce = n.bounce.describe() if n.bounce is not None else ""
        latency = f"{n.latency_s:.3f} s" if n.latency_s is not None else ""
        label = "0 (control)" if n.is_control else str(n.seq)
        out.append(
            f'<tr><td class="num">{esc(label)}</td><td class="num">{esc(submitted)}</td>'
            f'<td class="mono">{esc(reply)}</td><td class="num">{esc(delivered)}</td>'
            f'<td class="num">{esc(latency)}</td><td class="num">{n.copies}</td>'
            f'<td class="mono">{esc(bounce)}</td></tr>'
        )
    out.append("</table>")
    return out


def _outage(report: RunReport, esc: Callable[[object], str]) -> list[str]:
    """The outage this run continues and a gateway restart seen before it, as report.txt."""
    lines = report.story.timeline()
    if not lines:
        return []
    return ['<ul id="outage">', *(f"<li>{esc(line)}</li>" for line in lines), "</ul>"]


# -- the timeline ---------------------------------------------------------------------------


def _timeline(
    notifications: Sequence[Notification],
    t0: float,
    esc: Callable[[object], str],
    window: SettleWindow | None = None,
    judged_at: float | None = None,
) -> str:
    """One row per notification on a shared time axis: submitted ●, accepted ■ or refused ✕,
    delivered ◆ or "lost"; the verdict as a line, and the settle window that ran out before it
    as a band (mail right of the line arrived after the verdict)."""
    control = [n for n in notifications if n.is_control]
    burst = gateway_order(n for n in notifications if not n.is_control)
    rows = (burst + control)[:MAX_ROWS]
    times = [t0]
    for n in rows:
        if n.submission:
            times += [n.submission.started_at, n.submission.finished_at]
        times += [d.received_at for d in n.deliveries]
    if judged_at is not None:
        times.append(judged_at)
    span = max(max(times) - t0, 0.001)
    plot_w = WIDTH - LEFT - RIGHT
    height = TOP + ROW_H * max(len(rows), 1) + 48

    def x(t: float) -> float:
        return round(LEFT + (t - t0) / span * plot_w, 1)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="timeline of the notifications">',
        "<title>Timeline: each notification as a row</title>",
        '<g font-size="12">',
        _legend(),
    ]
    axis_y = TOP + ROW_H * max(len(rows), 1) + 4
    step = _nice_step(span / 6)
    tick = 0.0
    for _ in range(50):
        if tick > span + 1e-9:
            break
        tx = x(t0 + tick)
        out.append(f'<line x1="{tx}" y1="{TOP - 6}" x2="{tx}" y2="{axis_y}" stroke="#eaeef2"/>')
        out.append(
            f'<text x="{tx}" y="{axis_y + 16}" text-anchor="middle" fill="#57606a">'
            f"+{_fmt_s(tick)}</text>"
        )
        tick += step
    out.append(
        f'<line x1="{LEFT}" y1="{axis_y}" x2="{LEFT + plot_w}" y2="{axis_y}" stroke="#57606a"/>'
    )
    if judged_at is not None:
        out += _verdict_marks(notifications, window, judged_at, x, axis_y, esc)
    for i, n in enumerate(rows):
        y = TOP + ROW_H * i + ROW_H / 2
        label = "control" if n.is_control else f"seq {n.seq}"
        out.append(f'<text x="{LEFT - 8}" y="{y + 4}" text-anchor="end">{esc(label)}</text>')
        out += _row(n, y, x, t0, esc)
    if not rows:
        out.append(f'<text x="{LEFT}" y="{TOP + 14}">no notification was recorded</text>')
    out.append("</g></svg>")
    more = len(burst) + len(control) - len(rows)
    note = f'<p class="meta">first {len(rows)} rows shown; {more} more in report.json</p>'
    return "\n".join(out) + ("\n" + note if more > 0 else "")


def _row(
    n: Notification, y: float, x: Callable[[float], float], t0: float, esc: Callable[[object], str]
) -> list[str]:
    s = n.submission
    end_x = WIDTH - RIGHT + 10
    if s is None:
        why = "not attempted (circuit breaker)" if n.not_attempted else "never submitted"
        return [f'<text x="{end_x}" y="{y + 4}" fill="#57606a">{why}</text>']
    xs, xf = x(s.started_at), x(s.finished_at)
    out = [
        f'<line x1="{xs}" y1="{y}" x2="{xf}" y2="{y}" stroke="#8c959f" stroke-width="2"/>',
        f'<circle cx="{xs}" cy="{y}" r="4" fill="#0969da"><title>'
        f"{esc(f'seq {n.seq} submitted at +{s.started_at - t0:.3f} s')}</title></circle>",
    ]
    if s.accepted:
        out.append(
            f'<rect x="{xf - 4}" y="{y - 4}" width="8" height="8" fill="#8c959f"><title>'
            f"{esc(f'accepted at +{s.finished_at - t0:.3f} s: {s.describe()}')}</title></rect>"
        )
    else:
        out.append(
            f'<path d="M{xf - 5} {y - 5}L{xf + 5} {y + 5}M{xf - 5} {y + 5}L{xf + 5} {y - 5}" '
            f'stroke="#cf222e" stroke-width="2.5"><title>'
            f"{esc(f'{_failure(s)} at +{s.finished_at - t0:.3f} s: {s.describe()}')}</title></path>"
        )
    if n.delivered_at is not None:
        xd = x(n.delivered_at)
        out.append(
            f'<line x1="{xf}" y1="{y}" x2="{xd}" y2="{y}" stroke="#1a7f37" '
            'stroke-dasharray="3 2" stroke-width="1.5"/>'
        )
        for d in n.deliveries:
            xd = x(d.received_at)
            out.append(
                f'<path d="M{xd} {y - 6}L{xd + 6} {y}L{xd} {y + 6}L{xd - 6} {y}Z" fill="#1a7f37">'
                f"<title>{esc(f'delivered at +{d.received_at - t0:.3f} s')}</title></path>"
            )
        extra = f" ×{n.copies}" if n.copies > 1 else ""
        status = f"delivered in {n.latency_s or 0:.3f} s{extra}"
        out.append(f'<text x="{end_x}" y="{y + 4}" fill="#1a7f37">{esc(status)}</text>')
    elif s.accepted:
        out.append(
            f'<text x="{end_x}" y="{y + 4}" fill="#cf222e" font-weight="700">'
            "lost (accepted, never delivered)</text>"
        )
    else:
        why = s.describe()
        why = why if len(why) <= 34 else why[:33] + "…"
        out.append(f'<text x="{end_x}" y="{y + 4}" fill="#cf222e">{esc(why)}</text>')
    return out


def _verdict_marks(
    notifications: Sequence[Notification],
    window: SettleWindow | None,
    judged_at: float,
    x: Callable[[float], float],
    axis_y: float,
    esc: Callable[[object], str],
) -> list[str]:
    """The verdict line, and the silence before it when accepted mail was still missing."""
    out: list[str] = []
    missing = [
        n
        for n in notifications
        if n.submission
        and n.submission.accepted
        and (n.delivered_at is None or n.delivered_at > judged_at)
    ]
    if window is not None and missing:
        ends = [n.submission.finished_at for n in notifications if n.submission]
        arrivals = [
            n.delivered_at
            for n in notifications
            if not n.is_control and n.delivered_at is not None and n.delivered_at <= judged_at
        ]
        quiet_since = max([*ends, *arrivals])
        left, right = x(quiet_since), x(min(quiet_since + window.seconds, judged_at))
        label = f"settle window {window.seconds:.3g} s ({window.source.value}): silence"
        out += [
            f'<rect x="{left}" y="{TOP - 6}" width="{max(right - left, 1)}" '
            f'height="{axis_y - TOP + 6}" fill="#9a6700" fill-opacity="0.08">'
            f"<title>{esc(window.describe())}</title></rect>",
            f'<text x="{left + 4}" y="{TOP - 10}" fill="#9a6700">{esc(label)}</text>',
        ]
    xv = x(judged_at)
    out += [
        f'<line x1="{xv}" y1="{TOP - 6}" x2="{xv}" y2="{axis_y}" stroke="#cf222e" '
        'stroke-dasharray="4 3"/>',
        f'<text x="{xv}" y="{axis_y + 30}" text-anchor="middle" fill="#cf222e">verdict</text>',
    ]
    return out


def _failure(s: Submission) -> str:
    return "refused" if s.answered else "stalled" if s.stalled else "failed"


def _legend() -> str:
    y = 18
    return (
        f'<circle cx="{LEFT + 6}" cy="{y}" r="4" fill="#0969da"/>'
        f'<text x="{LEFT + 16}" y="{y + 4}">submitted</text>'
        f'<rect x="{LEFT + 92}" y="{y - 4}" width="8" height="8" fill="#8c959f"/>'
        f'<text x="{LEFT + 106}" y="{y + 4}">accepted by the gateway</text>'
        f'<path d="M{LEFT + 271} {y - 5}L{LEFT + 281} {y + 5}M{LEFT + 271} {y + 5}L{LEFT + 281} '
        f'{y - 5}" stroke="#cf222e" stroke-width="2.5"/>'
        f'<text x="{LEFT + 290}" y="{y + 4}">refused / stalled</text>'
        f'<path d="M{LEFT + 406} {y - 6}L{LEFT + 412} {y}L{LEFT + 406} {y + 6}L{LEFT + 400} {y}Z" '
        'fill="#1a7f37"/>'
        f'<text x="{LEFT + 420}" y="{y + 4}">delivered to the sink</text>'
        f'<text x="{LEFT + 580}" y="{y + 4}" fill="#57606a">time since the run started →</text>'
    )


def _nice_step(raw: float) -> float:
    if raw <= 0:
        return 1.0
    power: float = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 5, 10):
        if raw <= mult * power:
            return mult * power
    return 10 * power


def _fmt_s(seconds: float) -> str:
    if seconds == 0:
        return "0 s"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:g} s"


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _yes_no(value: bool | None) -> str:
    return {True: "yes", False: "no", None: "not checked"}[value]
