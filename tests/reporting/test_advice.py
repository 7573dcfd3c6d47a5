"""What a verdict means and what to do, when a next hop refused the notifications it lost."""

from __future__ import annotations

from probe.reporting.text import MEANING, NEXT_HOP_ADVICE, advice
from probe.verdict import NextHop, Pattern, Severity, Verdict


def verdict(pattern: Pattern, refused: int, lost: int = 9) -> Verdict:
    hop = (
        NextHop(lost, refused, "5.7.1", "next-hop.example", "smtp; 550 5.7.1 no")
        if refused
        else None
    )
    return Verdict(pattern, Severity.CRITICAL, "summary", sent=10, delivered=1, next_hop=hop)


def test_a_first_only_of_next_hop_refusals_points_to_the_next_hop_not_to_a_stale_module() -> None:
    meaning, action = advice(verdict(Pattern.FIRST_ONLY, refused=9))
    assert (meaning, action) == NEXT_HOP_ADVICE
    assert "MPNotifyPerf" not in meaning and "notifyprobe modules" not in action


def test_a_loss_at_the_gateway_keeps_the_patterns_own_advice() -> None:
    assert advice(verdict(Pattern.FIRST_ONLY, refused=6)) == MEANING[Pattern.FIRST_ONLY]
    assert advice(verdict(Pattern.FIRST_ONLY, refused=0)) == MEANING[Pattern.FIRST_ONLY]


def test_all_bounced_keeps_its_own_advice_which_reads_the_route_from_the_status() -> None:
    assert advice(verdict(Pattern.ALL_BOUNCED, refused=10, lost=10)) == MEANING[Pattern.ALL_BOUNCED]
