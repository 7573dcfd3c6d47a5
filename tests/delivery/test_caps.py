"""The anti-mail-bomb caps hold for every caller of the probe, not only the burst command."""

import pytest

from probe.delivery.run import ProbeSettings
from probe.errors import UsageError
from probe.records import Endpoint

GATEWAY = Endpoint("127.0.0.1", 25)


def test_settings_refuse_a_burst_above_the_count_cap():
    with pytest.raises(UsageError, match=r"outside 1\.\.10000"):
        ProbeSettings(gateway=GATEWAY, sink=GATEWAY, count=1_000_000)


def test_settings_refuse_a_rate_above_the_rate_cap():
    with pytest.raises(UsageError, match="at most 1000"):
        ProbeSettings(gateway=GATEWAY, sink=GATEWAY, max_rate=5000.0)
