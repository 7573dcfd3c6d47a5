"""Records keep what was said, but never in a form that drives the reader's terminal."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from probe.records import SmtpReply, escape_bytes, printable, unescape_bytes


def test_control_bytes_in_a_reply_are_written_out_not_kept() -> None:
    reply = SmtpReply.parse(250, "ok \x1b[2J\x1b]0;owned\x07 done\r")
    assert reply.text == "ok \\x1b[2J\\x1b]0;owned\\x07 done"


def test_line_breaks_and_tabs_of_a_multiline_reply_are_kept() -> None:
    assert printable("gw01 Hello\nSIZE 1000\tPIPELINING") == "gw01 Hello\nSIZE 1000\tPIPELINING"


def test_bytes_that_are_not_utf8_never_reach_the_ledger_as_surrogates() -> None:
    # aiosmtplib and aiosmtpd decode with surrogateescape: SQLite cannot store the result
    hostile = b"ok \xff\xfe \x00".decode("utf-8", "surrogateescape")
    assert printable(hostile) == "ok \\xff\\xfe \\x00"
    assert printable(hostile).encode("utf-8")


def test_a_cp1252_reply_reads_as_text_and_keeps_its_bytes() -> None:
    wire = "220 Mailserver für Benachrichtigungen bereit".encode("cp1252")
    reply = SmtpReply.parse(220, wire[4:].decode("utf-8", "surrogateescape"))
    assert reply.text == "Mailserver für Benachrichtigungen bereit"
    assert reply.raw == "Mailserver f\\xfcr Benachrichtigungen bereit"
    assert reply.wire == wire[4:]


def test_garbage_that_does_not_read_as_cp1252_text_is_shown_escaped() -> None:
    reply = SmtpReply.parse(250, b"\x81\xff\x07 \xfe".decode("utf-8", "surrogateescape"))
    assert reply.text == "\\x81\\xff\\x07 \\xfe"
    assert reply.wire == b"\x81\xff\x07 \xfe"


@given(st.binary(max_size=200))
def test_every_reply_is_kept_losslessly_and_shown_without_a_control_byte(data: bytes) -> None:
    assert unescape_bytes(escape_bytes(data)) == data
    reply = SmtpReply.parse(250, data.decode("utf-8", "surrogateescape"))
    assert reply.wire == data
    shown = reply.text.encode("utf-8")  # storable and printable: no surrogate, no control
    assert not re.search(rb"[\x00-\x08\x0b-\x1f\x7f]", shown)
    assert not re.search("[\x80-\x9f]", reply.text)


def test_every_stage_is_the_stage_of_an_smtp_phase_and_every_phase_has_one():
    """`Stage` (where a submission ended) and `SmtpPhase` (where the probe waited) are kept in
    step by this, not by hand."""
    from typing import get_args

    from probe.records import SmtpPhase, Stage

    assert {phase.stage for phase in SmtpPhase} == set(get_args(Stage))
    assert all(phase.stage == phase.value for phase in SmtpPhase if phase.value in get_args(Stage))


def test_run_options_read_back_as_kept_and_an_old_or_broken_record_takes_defaults():
    from probe.records import RunOptions, RunSecurity, SettleWindow, WindowSource

    kept = RunOptions(
        target="paris",
        security=RunSecurity("starttls", None, True, "ops"),
        per_session=5,
        notification_gap_s=0.5,
        budget_s=None,
        lab=True,
        settle=SettleWindow(1.5, WindowSource.LEARNED, 3, "learned"),
    )
    assert RunOptions.from_json(kept.to_json()) == kept
    assert RunOptions.from_json(None) == RunOptions() == RunOptions.from_json("not json")
    old = RunOptions.from_json('{"slow_after_s": "7", "per_session": true, "max_rate": 20}')
    assert (old.slow_after_s, old.per_session, old.max_rate) == (5.0, None, 20.0)
