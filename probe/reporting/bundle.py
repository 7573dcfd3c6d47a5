"""The evidence bundle: everything about one run a support engineer asks for, in one zip.

Built from the ledger alone (rows + the artifacts `burst` kept), so a bundle for an old run needs
no new run, and the same ledger gives the same files. Files are assembled in memory, every
string goes through one `Redactor` (secrets always; names and addresses on request, the same
placeholder everywhere), then written with fixed order and timestamps and a `manifest.json` of
SHA-256 and size per file. `FILE.zip.sha256` and, when names were replaced,
`FILE.zip.redaction-map.json` go beside the zip, never inside it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from probe import __version__
from probe.diagnosis import Signature, load_signatures
from probe.errors import ProbeError
from probe.ledger import Ledger
from probe.masking import hide_secret
from probe.records import Notification, Run, RunRecord, WindowSource
from probe.reporting.artifacts import RunEvidence, load_evidence
from probe.reporting.html import render
from probe.reporting.output import write_output
from probe.reporting.redact import RedactionMap, Redactor, secret_forms
from probe.reporting.text import report_json, to_text

ZIP_EPOCH = 315532800  # 1980-01-01, the earliest time a zip entry can carry
MIN_GUARDED_SECRET = 6  # shorter secret forms occur in ordinary words; they are still redacted


@dataclass(frozen=True)
class BundleFile:
    name: str
    data: bytes


@dataclass(frozen=True)
class BundleResult:
    path: Path
    sha256: str
    files: tuple[str, ...]  # manifest.json first, then every file it lists
    mapping_path: Path | None
    mapping: RedactionMap

    @property
    def listed(self) -> int:
        """The files manifest.json lists (all but itself): the count its check prints."""
        return len(self.files) - 1


def auth_safe(commands: Sequence[tuple[str, int | None]]) -> list[str]:
    """Client commands with AUTH arguments and the answers to 334 challenges removed."""
    out: list[str] = []
    in_auth = False
    for command, code in commands:
        if re.match(r"(?i)AUTH\b", command):
            parts = command.split()
            out.append(" ".join(parts[:2]) + (" [redacted]" if len(parts) > 2 else ""))
            in_auth = code == 334
        elif in_auth:
            out.append("[redacted AUTH response]")
            in_auth = code == 334
        else:
            out.append(command)
    return out


def seed(redactor: Redactor, ev: RunEvidence) -> None:
    """Register every name and address the run knows, in a fixed order (stable placeholders)."""
    run = ev.report.record.run
    names = {_host_of(run.gateway), _host_of(run.sink), run.domain, ev.host.hostname, ev.host.fqdn}
    names |= set(ev.host.addresses)
    for d in ev.rows.get("deliveries", []):
        names |= {str(d.get("helo") or ""), _host_of(str(d.get("peer") or ""))}
    for n in ev.report.record.notifications:
        for step in n.submission.steps if n.submission else ():
            if step.reply is not None and step.command in ("connect", "EHLO", "HELO"):
                names.add(step.reply.text.split(" ", 1)[0].split("\n", 1)[0])
    for name in sorted(n for n in names if n):
        redactor.add_host(name)
    user = run.options.security.auth_user
    if user:
        redactor.add_user(user)


def equivalent_burst(run: Run) -> list[str]:
    """For a run that kept no command line (a `watch` run, a run recorded before command lines
    were kept): the `notifyprobe burst` that sends the same burst, built from the options the
    run recorded. No password: AUTH is given as `--password-env NOTIFYPROBE_PASSWORD`, to set."""
    o = run.options
    argv = ["notifyprobe", "burst", "--gateway", run.gateway, "--sink", run.sink]
    # a watch run's sink was the watch's: the same burst beside it leaves its sink to it
    argv += ["--no-sink"] if o.target or not o.own_sink else []
    argv += ["--domain", run.domain, "--count", str(run.count)]
    numbers = {
        "--concurrency": o.concurrency,
        "--per-session": o.per_session,
        "--gap": o.notification_gap_s,
        "--max-rate": o.max_rate,
        "--step-timeout": o.step_timeout_s,
        "--breaker": o.breaker,
        "--timeout": o.timeout_s,
        "--slow-after": o.slow_after_s,
    }
    for option, value in numbers.items():
        if value:
            argv += [option, f"{value:g}"]
    if o.settle is not None and o.settle.source is WindowSource.OPTION:
        argv += ["--settle", f"{o.settle.seconds:g}"]
    if not o.control:
        argv.append("--no-control")
    security = o.security
    if security.tls != "none":
        argv += ["--tls", security.tls]
    if security.ca_file:
        argv += ["--ca-file", security.ca_file]
    if security.insecure:
        argv.append("--insecure")
    if security.auth_user:
        argv += ["--user", security.auth_user, "--password-env", "NOTIFYPROBE_PASSWORD"]
    return argv


def runbook_text(sig: Signature) -> str:
    """A known issue's runbook from its signature, whole: the bundle carries it, so a vendor
    reads the remedy without access to this project's documentation."""
    lines = [
        f"Runbook [{sig.id}] {sig.title}",
        "",
        f"Source: {sig.reference}",
        "",
        "What you see:",
        *(f"  - {line}" for line in sig.symptoms),
        "",
        f"Why: {sig.cause}",
        *(["", f"Confirm: {sig.confirm}"] if sig.confirm else []),
        "",
        "What to do:",
        *(f"  {n}. {step}" for n, step in enumerate(sig.remediation, start=1)),
        "",
        f"In one line: {sig.remedy}",
        *(
            [f"notifyprobe fix actions of this remedy: {', '.join(sig.fix_actions)}"]
            if sig.fix_actions
            else ["No `notifyprobe fix` action belongs to this remedy."]
        ),
    ]
    return "\n".join(lines) + "\n"


