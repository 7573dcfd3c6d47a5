"""Windows path normalisation: `%VARS%` expand to their value exactly as written."""

from __future__ import annotations

import pytest

from probe.upgrade.drift import win_norm


@pytest.mark.parametrize(
    "value",
    [r"D:\Exchsrvr", r"\\server\share", r"C:\Program Files\1\g<0>", r"E:\new\tools"],
)
def test_a_variable_value_with_backslashes_and_escapes_is_taken_literally(value: str) -> None:
    assert win_norm(r"%ExchSrvr%\bin", {"EXCHSRVR": value}) == win_norm(value + r"\bin")


def test_an_expanded_value_keeps_what_a_replacement_template_would_interpret() -> None:
    assert win_norm("%X%", {"X": r"C:\a\1\g<0>\n"}) == r"c:\a\1\g<0>\n"
