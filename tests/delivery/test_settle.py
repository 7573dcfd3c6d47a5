"""The adaptive wait: stop waiting once missing mail is lost rather than late."""

from probe.delivery.settle import Patience, wait_until

PATIENCE = Patience(factor=4.0, grace_s=0.5, timeout_s=30.0)


def test_nothing_pending_means_no_wait():
    assert wait_until({}, [0.1], burst_ended_at=100.0, patience=PATIENCE) == 100.0


def test_no_delivery_seen_yet_waits_up_to_the_hard_timeout():
    assert wait_until({2: 99.0}, [], burst_ended_at=100.0, patience=PATIENCE) == 130.0


def test_fast_first_delivery_shortens_the_wait_to_a_multiple_of_its_latency():
    until = wait_until({2: 99.5, 3: 99.6}, [0.01], burst_ended_at=100.0, patience=PATIENCE)
    assert until == 99.6 + 4 * 0.01 + 0.5


def test_slow_deliveries_stretch_the_wait_but_never_past_the_timeout():
    until = wait_until({2: 99.0}, [20.0], burst_ended_at=100.0, patience=PATIENCE)
    assert until == 130.0
