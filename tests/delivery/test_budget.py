"""A run's time budget (`watch`: to keep the target's interval): no SMTP step waits past it, the
notifications not started by then are not attempted, and the wait for late mail ends with it."""

from __future__ import annotations

import pytest

from probe.delivery.run import ProbeSettings, run_probe
from probe.delivery.settings import BurstSettings
from probe.delivery.settle import Patience
from probe.ledger import Ledger
from probe.records import Endpoint, SmtpPhase
from probe.verdict import Pattern
from tests.monitor.gateways import hung_gateway
from tests.ports import unused_port

pytestmark = pytest.mark.real

HUNG_STEP_TIMEOUT_S = 60.0


async def test_a_hung_gateway_is_judged_within_the_budget_not_the_step_timeout(tmp_path):
    async with hung_gateway() as gateway:
        settings = ProbeSettings(
            gateway,
            Endpoint("127.0.0.1", unused_port()),
            burst=BurstSettings(count=4, step_timeout_s=HUNG_STEP_TIMEOUT_S),
            patience=Patience(settle_s=30.0, timeout_s=30.0),
            budget_s=1.0,
        )
        with Ledger(tmp_path / "l.db") as ledger:
            outcome = await run_probe(ledger, settings)
    assert outcome.elapsed_s < HUNG_STEP_TIMEOUT_S / 2  # the budget, not the step timeout
    first, *rest = outcome.record.burst
    assert first.submission is not None and first.submission.stalled_at is SmtpPhase.END_OF_DATA
    assert "left of the run's time budget" in (first.submission.error or "")
    assert all(n.not_attempted and "time budget" in n.not_attempted for n in rest)
    assert outcome.verdict.pattern is Pattern.GATEWAY_STALLED
    assert outcome.record.run.options.budget_s == 1.0
