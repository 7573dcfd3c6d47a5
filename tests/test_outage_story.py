"""One outage, one story: a run that delivers nothing after a first_only run, told on crafted
glances of the runs before it (pure: no ledger, no clock)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from probe.history import (
    Outage,
    Story,
    as_told,
    failed_as,
    normal_greeting,
    restart_between,
    tell,
)
from probe.records import ProcessStart, RunGlance
from probe.verdict import Pattern, Severity, Verdict, classify
from tests.test_verdict import hung_up, note, record, refused

BANNER = "gw.example.org ESMTP NotifyGateway 5.0"
FIRST_ONLY = {
    "pattern": "first_only",
    "severity": "critical",
    "cause": None,
    "bounced": 0,
    "lost_accepted": 19,
    "lost_refused": 0,
}
NONE = {"pattern": "none_delivered", "severity": "critical", "cause": None, "bounced": 0}


def glance(
    run_id: str,
    at: float,
    verdict: Mapping[str, object] | None,
    delivered: int = 0,
    greeting: str | None = BANNER,
    starts: tuple[ProcessStart, ...] = (),
) -> RunGlance:
    kept = dict(verdict) if verdict is not None else None  # as the ledger reads it back
    return RunGlance(run_id, at, at + 3.0, kept, delivered, greeting, starts)


def gateway(pid: int, at: float) -> tuple[ProcessStart, ...]:
    return (ProcessStart("process", "notifygw", pid, at),)


def test_nothing_delivered_after_first_only_continues_its_outage() -> None:
    first = glance("run-1", 100.0, FIRST_ONLY, delivered=1)
    story = tell(glance("run-2", 105.0, NONE), [first])
    assert story.outage is not None
    assert (story.outage.since_run, story.outage.runs) == ("run-1", ("run-2",))
    assert story.outage.line.startswith("one notification delivered since run-1 at ")
    assert story.outage.line.endswith("; none since; no restart seen")


def test_an_outage_runs_on_through_every_run_that_delivers_nothing() -> None:
    earlier = [glance(f"run-{i}", 100.0 + 5 * i, NONE) for i in range(5, 1, -1)]
    earlier.append(glance("run-1", 100.0, FIRST_ONLY, delivered=1))
    story = tell(glance("run-6", 130.0, NONE), earlier)
    assert story.outage is not None
    assert story.outage.since_run == "run-1"
    assert story.outage.runs == ("run-2", "run-3", "run-4", "run-5", "run-6")


def test_a_restart_seen_by_process_start_time_is_a_new_story_on_the_timeline() -> None:
    first = glance("run-1", 100.0, FIRST_ONLY, delivered=1, starts=gateway(41, 50.0))
    now = glance("run-2", 105.0, NONE, starts=gateway(42, 102.0))
    story = tell(now, [first])
    assert story.outage is None
    assert story.restart is not None
    assert "notifygw (pid 42) started at" in story.restart.how
    assert any("gateway restart seen" in line for line in story.timeline())


def test_a_restart_seen_between_older_runs_of_the_chain_ends_it_there() -> None:
    earlier = [
        glance("run-3", 110.0, NONE, starts=gateway(42, 102.0)),
        glance("run-2", 105.0, NONE, starts=gateway(41, 50.0)),
        glance("run-1", 100.0, FIRST_ONLY, delivered=1, starts=gateway(41, 50.0)),
    ]
    assert tell(glance("run-4", 115.0, NONE, starts=gateway(42, 102.0)), earlier).outage is None


def test_a_changed_greeting_is_a_restart_but_a_changing_clock_in_it_is_not() -> None:
    first = glance(
        "run-1",
        100.0,
        FIRST_ONLY,
        delivered=1,
        greeting="gw ESMTP ready at Fri, 4 Dec 2026 18:00:01 +0000",
    )
    same = glance("run-2", 105.0, NONE, greeting="gw ESMTP ready at Sat, 5 Dec 2026 09:12:44 +0000")
    assert tell(same, [first]).outage is not None
    upgraded = glance("run-2", 105.0, NONE, greeting="gw ESMTP NotifyGateway 5.1 ready")
    older = glance(
        "run-1", 100.0, FIRST_ONLY, delivered=1, greeting="gw ESMTP NotifyGateway 5.0 ready"
    )
    story = tell(upgraded, [older])
    assert story.outage is None
    assert story.restart is not None and "greeting changed" in story.restart.how
    assert normal_greeting("ready 2026-12-04T18:00:01Z id 8f3a9c2d11") == "ready id"


def test_a_delivery_is_never_a_continuation() -> None:
    first = glance("run-1", 100.0, FIRST_ONLY, delivered=1)
    assert tell(glance("run-2", 105.0, FIRST_ONLY, delivered=1), [first]).outage is None
    healthy = {"pattern": "healthy", "severity": "ok", "cause": None}
    assert tell(glance("run-2", 105.0, healthy, delivered=20), [first]).outage is None


def test_a_run_in_between_that_delivered_breaks_the_chain() -> None:
    healthy = {"pattern": "healthy", "severity": "ok", "cause": None}
    earlier = [
        glance("run-2", 105.0, healthy, delivered=20),
        glance("run-1", 100.0, FIRST_ONLY, delivered=1),
    ]
    assert tell(glance("run-3", 110.0, NONE), earlier).outage is None


def test_a_different_failure_is_a_new_story() -> None:
    first = glance("run-1", 100.0, FIRST_ONLY, delivered=1)
    unreachable = {"pattern": "gateway_unreachable", "severity": "critical", "cause": "refused"}
    assert tell(glance("run-2", 105.0, unreachable), [first]).outage is None
    bounced = {"pattern": "all_bounced", "severity": "critical", "cause": None, "bounced": 20}
    assert tell(glance("run-2", 105.0, bounced), [first]).outage is None  # its rest were lost
    auth = {"pattern": "all_rejected", "severity": "critical", "cause": "auth"}
    assert tell(glance("run-2", 105.0, auth), [first]).outage is None


def test_the_same_failure_as_the_first_runs_lost_ones_continues_it() -> None:
    bouncing = {**FIRST_ONLY, "bounced": 19}
    bounced = {"pattern": "all_bounced", "severity": "critical", "cause": None, "bounced": 20}
    first = glance("run-1", 100.0, bouncing, delivered=1)
    assert tell(glance("run-2", 105.0, bounced), [first]).outage is not None
    refusing = {**FIRST_ONLY, "lost_accepted": 0, "lost_refused": 19}
    rejected = {"pattern": "all_rejected", "severity": "critical", "cause": None}
    first = glance("run-1", 100.0, refusing, delivered=1)
    assert tell(glance("run-2", 105.0, rejected), [first]).outage is not None
    assert failed_as({**FIRST_ONLY, "bounced": 3}) is None  # mixed: no claim


def test_a_run_cut_off_with_nothing_delivered_is_passed_over() -> None:
    cut = {"pattern": "inconclusive", "severity": "unknown", "cause": "cut_off"}
    earlier = [glance("run-2", 105.0, cut), glance("run-1", 100.0, FIRST_ONLY, delivered=1)]
    story = tell(glance("run-3", 110.0, NONE), earlier)
    assert story.outage is not None and story.outage.runs == ("run-3",)
    cut_with_one = [glance("run-2", 105.0, cut, delivered=1), earlier[1]]
    assert tell(glance("run-3", 110.0, NONE), cut_with_one).outage is None


def test_an_unproven_sink_breaks_the_chain() -> None:
    unproven = {"pattern": "inconclusive", "severity": "unknown", "cause": "sink_unproven"}
    earlier = [glance("run-2", 105.0, unproven), glance("run-1", 100.0, FIRST_ONLY, delivered=1)]
    assert tell(glance("run-3", 110.0, NONE), earlier).outage is None


def test_no_first_only_run_within_the_look_back_is_no_story() -> None:
    earlier = [glance(f"run-{i}", 100.0 + i, NONE) for i in range(9, 0, -1)]
    assert tell(glance("run-10", 200.0, NONE), earlier).outage is None
    earlier.append(glance("run-0", 90.0, FIRST_ONLY, delivered=1))
    assert tell(glance("run-10", 200.0, NONE), earlier, look_back=5).outage is None
    assert tell(glance("run-10", 200.0, NONE), earlier).outage is not None


def test_the_known_outage_of_the_previous_run_ends_the_walk() -> None:
    known = Outage("run-1", 100.0, ("run-2",), Pattern.NONE_DELIVERED, "lost", False)
    walked: list[str] = []

    def earlier() -> list[RunGlance]:
        runs = [glance("run-2", 105.0, NONE), glance("run-1", 100.0, FIRST_ONLY, delivered=1)]
        return runs

    def lazily() -> Iterator[RunGlance]:
        for g in earlier():
            walked.append(g.run_id)
            yield g

    story = tell(glance("run-3", 110.0, NONE), lazily(), known)
    assert story.outage is not None and story.outage.runs == ("run-2", "run-3")
    assert walked == ["run-2"]


def test_a_restart_is_only_claimed_unseen_when_it_could_be_seen() -> None:
    first = glance("run-1", 100.0, FIRST_ONLY, delivered=1, greeting=None)
    story = tell(glance("run-2", 105.0, NONE, greeting=None), [first])
    assert story.outage is not None
    assert story.outage.line.endswith("no restart seen (none could be)")


def test_a_continued_run_is_told_first_only_critical_with_its_own_pattern_kept() -> None:
    first = glance("run-1", 100.0, FIRST_ONLY, delivered=1)
    story = tell(glance("run-2", 105.0, NONE), [first])
    own = Verdict(
        Pattern.NONE_DELIVERED,
        Severity.CRITICAL,
        "accepted 20 of 20, none arrived",
        ("seq 1-20: accepted but never delivered",),
        sent=20,
        accepted=20,
    )
    told = as_told(own, story)
    assert (told.pattern, told.severity) == (Pattern.FIRST_ONLY, Severity.CRITICAL)
    assert "delivered since run-1 at" in told.summary
    assert told.summary.endswith("none since; no restart seen")
    assert told.evidence[0].startswith("this run on its own: none_delivered")
    assert (told.sent, told.accepted, told.delivered) == (20, 20, 0)
    assert as_told(own, Story()) is own


def test_no_restart_between_runs_with_the_same_gateway_instances() -> None:
    a = glance("run-1", 100.0, FIRST_ONLY, delivered=1, starts=gateway(41, 50.0))
    b = glance("run-2", 105.0, NONE, starts=gateway(41, 50.0))
    assert restart_between(a, b) is None


def test_a_first_only_gateway_that_hangs_up_on_the_rest_tells_one_story_while_it_does() -> None:
    hangs_up = classify(record(note(1), *(hung_up(s) for s in range(2, 11))))
    assert (hangs_up.pattern, hangs_up.details) == (
        Pattern.FIRST_ONLY,
        {"lost_accepted": 0, "lost_refused": 0, "lost_hung_up": 9},
    )
    again = classify(record(*(hung_up(s) for s in range(1, 11))))
    assert again.pattern is Pattern.GATEWAY_HUNG_UP
    first = glance("run-1", 100.0, hangs_up.to_dict(), delivered=1)
    story = tell(glance("run-2", 105.0, again.to_dict()), [first])
    assert story.outage is not None and story.outage.failed_as == "hung_up"
    told = as_told(again, story)
    assert told.pattern is Pattern.FIRST_ONLY
    assert any("hung up like its lost notifications" in line for line in told.evidence)
    refusing = classify(record(note(1), *(refused(s) for s in range(2, 11))))
    first = glance("run-1", 100.0, refusing.to_dict(), delivered=1)
    assert tell(glance("run-2", 105.0, again.to_dict()), [first]).outage is None  # another failure
    mixed = classify(record(note(1), *(hung_up(s) if s % 2 else refused(s) for s in range(2, 11))))
    assert failed_as(mixed.to_dict()) is None
