"""Reading bounces: every fixture in fixtures/bounces says what it says, and no input breaks it."""

from __future__ import annotations

import time
from email.utils import formatdate
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probe.correlation import recipient_for, sender_for
from probe.delivery.bounce import (
    MAX_BYTES,
    MAX_DIAGNOSTIC,
    BounceFormat,
    BounceReport,
    RecipientReport,
    looks_like_bounce,
    read_bounce,
)
from probe.delivery.burst import compose
from tests.conftest import TEST_KEY

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "bounces"
TOKEN = TEST_KEY.token("0123456789", 7)  # what fixtures/make_bounces.py sends
RCPT = recipient_for(TOKEN, "probe.invalid")
REFUSED = f"550 5.7.1 <{RCPT}>: Recipient address rejected: notifications not accepted here"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


# name: (format, reporting MTA, the one recipient block)
EXPECTED: dict[str, tuple[BounceFormat, str, RecipientReport]] = {
    "postfix-failed.eml": (
        "rfc3464",
        "gateway.notifyprobe-lab.invalid",
        RecipientReport("failed", "5.7.1", f"smtp; {REFUSED}", "127.0.0.1", RCPT),
    ),
    "postfix-delayed.eml": (
        "rfc3464",
        "gateway.notifyprobe-lab.invalid",
        RecipientReport("delayed", "4.7.1", "smtp; 450 4.7.1 try again later", "127.0.0.1", RCPT),
    ),
    # Exim 4.96 writes a generic Status (5.0.0); the remote's 5.7.1, quoted in the diagnostic,
    # is the status read.
    "exim-failed.eml": (
        "rfc3464",
        "exim-gateway.invalid",
        RecipientReport("failed", "5.7.1", f"smtp; {REFUSED}", "127.0.0.1", RCPT),
    ),
    "exim-plain-failed.eml": (
        "exim",
        "mail.example.org",
        RecipientReport("failed", "5.7.1", REFUSED, "mx.example.org", RCPT),
    ),
    "exim-plain-delayed.eml": (
        "exim",
        "mail.example.org",
        RecipientReport("delayed", "4.7.1", "450 4.7.1 try again later", "mx.example.org", RCPT),
    ),
    "qmail-failed.eml": (
        "qmail",
        "mail.example.net",
        RecipientReport("failed", "5.7.1", REFUSED, "192.0.2.25", RCPT),
    ),
    "exchange-failed.eml": (
        "exchange",
        "EXCH01.exchange.example.com",
        RecipientReport("failed", "5.7.1", REFUSED, "", RCPT),
    ),
}


def test_every_fixture_has_its_expectation() -> None:
    assert {p.name for p in FIXTURES.glob("*.eml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_is_read_into_action_status_diagnostic_mtas_recipient_and_token(
    name: str,
) -> None:
    fmt, reporting_mta, recipient = EXPECTED[name]
    report = read_bounce(fixture(name))
    assert report == BounceReport(fmt, reporting_mta, (recipient,), report.returned_tokens)
    assert [f"np-{t.ref.run_id}-{t.ref.seq}-{t.mac}" for t in report.returned_tokens] == [TOKEN]
    assert all(TEST_KEY.verify(t) for t in report.returned_tokens)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_looks_like_a_bounce_whatever_the_envelope_sender(name: str) -> None:
    assert looks_like_bounce("<>", fixture(name))
    assert looks_like_bounce("", fixture(name))
    assert looks_like_bounce("MAILER-DAEMON@gateway.example", fixture(name))


def _notification() -> bytes:
    return compose(TOKEN, "0123456789", 7, 10, "probe.invalid", formatdate(time.time()))


@pytest.mark.parametrize("mail_from", ["probe-bounce+0123456789@probe.invalid", "", "<>"])
def test_a_notification_is_never_a_bounce_even_with_a_null_sender(mail_from: str) -> None:
    # A gateway may send a notification on with a null sender; its shape still says notification.
    assert not looks_like_bounce(mail_from, _notification())


def test_a_notification_read_as_a_bounce_has_no_recipient_report() -> None:
    report = read_bounce(_notification())
    assert report.recipients == () and report.format == "unknown"


def test_tokens_come_from_the_returned_message_and_the_quoted_recipient_not_the_prose() -> None:
    # The human-readable part names a token that neither the report nor the original carries.
    other = TEST_KEY.token("0123456789", 8)
    content = fixture("postfix-failed.eml").replace(
        b"I'm sorry to have to inform you", f"About {other}: I'm sorry".encode()
    )
    assert [t.ref.seq for t in read_bounce(content).returned_tokens] == [7]


def test_delivery_status_served_as_text_is_read() -> None:
    content = fixture("postfix-failed.eml").replace(
        b"Content-Type: message/delivery-status", b"Content-Type: text/plain"
    )
    report = read_bounce(content)
    assert report.format == "rfc3464"
    assert [(r.action, r.status) for r in report.recipients] == [("failed", "5.7.1")]


def test_a_diagnostic_is_printable_and_capped() -> None:
    hostile = b"smtp; 550 5.7.1 \x1b[2J" + b"x" * 5000
    content = fixture("postfix-failed.eml").replace(
        b"Diagnostic-Code: smtp; 550 5.7.1", b"Diagnostic-Code: " + hostile
    )
    diagnostic = read_bounce(content).recipients[0].diagnostic
    assert "\x1b" not in diagnostic and "\\x1b" in diagnostic
    assert len(diagnostic) <= MAX_DIAGNOSTIC


def test_a_huge_message_is_read_within_bounds() -> None:
    beyond = TEST_KEY.token("feedfeedfe", 9).encode()  # past the cap: never read
    huge = fixture("postfix-failed.eml") + b"Correlation token: filler\r\n" * 2_000_000 + beyond
    assert len(huge) > 100 * MAX_BYTES
    report = read_bounce(huge)
    assert looks_like_bounce("<>", huge)
    assert [(r.action, r.status) for r in report.recipients] == [("failed", "5.7.1")]
    assert all(t.ref.run_id != "feedfeedfe" for t in report.returned_tokens)


def _mutations() -> st.SearchStrategy[bytes]:
    """A fixture cut, spliced with random bytes, or with a byte changed."""
    names = st.sampled_from(sorted(EXPECTED))

    def mutate(name: str, cut: int, noise: bytes, at: int) -> bytes:
        content = fixture(name)
        at %= len(content) + 1
        return (content[:at] + noise + content[at:])[: cut % (len(content) + 64) + 1]

    return st.builds(mutate, names, st.integers(0, 10**6), st.binary(max_size=64), st.integers())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=st.one_of(st.binary(max_size=4096), _mutations()), mail_from=st.text(max_size=40))
def test_read_bounce_and_looks_like_bounce_never_raise(content: bytes, mail_from: str) -> None:
    report = read_bounce(content)
    assert isinstance(report, BounceReport)
    assert isinstance(looks_like_bounce(mail_from, content), bool)
    for recipient in report.recipients:
        assert len(recipient.diagnostic) <= MAX_DIAGNOSTIC


def test_the_probe_s_own_sender_helper_is_not_mistaken_for_a_daemon() -> None:
    assert not looks_like_bounce(sender_for("0123456789", "probe.invalid"), _notification())
