"""Submission security with real certificates made at test time (trustme): STARTTLS, implicit
TLS, verification against a CA, the loud --insecure, AUTH, and secrets that never leak."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import time
from contextlib import asynccontextmanager
from pathlib import Path

import aiosmtplib
import pytest
import trustme
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from probe.correlation import recipient_for
from probe.delivery.burst import Sender
from probe.delivery.credentials import Secret, password_from_env, password_from_file
from probe.delivery.run import ProbeSettings, run_probe
from probe.delivery.settings import BurstSettings
from probe.delivery.settle import Patience
from probe.delivery.sink import Sink
from probe.delivery.tls import ClientSecurity, server_context
from probe.errors import UsageError
from probe.ledger import Ledger, LedgerWriter
from probe.records import Endpoint, ErrorKind, Run
from probe.verdict import Pattern
from tests.cli import run_cli
from tests.conftest import TEST_KEY, with_test_key
from tests.known import submitted
from tests.ports import unused_port

DOMAIN = "probe.invalid"
RUN = "0badc0ffee"
USER = "notify-svc"
PASSWORD = "S3cr3t-pässwörd-7f1c"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A CA with a server certificate for 127.0.0.1, and an unrelated CA."""
    base = tmp_path_factory.mktemp("pki")
    ca, stranger = trustme.CA(), trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = {
        "ca": base / "ca.pem",
        "stranger": base / "stranger.pem",
        "chain": base / "chain.pem",
        "key": base / "key.pem",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    stranger.cert_pem.write_to_path(str(paths["stranger"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    paths["chain"].write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    return paths


@asynccontextmanager
async def tls_sink(tmp_path: Path, pki: dict[str, Path], *, implicit: bool = False):
    """A sink offering STARTTLS (or speaking implicit TLS) with the test CA's certificate."""
    with Ledger(with_test_key(tmp_path / "tls.sqlite3")) as ledger:
        ledger.create_run(Run(RUN, "gw:25", DOMAIN, count=5, started_at=time.time()))
        writer = LedgerWriter(ledger)
        context = server_context(pki["chain"], pki["key"])
        sink = Sink(
            writer,
            host="127.0.0.1",
            port=0,
            domain=DOMAIN,
            tls_context=None if implicit else context,
        )
        if implicit:
            loop = asyncio.get_running_loop()
            sink._server = await loop.create_server(sink._protocol, "127.0.0.1", 0, ssl=context)
            sink.port = sink._server.sockets[0].getsockname()[1]
        else:
            await sink.start()
        try:
            yield sink, ledger
        finally:
            await sink.stop()
            await writer.close()


async def submit(port: int, security: ClientSecurity, seq: int = 1):
    sender = Sender(
        Endpoint("127.0.0.1", port), timeout=5, per_session=1, helo=None, security=security
    )
    token = TEST_KEY.token(RUN, seq)
    data = f"Subject: {token}\r\n\r\nbody\r\n".encode()
    return await sender.submit("ops@example.org", recipient_for(token, DOMAIN), data)


@pytest.mark.real
async def test_starttls_with_the_right_ca_delivers_and_the_transcript_shows_it(tmp_path, pki):
    async with tls_sink(tmp_path, pki) as (sink, ledger):
        result = await submit(sink.port, ClientSecurity(tls="starttls", ca_file=pki["ca"]))
        assert result.accepted, result.describe()
        commands = [step.command for step in result.steps]
        assert commands[:4] == ["connect", "EHLO", "STARTTLS", "EHLO"]
        assert ledger.delivery_count(RUN) == 1


@pytest.mark.real
async def test_starttls_with_an_unknown_ca_fails_as_tls(tmp_path, pki):
    async with tls_sink(tmp_path, pki) as (sink, ledger):
        result = await submit(sink.port, ClientSecurity(tls="starttls", ca_file=pki["stranger"]))
        assert (result.stage, result.error_kind) == ("starttls", ErrorKind.TLS)
        assert "certificate" in (result.error or "").lower()
        assert ledger.delivery_count(RUN) == 0


@pytest.mark.real
async def test_starttls_demanded_but_not_offered_fails_as_tls(tmp_path, pki):
    with Ledger(with_test_key(tmp_path / "plain.sqlite3")) as ledger:
        writer = LedgerWriter(ledger)
        async with Sink(writer, host="127.0.0.1", port=0, domain=DOMAIN) as sink:
            result = await submit(sink.port, ClientSecurity(tls="starttls", ca_file=pki["ca"]))
        await writer.close()
    assert (result.stage, result.error_kind) == ("starttls", ErrorKind.TLS)


@pytest.mark.real
async def test_implicit_tls_verifies_the_certificate(tmp_path, pki):
    async with tls_sink(tmp_path, pki, implicit=True) as (sink, ledger):
        good = await submit(sink.port, ClientSecurity(tls="implicit", ca_file=pki["ca"]), seq=1)
        bad = await submit(sink.port, ClientSecurity(tls="implicit", ca_file=pki["stranger"]), 2)
        insecure = await submit(sink.port, ClientSecurity(tls="implicit", insecure=True), seq=3)
        assert ledger.delivery_count(RUN) == 2
    assert good.accepted and good.steps[0].command == "connect (implicit TLS)"
    assert (bad.stage, bad.error_kind) == ("connect", ErrorKind.TLS)
    assert insecure.accepted


@pytest.mark.real
async def test_tls_failure_on_every_notification_is_judged_unreachable_naming_tls(tmp_path, pki):
    async with tls_sink(tmp_path, pki) as (sink, _):
        with Ledger(tmp_path / "run.sqlite3") as ledger:
            settings = ProbeSettings(
                gateway=Endpoint("127.0.0.1", sink.port),
                sink=Endpoint("127.0.0.1", unused_port()),
                burst=BurstSettings(count=3),
                security=ClientSecurity(tls="starttls", ca_file=pki["stranger"]),
                patience=Patience(timeout_s=1.0),
            )
            outcome = await run_probe(ledger, settings)
    assert outcome.verdict.pattern is Pattern.GATEWAY_UNREACHABLE
    assert "tls" in outcome.verdict.summary


def test_security_options_that_contradict_each_other_are_usage_errors(pki):
    with pytest.raises(UsageError):
        ClientSecurity(tls="none", insecure=True)
    with pytest.raises(UsageError):
        ClientSecurity(tls="starttls", ca_file=pki["ca"], insecure=True)
    with pytest.raises(UsageError):
        ClientSecurity(user="u")  # no password
    with pytest.raises(UsageError, match="cannot load CA"):
        ClientSecurity(tls="starttls", ca_file=pki["key"]).context()


def test_secret_never_prints_itself():
    secret = Secret(PASSWORD)
    assert (
        PASSWORD
        not in f"{secret} {secret!r} {[secret]} {ClientSecurity(user='u', password=secret)}"
    )
    assert secret.reveal() == PASSWORD


def test_password_comes_from_env_or_the_first_line_of_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("NP_TEST_PW", PASSWORD)
    assert password_from_env("NP_TEST_PW").reveal() == PASSWORD
    with pytest.raises(UsageError, match="not set"):
        password_from_env("NP_TEST_PW_MISSING")
    path = tmp_path / "pw"
    path.write_text(PASSWORD + "\nignored\n", encoding="utf-8")
    assert password_from_file(path).reveal() == PASSWORD
    path.write_text("", encoding="utf-8")
    with pytest.raises(UsageError, match="empty"):
        password_from_file(path)


# -- AUTH through a gateway that demands it, via the real command line ------------------------


class AuthGateway:
    """A gateway that requires STARTTLS + AUTH, then relays to the probe's sink."""

    def __init__(self, relay_port: int):
        self.relay_port = relay_port
        self.logins: list[tuple[str, bool]] = []

    def authenticator(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        ok = auth_data.login.decode() == USER and auth_data.password.decode() == PASSWORD
        self.logins.append((mechanism, ok))
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd replies 535

    async def handle_DATA(self, server, session, envelope) -> str:
        await aiosmtplib.send(
            envelope.original_content,
            sender=envelope.mail_from,
            recipients=envelope.rcpt_tos,
            hostname="127.0.0.1",
            port=self.relay_port,
            timeout=5,
        )
        return "250 2.0.0 Relayed"


@asynccontextmanager
async def auth_gateway(pki: dict[str, Path], relay_port: int):
    gateway = AuthGateway(relay_port)
    context = server_context(pki["chain"], pki["key"])
    factory = lambda: SMTP(  # noqa: E731
        gateway,
        tls_context=context,
        require_starttls=True,
        auth_required=True,
        authenticator=gateway.authenticator,
        hostname="auth-gateway",
    )
    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    try:
        yield gateway, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def probe_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """Run `notifyprobe` while this loop keeps serving the in-process gateway."""
    done = await asyncio.to_thread(
        run_cli, *args, env={**os.environ, **env}, timeout=60, text=False
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def leaked(blob: bytes) -> list[str]:
    forms = {
        "password": PASSWORD.encode(),
        "plain": base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()),
        "login": base64.b64encode(PASSWORD.encode()),
    }
    return [name for name, form in forms.items() if form in blob]


@pytest.mark.real
@pytest.mark.parametrize("right_password", [True, False])
async def test_auth_password_never_reaches_ledger_json_or_logs(tmp_path, pki, right_password):
    sink_port = unused_port()
    db = tmp_path / "auth.sqlite3"
    secret_env = {"NP_GATEWAY_PW": PASSWORD if right_password else PASSWORD + "-wrong"}
    async with auth_gateway(pki, sink_port) as (gateway, port):
        code, out, err = await probe_cli(
            "burst",
            "--gateway",
            f"127.0.0.1:{port}",
            "--sink",
            f"127.0.0.1:{sink_port}",
            "--count",
            "3",
            "--tls",
            "starttls",
            "--ca-file",
            str(pki["ca"]),
            "--user",
            USER,
            "--password-env",
            "NP_GATEWAY_PW",
            "--db",
            str(db),
            "--json",
            "-",
            "--log-level",
            "debug",
            "--timeout",
            "2",
            env=secret_env,
        )
    report = json.loads(out)
    if right_password:
        assert code == 0, err
        assert report["verdict"]["pattern"] == "healthy"
        assert gateway.logins and all(ok for _, ok in gateway.logins)
    else:
        assert report["verdict"]["pattern"] == "all_refused"
        assert report["notifications"][0]["submit"].get("code") == 535, report["notifications"][0]
    assert report["security"] == {
        "tls": "starttls",
        "ca_file": str(pki["ca"]),
        "insecure": False,
        "auth_user": USER,
    }
    with Ledger(db) as ledger:
        transcript = submitted(ledger.load(report["run_id"]).notifications[1]).steps
    assert "AUTH [redacted]" in [step.command for step in transcript]
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith(db.name))
    wrong = (PASSWORD + "-wrong").encode()
    for name, blob in {"ledger": stored, "stdout": out.encode(), "stderr": err.encode()}.items():
        assert leaked(blob) == [], f"{name} leaks {leaked(blob)}"
        assert wrong not in blob, name


@pytest.mark.real
async def test_insecure_is_reported_loudly_in_text_json_and_stderr(tmp_path, pki):
    sink_port = unused_port()
    async with auth_gateway(pki, sink_port) as (_, port):
        code, out, err = await probe_cli(
            "burst",
            "--gateway",
            f"127.0.0.1:{port}",
            "--sink",
            f"127.0.0.1:{sink_port}",
            "--count",
            "2",
            "--tls",
            "starttls",
            "--insecure",
            "--user",
            USER,
            "--password-env",
            "NP_GATEWAY_PW",
            "--db",
            str(tmp_path / "i.db"),
            "--timeout",
            "2",
            env={"NP_GATEWAY_PW": PASSWORD},
        )
    assert code == 0, err
    assert "WARNING: TLS certificate verification is OFF" in err
    assert "WARNING: TLS certificate verification is OFF" in out
    code, out, _ = await probe_cli(
        "verdict", "--last", "--db", str(tmp_path / "i.db"), "--json", "-", env={}
    )
    assert json.loads(out)["warnings"] == [
        "TLS certificate verification is OFF (--insecure): the gateway is not authenticated"
    ]


@pytest.mark.real
async def test_password_on_a_missing_env_var_is_a_clear_exit_3(tmp_path):
    code, _, err = await probe_cli(
        "burst",
        "--gateway",
        "127.0.0.1:1",
        "--user",
        USER,
        "--password-env",
        "NP_NOT_SET_X",
        "--db",
        str(tmp_path / "x.db"),
        env={},
    )
    assert code == 3 and "NP_NOT_SET_X" in err and len(err.strip().splitlines()) == 1


def test_server_context_with_a_mismatched_key_is_a_usage_error(pki):
    with pytest.raises(UsageError, match="cannot load TLS certificate"):
        server_context(pki["ca"], pki["key"])
    assert isinstance(server_context(pki["chain"], pki["key"]), ssl.SSLContext)
