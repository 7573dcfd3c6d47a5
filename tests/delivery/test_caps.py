"""The anti-mail-bomb caps hold for every caller of the probe, not only the burst command."""

import pytest

from probe.delivery.settings import BurstSettings
from probe.errors import UsageError


def test_settings_refuse_a_burst_above_the_count_cap():
    with pytest.raises(UsageError, match=r"outside 1\.\.10000"):
        BurstSettings(count=1_000_000)


def test_settings_refuse_a_rate_above_the_rate_cap():
    with pytest.raises(UsageError, match="at most 1000"):
        BurstSettings(max_rate=5000.0)
