"""Records keep what was said, but never in a form that drives the reader's terminal."""

from __future__ import annotations

from probe.records import SmtpReply, printable


def test_control_bytes_in_a_reply_are_written_out_not_kept() -> None:
    reply = SmtpReply.parse(250, "ok \x1b[2J\x1b]0;owned\x07 done\r")
    assert reply.text == "ok \\x1b[2J\\x1b]0;owned\\x07 done"


def test_line_breaks_and_tabs_of_a_multiline_reply_are_kept() -> None:
    assert printable("gw01 Hello\nSIZE 1000\tPIPELINING") == "gw01 Hello\nSIZE 1000\tPIPELINING"
