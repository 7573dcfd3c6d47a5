"""Verdict history: a run judged again with the mail and the bounces that came after its
verdict (a revision), and what the ledger keeps of it (a correction)."""

from __future__ import annotations

import pytest

from probe.history import revise
from probe.verdict import Pattern
from tests.test_verdict import bounced, note, record

JUDGED_AT = 1002.0  # the verdict; every note() is submitted around 1000 s


def test_late_mail_that_completes_the_run_says_the_loss_was_a_delay():
    late = record(note(1), *(note(seq, latency=4.0) for seq in range(2, 5)))
    revision = revise(late, Pattern.FIRST_ONLY, JUDGED_AT)
    assert revision.changed and revision.current.pattern is Pattern.HEALTHY
    assert revision.late == 3 and revision.after_verdict_s == pytest.approx(2.04)
    assert revision.summary() == (
        "3 notifications arrived after the verdict, the last at +5.0 s (2.0 s after the "
        "verdict): the loss was a delay (first_only → healthy)"
    )


def test_late_mail_that_leaves_losses_says_part_of_the_loss_was_a_delay():
    partly = record(
        note(1),
        note(2, latency=4.0),
        note(3, latency=4.0),
        note(4, delivered=0),
        note(5, delivered=0),
    )
    revision = revise(partly, Pattern.FIRST_ONLY, JUDGED_AT)
    assert revision.current.pattern is Pattern.DEGRADED_AFTER_K
    assert "part of the loss was a delay (first_only → degraded_after_k)" in revision.summary()


def test_no_late_mail_leaves_the_verdict_as_it_was():
    lost = record(note(1), note(2, delivered=0), note(3, delivered=0))
    revision = revise(lost, Pattern.FIRST_ONLY, JUDGED_AT)
    assert not revision.changed and revision.late == 0
    assert revision.summary() == (
        "no notification arrived after the verdict: the verdict stays first_only"
    )


def test_bounces_that_came_back_after_the_verdict_re_judge_it():
    late = record(*(bounced(seq, at=JUDGED_AT + 3) for seq in range(1, 4)))
    revision = revise(late, Pattern.NONE_DELIVERED, JUDGED_AT)
    assert revision.current.pattern is Pattern.ALL_BOUNCED and revision.late_bounces == 3
    assert "none_delivered → all_bounced" in revision.summary()
