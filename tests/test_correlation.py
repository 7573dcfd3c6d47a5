"""The token must be found in whatever part of the message survived the gateway."""

from __future__ import annotations

import base64
import quopri
from email.header import Header

from hypothesis import given
from hypothesis import strategies as st

from probe.correlation import (
    FoundToken,
    TokenKey,
    TokenRef,
    find_tokens,
    locate_tokens,
    new_run_id,
    recipient_for,
    split_address,
)
from probe.delivery.burst import compose

RUN = "0123456789"
KEY = TokenKey(b"k" * 32)
TOKEN = KEY.token(RUN, 7)


def refs(found: list[FoundToken]) -> list[TokenRef]:
    return [f.ref for f in found]


def located(rcpts: list[str], raw: bytes) -> list[tuple[TokenRef, str]]:
    return [(f.ref, where) for f, where in locate_tokens(rcpts, raw)]


def message(headers: str, body: bytes) -> bytes:
    return headers.replace("\n", "\r\n").encode() + b"\r\n" + body


def test_token_round_trips_through_its_text_form():
    run_id = new_run_id()
    (found,) = find_tokens(KEY.token(run_id, 42))
    assert found.ref == TokenRef(run_id, 42) and KEY.verify(found)


def test_token_is_found_even_when_a_template_glues_it_to_text():
    assert refs(find_tokens(f"Ref:{TOKEN}.")) == [TokenRef(RUN, 7)]
    assert refs(find_tokens(f"{TOKEN}abc")) == [TokenRef(RUN, 7)]


def test_token_with_a_short_run_id_or_no_mac_is_not_a_token():
    assert find_tokens("np-012345678-1-abcdefgh") == []
    assert find_tokens(f"np-{RUN}-1") == []


def test_token_in_upper_case_is_still_recognised_and_verified():
    (found,) = find_tokens(TOKEN.upper())
    assert found.ref == TokenRef(RUN, 7) and KEY.verify(found)


def test_a_mac_made_with_another_key_or_for_another_notification_does_not_verify():
    other = TokenKey(b"o" * 32)
    (forged,) = find_tokens(other.token(RUN, 7))
    (moved,) = find_tokens(TOKEN.replace("-7-", "-8-"))
    assert not KEY.verify(forged) and not KEY.verify(moved)


def test_the_key_is_never_shown_in_its_repr():
    assert "k" * 16 not in repr(KEY)


def test_envelope_recipient_wins_and_is_enough():
    found = located([recipient_for(TOKEN, "probe.invalid")], b"garbage")
    assert found == [(TokenRef(RUN, 7), "envelope")]


def test_header_token_found_when_envelope_was_rewritten():
    raw = message(f"Subject: hi\nX-Probe-Token: {TOKEN}\n", b"body\r\n")
    found = located(["notifications@probe.invalid"], raw)
    assert found == [(TokenRef(RUN, 7), "header")]


def test_subject_token_survives_folding_and_encoded_words():
    encoded = Header(f"Réunion annulée — {TOKEN} — merci", "utf-8", maxlinelen=30).encode()
    assert "\n" in encoded  # really folded
    raw = message(f"Received: from a by b\nReceived: from c by d\nSubject: {encoded}\n", b"x\r\n")
    assert located([], raw) == [(TokenRef(RUN, 7), "subject")]


def test_body_token_survives_base64():
    body = base64.encodebytes(f"Template\nToken: {TOKEN}\n".encode())
    raw = message(
        "Subject: rebuilt\nMessage-ID: <other@gateway>\nContent-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: base64\n",
        body,
    )
    assert located([], raw) == [(TokenRef(RUN, 7), "body")]


def test_body_token_survives_quoted_printable_soft_breaks():
    text = f"{'x' * 70}{TOKEN} end".encode()
    body = quopri.encodestring(text)
    assert b"=\n" in body  # the token is split by a soft line break
    raw = message(
        "Subject: rebuilt\nContent-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n",
        body,
    )
    assert located([], raw) == [(TokenRef(RUN, 7), "body")]


