"""The TLS mode: one of three names, from the command line, a watch config or code."""

from __future__ import annotations

import pytest

from probe.delivery.tls import TLS_MODES, ClientSecurity, tls_mode
from probe.errors import UsageError


def test_the_three_modes_are_read_as_themselves() -> None:
    assert TLS_MODES == ("none", "starttls", "implicit")
    assert [tls_mode(text) for text in TLS_MODES] == list(TLS_MODES)


@pytest.mark.parametrize("text", ["", "tls", "STARTTLS", " implicit"])
def test_any_other_text_is_a_usage_error_that_lists_the_modes(text: str) -> None:
    with pytest.raises(UsageError, match="must be one of none, starttls, implicit"):
        tls_mode(text)


def test_client_security_built_in_code_with_a_bad_mode_is_refused_too() -> None:
    with pytest.raises(UsageError, match=r"not 'ssl'"):
        ClientSecurity(tls="ssl")  # type: ignore[arg-type]  # an untyped caller (argparse, JSON)
