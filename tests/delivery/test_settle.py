"""The settle window: where it comes from, and when missing mail stops being late and is lost."""

import pytest

from probe.correlation import TokenRef
from probe.delivery.settle import (
    DEFAULT_WINDOW_S,
    HISTORY_FACTOR,
    HISTORY_RUNS,
    LEARNED_FLOOR_S,
    MIN_HEALTHY_RUNS,
    Patience,
    choose_window,
    settle_deadline,
)
from probe.errors import UsageError
from probe.ledger import Ledger
from probe.records import (
    DeliveryHistory,
    ReceivedMessage,
    Run,
    RunOptions,
    RunStatus,
    SmtpReply,
    Submission,
    WindowSource,
)

OK = SmtpReply(250, "2.0.0 queued", "2.0.0")
FAST = DeliveryHistory(runs=MIN_HEALTHY_RUNS, max_latency_s=0.02, max_gap_s=0.01)


def test_a_gateway_without_history_gets_the_default_window_safe_for_queue_runners():
    window = choose_window(Patience(), DeliveryHistory())
    assert window.source is WindowSource.DEFAULT
    assert window.seconds == DEFAULT_WINDOW_S > 10.0  # outlasts a runner that wakes every 10 s
    assert "0 fully delivered run(s)" in window.reason


def test_too_little_history_still_gets_the_default():
    history = DeliveryHistory(runs=MIN_HEALTHY_RUNS - 1, max_latency_s=0.01)
    assert choose_window(Patience(), history).source is WindowSource.DEFAULT


def test_a_gateway_known_to_be_fast_gets_the_floor():
    window = choose_window(Patience(grace_s=1.0), FAST)
    assert (window.source, window.seconds, window.runs) == (WindowSource.LEARNED, 1.0, 3)
    assert "learned from 3 fully delivered runs" in window.reason


def test_a_learned_window_outlasts_the_slowest_delivery_and_the_longest_gap_seen():
    slow = DeliveryHistory(runs=5, max_latency_s=2.0, max_gap_s=0.5)
    assert choose_window(Patience(), slow).seconds == HISTORY_FACTOR * 2.0
    spaced = DeliveryHistory(runs=5, max_latency_s=0.5, max_gap_s=2.5)
    assert choose_window(Patience(), spaced).seconds == HISTORY_FACTOR * 2.5


def test_a_learned_window_outlasts_a_slow_spell_of_a_few_seconds():
    # a gateway fast for months still pauses: a 5 s resolver timeout is late, not lost
    window = choose_window(Patience(), FAST)
    assert window.source is WindowSource.LEARNED
    assert window.seconds == LEARNED_FLOOR_S > 5.0
    assert window.seconds <= 0.4 * DEFAULT_WINDOW_S  # still much faster than the default


def test_a_learned_window_is_never_above_the_default():
    batching = DeliveryHistory(runs=5, max_latency_s=10.0, max_gap_s=10.0)
    assert choose_window(Patience(), batching).seconds == DEFAULT_WINDOW_S


def test_an_explicit_window_wins_over_history():
    window = choose_window(Patience(settle_s=0.5), FAST)
    assert (window.source, window.seconds) == (WindowSource.OPTION, 0.5)


def test_the_hard_timeout_cuts_the_default_and_refuses_a_longer_explicit_window():
    window = choose_window(Patience(timeout_s=5.0), DeliveryHistory())
    assert window.seconds == 5.0 and "cut to --timeout 5 s" in window.reason
    with pytest.raises(UsageError, match="--settle"):
        Patience(settle_s=40.0, timeout_s=30.0)


def test_the_window_kept_in_the_run_options_reads_back_and_old_runs_have_none():
    window = choose_window(Patience(), FAST)
    assert RunOptions.from_json(RunOptions(settle=window).to_json()).settle == window
    assert RunOptions.from_json("{}").settle is None
    assert RunOptions.from_json('{"settle": {"seconds": "x"}}').settle is None


def test_nothing_pending_means_no_wait():
    assert settle_deadline(0, 100.5, burst_ended_at=100.0, window_s=15.0, timeout_s=30.0) == 100.0


def test_silence_counts_from_the_end_of_the_burst_when_nothing_arrived_since():
    assert settle_deadline(3, None, burst_ended_at=100.0, window_s=15.0, timeout_s=30.0) == 115.0
    assert settle_deadline(3, 99.0, burst_ended_at=100.0, window_s=15.0, timeout_s=30.0) == 115.0


def test_every_delivery_restarts_the_silence():
    assert settle_deadline(3, 108.0, burst_ended_at=100.0, window_s=15.0, timeout_s=30.0) == 123.0


def test_a_gateway_that_trickles_mail_is_still_cut_at_the_hard_timeout():
    assert settle_deadline(3, 125.0, burst_ended_at=100.0, window_s=15.0, timeout_s=30.0) == 130.0


def _run(
    ledger: Ledger,
    run_id: str,
    gateway: str,
    arrivals: dict[int, float | None],
    status: RunStatus = "done",
) -> None:
    """A run submitted at 100 + seq, its notifications arriving at `arrivals` (None: lost)."""
    ledger.create_run(Run(run_id, gateway, "probe.invalid", len(arrivals), 100.0))
    for seq, arrived in arrivals.items():
        start = 100.0 + seq
        ledger.record_submission(run_id, seq, Submission(start, start + 0.01, "data", OK))
        if arrived is not None:
            ledger.record_delivery(TokenRef(run_id, seq), "envelope", ReceivedMessage(arrived))
    ledger.finish_run(run_id, status, 200.0, "{}")


def test_history_counts_only_fully_delivered_finished_runs_of_the_same_gateway(ledger):
    _run(ledger, "aaaaaaaaaa", "gw:25", {1: 101.1, 2: 102.5, 3: 103.0})
    _run(ledger, "bbbbbbbbbb", "gw:25", {1: 101.0, 2: 109.0, 3: None})  # a loss: not history
    _run(ledger, "cccccccccc", "other:25", {1: 111.0, 2: 112.0, 3: 113.0})
    _run(ledger, "dddddddddd", "gw:25", {1: 121.0, 2: 122.0, 3: 123.0}, status="interrupted")
    history = ledger.delivery_history("gw:25", limit=HISTORY_RUNS)
    assert history.runs == 1
    assert history.max_latency_s == pytest.approx(0.5)  # seq 2: submitted 102.0, in at 102.5
    assert history.max_gap_s == pytest.approx(1.4)  # between seq 1 and seq 2
    assert ledger.delivery_history("nobody:25", limit=HISTORY_RUNS) == DeliveryHistory()