def test_token_in_a_multipart_alternative_html_part_is_found():
    raw = message(
        'Subject: x\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary="b"\n',
        f"--b\r\nContent-Type: text/html\r\n\r\n<p>{TOKEN}</p>\r\n--b--\r\n".encode(),
    )
    assert located([], raw) == [(TokenRef(RUN, 7), "body")]


def test_message_without_token_yields_nothing():
    assert locate_tokens(["someone@probe.invalid"], message("Subject: hi\n", b"no\r\n")) == []


def test_broken_mime_falls_back_to_raw_bytes():
    raw = b"Content-Type: multipart/mixed; boundary=\r\n\r\n\x00\xff garbage " + TOKEN.encode()
    assert [f.ref for f, _ in locate_tokens([], raw)] == [TokenRef(RUN, 7)]


def test_composed_notification_carries_the_token_in_every_place():
    raw = compose(TOKEN, RUN, 7, 10, "probe.invalid", "Sat, 21 Nov 2026 10:00:00 +0000")
    headers, _, body = raw.partition(b"\r\n\r\n")
    assert headers.count(TOKEN.encode()) == 5  # From (VERP), To, Subject, Message-ID, X-Probe-Token
    assert TOKEN.encode() in body
    assert all(len(line) <= 78 for line in raw.split(b"\r\n"))


def test_split_address_lowercases_the_domain_only():
    assert split_address("<Probe+X@Probe.Invalid.>") == ("Probe+X", "probe.invalid")
    assert split_address("no-at-sign") == ("no-at-sign", "")


@given(st.text())
def test_locate_tokens_never_raises_on_arbitrary_input(text):
    locate_tokens([text], text.encode("utf-8", "surrogatepass"))


@given(st.integers(min_value=0, max_value=999_999), st.text(max_size=40), st.text(max_size=40))
def test_token_is_found_amid_arbitrary_text(seq, before, after):
    token = KEY.token(RUN, seq)
    found = find_tokens(f"{before} {token} {after}")
    assert TokenRef(RUN, seq) in refs(found)


@given(st.lists(st.text(max_size=80), max_size=4), st.binary(max_size=4000))
def test_locate_tokens_never_raises_on_arbitrary_bytes_and_recipients(rcpts, content):
    for found, where in locate_tokens(rcpts, content):
        assert isinstance(found.ref, TokenRef) and where in (
            "envelope",
            "header",
            "subject",
            "body",
            "raw",
        )


@given(st.binary(max_size=2000), st.binary(max_size=2000), st.integers(0, 999_999))
def test_token_in_raw_bytes_is_found_whatever_surrounds_it(before, after, seq):
    token = KEY.token(RUN, seq).encode()
    found = [f.ref for f, _ in locate_tokens([], before + b" " + token + b" " + after)]
    assert TokenRef(RUN, seq) in found


_PLACES = st.sampled_from(["header", "subject", "body-base64", "body-qp", "body-8bit", "html"])
_PRINTABLE = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=200
)  # what a valid message can carry in a header and a text part


@given(_PLACES, _PRINTABLE, st.integers(0, 999_999))
def test_token_is_found_in_any_place_of_a_valid_message(place, text, seq):
    from email.message import EmailMessage

    token = KEY.token(RUN, seq)
    msg = EmailMessage()
    msg["From"] = "gateway@example.org"
    msg["Subject"] = f"{text} {token} " if place == "subject" else "no token here"
    if place == "header":
        msg["X-Probe-Token"] = token
    body = f"{text}\n {token} \n{text}" if place != "header" and place != "subject" else text
    if place == "html":
        msg.set_content(f"<p>{body}</p>", subtype="html", charset="utf-8", cte="base64")
    else:
        cte = {"body-base64": "base64", "body-qp": "quoted-printable"}.get(place, "8bit")
        msg.set_content(body, charset="utf-8", cte=cte)
    found = [f.ref for f, _ in locate_tokens(["notifications@probe.invalid"], msg.as_bytes())]
    assert TokenRef(RUN, seq) in found