def runbooks(ev: RunEvidence) -> list[Signature]:
    """The known issues this run points to: its diagnosis, the possible ones, and the one of
    the upgrade profile whose checks it carries."""
    wanted = [d.signature] if (d := ev.report.explanation.diagnosis) is not None else []
    wanted += [p.signature for p in ev.report.explanation.possible]
    wanted += [c.signature for c in ev.report.upgrade_checks if c.signature]
    known = {sig.id: sig for sig in load_signatures()}
    return [known[i] for i in dict.fromkeys(wanted) if i in known]


def build(ev: RunEvidence, redactor: Redactor, command_line: Sequence[str]) -> list[BundleFile]:
    """The bundle's files, redacted, manifest first."""
    seed(redactor, ev)
    files: dict[str, bytes] = {}

    def put_json(name: str, value: Any) -> None:
        text = json.dumps(redactor.redact_data(value), indent=2, ensure_ascii=False) + "\n"
        files[name] = text.encode("utf-8")

    model = ev.report
    report = redact_raw(report_json(model), redactor)
    report["host_facts_from"] = "run" if ev.host_from_run else "bundle time"
    books = runbooks(ev)
    report["runbooks"] = {sig.id: f"runbook-{sig.id}.txt" for sig in books}
    put_json("report.json", report)
    text = to_text(model) + "\n"  # exactly as `verdict RUN` prints it; the runbooks beside it
    files["report.txt"] = redactor.redact(text).encode("utf-8")
    page = render(ev, redactor.redact, [runbook_text(sig) for sig in books])
    files["report.html"] = page.encode("utf-8")
    for sig in books:
        files[f"runbook-{sig.id}.txt"] = redactor.redact(runbook_text(sig)).encode("utf-8")
    for table, rows in ev.rows.items():
        put_json(f"ledger/{table}.json", _safe_rows(table, rows))
    for n in ev.report.record.notifications:
        sink_rows = [d for d in ev.rows.get("deliveries", []) if d.get("seq") == n.seq]
        transcript = transcript_text(ev.report.record, n, sink_rows)
        files[f"transcripts/seq-{n.seq:04d}.txt"] = redactor.redact(transcript).encode("utf-8")
    for returned_id, content in ev.returned:
        # Kept byte for byte where no secret or host name is replaced (latin-1 maps each byte).
        text = redactor.redact(content.decode("latin-1"))
        files[f"bounces/returned-{returned_id:04d}.eml"] = text.encode("latin-1", "replace")
    if ev.report.explanation.modules_json is not None:
        put_json("modules.json", ev.report.explanation.modules_json)
    for name, value in ev.other_artifacts:
        put_json(f"{_safe_name(name)}.json", value)
    host = ev.host.to_dict() | {
        "collected": "when the run ended" if ev.host_from_run else "when this bundle was made",
        "gateway_processes": [s.to_dict() for s in ev.report.explanation.gateway_processes],
    }
    put_json("host.json", host)
    log_lines = [json.dumps(redactor.redact_data(e), ensure_ascii=False) for e in ev.log_events]
    files["log.jsonl"] = ("\n".join(log_lines) + ("\n" if log_lines else "")).encode("utf-8")

    manifest = {
        "tool": "notifyprobe",
        "version": __version__,
        "run_id": ev.run_id,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command_line": list(command_line),
        "run_command_line": list(ev.run_command_line or equivalent_burst(ev.report.record.run)),
        "run_command_line_from": "the run"
        if ev.run_command_line
        else ("the run's recorded options: the equivalent burst (the run kept no command line)"),
        "redaction": {
            "secrets": "always removed: passwords, AUTH exchanges, user:password@ in URLs",
            "replaced": list(redactor.kinds),
            "mapping": "beside the bundle (FILE.zip.redaction-map.json), never inside it",
        },
        "files": [
            {"name": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for name, data in sorted(files.items())
        ],
    }
    manifest_text = json.dumps(redactor.redact_data(manifest), indent=2, ensure_ascii=False)
    return [BundleFile("manifest.json", (manifest_text + "\n").encode("utf-8"))] + [
        BundleFile(name, data) for name, data in sorted(files.items())
    ]


RAW_WITHHELD = (
    "the reply's raw bytes were left out of this redacted bundle: a name it replaces would "
    "still be read in them; the ledger keeps them (ledger/notifications.json, transcript)"
)


def redact_raw(report: dict[str, Any], redactor: Redactor) -> dict[str, Any]:
    """`report` with the raw bytes of each reply (`raw_b64`) redacted as the text beside them
    is: read as UTF-8 with every other byte kept as it is (surrogateescape), secrets and the
    names asked for replaced, written back, so every byte not replaced stays exact. Left out,
    with `raw_withheld` saying so, when a replaced name can still be read in the bytes."""
    for n in [report.get("control"), *report.get("notifications", [])]:
        submit = n.get("submit") if isinstance(n, dict) else None
        if not isinstance(submit, dict) or "raw_b64" not in submit:
            continue
        data = base64.b64decode(submit["raw_b64"])
        text = redactor.redact(data.decode("utf-8", "surrogateescape"))
        redacted = text.encode("utf-8", "surrogateescape")
        if _still_named(redacted, redactor):
            del submit["raw_b64"]
            submit["raw_withheld"] = RAW_WITHHELD
        else:
            submit["raw_b64"] = base64.b64encode(redacted).decode("ascii")
    return report


def _still_named(data: bytes, redactor: Redactor) -> bool:
    """Any original the redactor replaces, read in `data` in any of the ways a reader might
    decode it (case-insensitive, as a substring: stricter than the redactor itself)."""
    mapping = redactor.mapping()
    chosen = {
        "hosts": mapping.hosts,
        "emails": mapping.emails,
        "ips": mapping.ips,
        "users": mapping.users,
    }
    originals = [o.lower() for kind in redactor.kinds for o in chosen[kind]]
    readings = [data.decode(e, "replace").lower() for e in ("utf-8", "cp1252", "latin-1")]
    return any(o in reading for o in originals for reading in readings)


def guard(files: Sequence[BundleFile], secrets: Sequence[str]) -> None:
    """Refuse to write a bundle that still holds a secret (a bug elsewhere, caught here)."""
    for secret in secrets:
        forms = [f.encode("utf-8") for f in secret_forms(secret) if len(f) >= MIN_GUARDED_SECRET]
        for f in files:
            encoded = (
                len(secret) >= MIN_GUARDED_SECRET
                and hide_secret(f.data.decode("utf-8", "replace"), secret)[1]
            )
            if encoded or any(form in f.data for form in forms):
                raise ProbeError(f"refusing to write the bundle: a secret is left in {f.name}")


def write_zip(files: Sequence[BundleFile], out: Path, when: float) -> str:
    """Write the zip atomically, with fixed entry times and order; return its SHA-256."""
    date_time = time.gmtime(max(when, ZIP_EPOCH))[:6]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for f in files:
            info = zipfile.ZipInfo(f.name, date_time=date_time)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3
            archive.writestr(info, f.data)
    data = buffer.getvalue()
    write_output(out, data)
    return hashlib.sha256(data).hexdigest()


def make_bundle(
    ledger: Ledger,
    run_id: str,
    out: Path,
    *,
    kinds: Sequence[str] = (),
    secrets: Sequence[str] = (),
    command_line: Sequence[str] = (),
) -> BundleResult:
    ev = load_evidence(ledger, run_id)
    redactor = Redactor(secrets, kinds)
    files = build(ev, redactor, command_line)
    guard(files, secrets)
    digest = write_zip(files, out, ev.report.record.run.started_at)
    beside = out.with_name(out.name + ".sha256")
    mapping = redactor.mapping()
    mapping_path = out.with_name(out.name + ".redaction-map.json")
    write_output(beside, f"{digest}  {out.name}\n".encode())
    if redactor.kinds:
        text = json.dumps(mapping.to_dict(), indent=2, ensure_ascii=False) + "\n"
        write_output(mapping_path, text.encode("utf-8"), mode=0o600)
    return BundleResult(
        path=out,
        sha256=digest,
        files=tuple(f.name for f in files),
        mapping_path=mapping_path if redactor.kinds else None,
        mapping=mapping,
    )


# -- transcripts --------------------------------------------------------------------------


def transcript_text(record: RunRecord, n: Notification, sink_rows: Sequence[dict[str, Any]]) -> str:
    """Both sides of one notification: the probe's SMTP dialogue and what the sink recorded."""
    run = record.run
    t0 = run.started_at
    what = "control message (straight to the sink)" if n.is_control else "notification"
    target = run.sink if n.is_control else run.gateway
    lines = [f"{what} seq {n.seq} · token {n.token} · run {run.run_id}", ""]
    lines.append(f"client side (probe → {target})")
    s = n.submission
    if s is None and n.not_attempted:
        lines.append(f"  not attempted: {n.not_attempted}")
    elif s is None:
        lines.append("  never submitted (the run ended before this notification)")
    else:
        commands = auth_safe([(st.command, st.reply.code if st.reply else None) for st in s.steps])
        for step, command in zip(s.steps, commands, strict=True):
            lines.append(f"  {_stamp(step.at, t0)}  C: {command}")
            if step.reply is not None:
                for i, part in enumerate(step.reply.text.splitlines() or [""]):
                    sep = "-" if i < len(step.reply.text.splitlines()) - 1 else " "
                    lines.append(f"  {'':>27}  S: {step.reply.code}{sep}{part}")
            if step.error is not None:
                lines.append(f"  {'':>27}  !  {step.error}")
        lines.append(f"  outcome: {'accepted' if s.accepted else 'not accepted'} · {s.describe()}")
    lines += ["", f"sink side ({'probe' if n.is_control else 'gateway'} → sink {run.sink})"]
    if not sink_rows:
        lines.append("  nothing received: the sink never recorded this notification")
    for i, d in enumerate(sink_rows, start=1):
        lines += [
            f"  copy {i}: {_stamp(float(d['received_at']), t0)}  from {d.get('peer') or '?'}"
            + (f"  HELO {d['helo']}" if d.get("helo") else ""),
            f"    MAIL FROM:<{d.get('mail_from', '')}>",
            *(f"    RCPT TO:<{r}>" for r in str(d.get("rcpts", "")).split(",") if r),
            f"    DATA {d.get('size', 0)} bytes · token found in {d.get('found_in', '?')}",
            "    250 2.0.0 Recorded (answered only after the row was committed)",
        ]
    if n.latency_s is not None:
        lines += ["", f"latency (submission start → first copy): {n.latency_s:.3f} s"]
    return "\n".join(lines) + "\n"


def _safe_rows(table: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ledger rows as stored, but transcripts parsed and AUTH arguments removed."""
    if table != "notifications":
        return rows
    out = []
    for row in rows:
        steps = json.loads(row.get("transcript") or "[]")
        codes = [(s.get("command", ""), (s.get("reply") or {}).get("code")) for s in steps]
        for step, command in zip(steps, auth_safe(codes), strict=True):
            step["command"] = command
        out.append(row | {"transcript": steps})
    return out


def _stamp(at: float, t0: float) -> str:
    wall = datetime.fromtimestamp(at, timezone.utc).strftime("%H:%M:%S.%f")[:-3]
    return f"{f'+{at - t0:.3f} s':>10} {wall}Z"


def _host_of(endpoint: str) -> str:
    match = re.fullmatch(r"\[([^\]]+)\](?::\d+)?|([^:]+)(?::\d+)?|(.*)", endpoint.strip())
    if match is None:
        return ""
    return match.group(1) or match.group(2) or match.group(3) or ""


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "artifact"
