"""Probe once: run → explain → keep → report, the one path of every command that probes.

`burst`, `demo`, `postflight` and `watch` differ only in what they ask of a run: its settings,
what to diagnose after it (the modules to look for, the gateway's processes), and how it is
kept for a later evidence bundle (the command that made it, the secrets never to keep). What a
run is, and what it leaves in the ledger, is the same for all of them.

`Probe` is prepared before anything is sent (a bad module name or a broken signature stops it
there), runs the burst, and finishes a run however it ended: `burst` judges a run a signal cut
short itself, then finishes it like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from probe.delivery import ProbeOutcome, ProbeSettings, ProgressCallback, SharedSink, run_probe
from probe.diagnosis import Explanation, Request, explain, prepare
from probe.host import collect_facts
from probe.ledger import Ledger
from probe.logs import CAPTURE
from probe.reporting import RunReport, keep_artifacts, run_report

LogEvents = Callable[[str], Sequence[dict[str, Any]]]  # run id → the log events to keep with it


@dataclass(frozen=True)
class Job:
    """What a command asks of one run."""

    settings: ProbeSettings
    request: Request = field(default_factory=Request)  # what to diagnose after the burst
    argv: tuple[str, ...] = ()  # the command a user can run again to make such a run
    secrets: tuple[str, ...] = ()  # never kept, in any encoding
    log_events: LogEvents = CAPTURE.events_of  # this run's events, for the evidence bundle


@dataclass(frozen=True)
class Probed:
    """One run, judged, explained, kept and told as every view tells it."""

    outcome: ProbeOutcome
    explanation: Explanation
    report: RunReport


class Probe:
    """One run of a job, prepared before anything is sent or any ledger is opened."""

    def __init__(self, job: Job):
        self.job = job
        self.prepared = prepare(job.request)

    async def run(
        self,
        ledger: Ledger,
        progress: ProgressCallback | None = None,
        *,
        shared: SharedSink | None = None,
        run_id: str | None = None,
    ) -> ProbeOutcome:
        """Send the burst and wait for it to settle: the verdict, kept in the ledger."""
        return await run_probe(ledger, self.job.settings, progress, shared=shared, run_id=run_id)

    def finish(self, ledger: Ledger, outcome: ProbeOutcome) -> Probed:
        """After the verdict, however the run ended: the module inventory and the diagnosis,
        what a later evidence bundle needs kept with the run, and the report. It reads the
        host (a module scan): a caller on an event loop runs it in a thread."""
        job, run_id = self.job, outcome.record.run.run_id
        why = explain(job.request, self.prepared, ledger, outcome)
        keep_artifacts(
            ledger,
            run_id,
            explanation=why,
            log_events=job.log_events(run_id),
            argv=job.argv,
            host=collect_facts(),
            secrets=job.secrets,
        )
        return Probed(outcome, why, run_report(ledger, outcome.record, outcome.verdict))

    async def once(self, ledger: Ledger, progress: ProgressCallback | None = None) -> Probed:
        return self.finish(ledger, await self.run(ledger, progress))
