"""Redaction: secrets gone in every form, names and addresses replaced the same way everywhere."""

from __future__ import annotations

import base64
import json

import pytest

from probe.cli.evidence_options import config_secrets
from probe.reporting.redact import (
    REDACTED,
    Redactor,
    clean_argv,
    secret_forms,
    secret_values_in_argv,
)

SECRET = 'pa$$&"w<0>rd 9'


def test_secret_is_removed_raw_and_in_json_html_url_and_base64_forms() -> None:
    r = Redactor([SECRET])
    for form in secret_forms(SECRET):
        assert form not in r.redact(f"before {form} after"), form
    text = json.dumps({"line": f"login with {SECRET}"})
    assert SECRET not in r.redact(text) and json.dumps(SECRET)[1:-1] not in r.redact(text)
    assert r.secrets_removed >= len(secret_forms(SECRET))


def test_auth_arguments_and_url_passwords_are_always_removed() -> None:
    blob = base64.b64encode(b"\0ops\0hunter2").decode()
    r = Redactor()
    assert r.redact(f"C: AUTH PLAIN {blob}") == f"C: AUTH PLAIN {REDACTED}"
    assert r.redact("smtp://ops:hunter2@relay.example:587") == (
        f"smtp://ops:{REDACTED}@relay.example:587"
    )


def test_command_line_hides_secret_option_values_but_keeps_where_they_come_from() -> None:
    argv = [
        "burst",
        "--password",
        "hunter2",
        "--smtp-secret=s3",
        "--password-env",
        "SMTP_PW",
        "--api-token",
        "t0k",
        "smtp://u:p4ss@gw:25",
        "--count",
        "4",
    ]
    cleaned = clean_argv(argv)
    assert cleaned == [
        "burst",
        "--password",
        REDACTED,
        f"--smtp-secret={REDACTED}",
        "--password-env",
        "SMTP_PW",
        "--api-token",
        REDACTED,
        f"smtp://u:{REDACTED}@gw:25",
        "--count",
        "4",
    ]
    assert secret_values_in_argv(argv) == {"hunter2", "s3", "t0k", "p4ss"}


def test_same_name_gets_the_same_placeholder_in_every_file() -> None:
    r = Redactor(kinds=["hosts", "emails", "ips"])
    r.add_host("gw.corp.example")
    r.add_host("corp.example")
    r.add_ip("10.20.30.40")
    a = r.redact("banner 220 gw.corp.example ESMTP from 10.20.30.40:25 <ops@corp.example>")
    b = r.redact('{"gateway": "GW.corp.example", "peer": "10.20.30.40", "to": "ops@corp.example"}')
    mapping = r.mapping()
    gw, domain, ip = mapping.hosts["gw.corp.example"], mapping.hosts["corp.example"], "ip-1"
    assert a == f"banner 220 {gw} ESMTP from {ip}:25 <user-1@{domain}>"
    assert b == f'{{"gateway": "{gw}", "peer": "{ip}", "to": "user-1@{domain}"}}'
    for original in mapping.originals():
        assert original.lower() not in (a + b).lower()


def test_addresses_are_found_by_pattern_but_versions_and_loopback_are_kept() -> None:
    r = Redactor(kinds=["ips"])
    text = r.redact(
        "loaded 1.0.0.9, installed 2.0.0.4; peer 198.51.100.7:2525, [2001:db8::5]:25, "
        "sink 127.0.0.1:2525, ::1, at 12:30:45"
    )
    assert text == (
        "loaded 1.0.0.9, installed 2.0.0.4; peer ip-2:2525, [ip-1]:25, "
        "sink 127.0.0.1:2525, ::1, at 12:30:45"
    )


def test_kinds_not_asked_for_are_left_alone() -> None:
    r = Redactor(["hunter2"])
    r.add_host("gw.corp.example")
    text = "gw.corp.example 10.1.2.3:25 ops@corp.example hunter2"
    assert r.redact(text) == f"gw.corp.example 10.1.2.3:25 ops@corp.example {REDACTED}"
    assert r.mapping().originals() == []


def test_data_is_redacted_in_keys_and_values() -> None:
    r = Redactor(["hunter2"], kinds=["hosts"])
    r.add_host("gw.corp.example")
    assert r.redact_data({"gw.corp.example": ["hunter2", 3, None]}) == {
        "host-1": [REDACTED, 3, None]
    }


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="phones"):
        Redactor(kinds=["phones"])


def test_an_auth_user_name_becomes_an_account_placeholder_everywhere() -> None:
    r = Redactor(kinds=["users"])
    r.add_user("svc-notify")
    assert (
        r.redact("--user svc-notify; auth_user: SVC-NOTIFY")
        == "--user account-1; auth_user: account-1"
    )
    assert r.redact("svc-notifyer") == "svc-notifyer"  # a whole name only
    assert r.mapping().to_dict()["users"] == {"svc-notify": "account-1"}
    assert "svc-notify" in r.mapping().originals()


def test_config_passwords_literal_env_and_file_are_secrets(tmp_path, monkeypatch) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    monkeypatch.setenv("WATCH_PW", "from-env")
    config = tmp_path / "watch.toml"
    config.write_text(
        '[[target]]\nname = "gw"\npassword = "literal"\n'
        f'[[target]]\nname = "b"\npassword_env = "WATCH_PW"\n'
        f'[[target]]\nname = "c"\npassword_file = "{tmp_path / "pw"}"\n'
    )
    assert {"literal", "from-env", "from-file"} <= config_secrets(config)


@pytest.mark.parametrize("user", ["", "o", "op", "ops", "operator"])
def test_a_password_inside_any_base64_blob_is_found_at_every_alignment(user: str) -> None:
    """AUTH PLAIN `\\0user\\0password` echoed outside the AUTH step: the password's bytes sit at
    any offset of the encoded blob, so no fixed base64 form of it would match."""
    blob = base64.b64encode(f"\0{user}\0{SECRET}".encode()).decode()
    login = base64.b64encode(SECRET.encode()).decode()
    r = Redactor([SECRET])
    cleaned = r.redact(f"250 2.1.0 you said {blob} and {login} ok")
    assert blob not in cleaned and login not in cleaned
    assert cleaned.startswith("250 2.1.0 you said ") and cleaned.endswith(" ok")


def test_hosts_redaction_covers_the_name_in_an_ehlo_reply_line() -> None:
    r = Redactor(kinds=["hosts"])
    r.add_host("gw01.corp.example")
    text = "S: 250-gw01.corp.example Hello\nS: 220 gw01.corp.example ESMTP\nmy-gw01.corp.example"
    cleaned = r.redact(text)
    assert "S: 250-host-1 Hello" in cleaned and "S: 220 host-1 ESMTP" in cleaned
    assert cleaned.endswith("my-gw01.corp.example")  # another name that merely ends like it
