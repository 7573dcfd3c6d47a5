"""Fail fast and say why: every way a run can fail has its own message and next step, through
real sockets and real processes: a sink that refuses the control message, a gateway that
refuses the password (AUTH 535), one with a certificate for another name, a name that does not
resolve, a port nobody listens on, a gateway that never greets. And with `--format nagios`,
every failure of the probe itself is one UNKNOWN line on stdout.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from tests.cli import run_cli
from tests.ports import unused_port
from tests.test_cli import ENV, lab_gateway, probe, service

pytestmark = pytest.mark.real

VENV_COMMAND = Path(sys.executable).with_name("notifyprobe")  # its process is named notifyprobe


class Accepting:
    async def handle_DATA(self, server, session, envelope) -> str:
        return "250 2.0.0 Queued"


@contextmanager
def smtp_server(**smtp: Any) -> Iterator[int]:
    """An aiosmtpd gateway in a thread of the test, with the given SMTP options."""
    controller = Controller(Accepting(), hostname="127.0.0.1", port=unused_port(), **smtp)
    controller.start()
    try:
        yield controller.port
    finally:
        controller.stop()


def burst_json(
    gateway: str, tmp_path: Path, *extra: str, env=None
) -> tuple[int, dict[str, Any], str]:
    result = run_cli(
        "burst",
        "--gateway",
        gateway,
        "--sink",
        f"127.0.0.1:{unused_port()}",
        "--db",
        str(tmp_path / "l.db"),
        "--count",
        "2",
        "--settle",
        "0.3",
        "--json",
        str(tmp_path / "r.json"),
        *extra,
        timeout=60,
        env={**ENV, **(env or {})},
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads((tmp_path / "r.json").read_text()), result.stdout


def advice(text: str) -> tuple[str, str]:
    meaning = next(line for line in text.splitlines() if line.startswith("  What it means:"))
    action = next(line for line in text.splitlines() if line.startswith("  What to do:"))
    return meaning, action


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_each_failure_kind_has_its_own_message_and_next_step(tmp_path):
    told: dict[str, tuple[str, str]] = {}

    def refuse(server, session, envelope, mechanism, auth_data) -> AuthResult:
        return AuthResult(success=False, handled=False)  # aiosmtpd answers 535 5.7.8

    with smtp_server(auth_required=True, auth_require_tls=False, authenticator=refuse) as port:
        code, report, text = burst_json(
            f"127.0.0.1:{port}",
            tmp_path / "auth",
            "--user",
            "ops",
            "--password-env",
            "GW_PASSWORD",
            env={"GW_PASSWORD": "wrong-one"},
        )
    assert (code, report["verdict"]["cause"]) == (2, "auth"), report["verdict"]
    assert report["notifications"][0]["submit"]["code"] == 535
    told["auth"] = advice(text)
    assert "credentials" in told["auth"][0] and "--password-env" in told["auth"][1]
    assert "relay" not in " ".join(told["auth"])

    ca = trustme.CA()
    other_name = ca.issue_cert("gateway.example")  # not the name the probe connects to
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    other_name.configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with smtp_server(tls_context=context, require_starttls=True) as port:
        code, report, text = burst_json(
            f"127.0.0.1:{port}", tmp_path / "tls", "--tls", "starttls", "--ca-file", str(ca_file)
        )
    assert (code, report["verdict"]["cause"]) == (2, "tls"), report["verdict"]
    assert report["notifications"][0]["submit"]["kind"] == "tls"
    told["tls"] = advice(text)
    assert "certificate" in told["tls"][0] and "--ca-file" in told["tls"][1]

    code, report, text = burst_json("gateway.invalid:25", tmp_path / "dns")
    assert (code, report["verdict"]["cause"]) == (2, "dns"), report["verdict"]
    assert report["notifications"][0]["submit"]["kind"] == "dns"
    told["dns"] = advice(text)
    assert "did not resolve" in told["dns"][0] and "getent hosts" in told["dns"][1]

    code, report, text = burst_json(f"127.0.0.1:{unused_port()}", tmp_path / "refused")
    assert (code, report["verdict"]["cause"]) == (2, "connection_refused"), report["verdict"]
    told["refused"] = advice(text)
    assert "listens" in told["refused"][1]

    with silent_server() as port:
        code, report, text = burst_json(
            f"127.0.0.1:{port}", tmp_path / "stall", "--step-timeout", "0.5"
        )
    assert (code, report["verdict"]["pattern"]) == (2, "gateway_stalled"), report["verdict"]
    told["stall"] = advice(text)

    meanings = [meaning for meaning, _ in told.values()]
    actions = [action for _, action in told.values()]
    assert len(set(meanings)) == len(set(actions)) == len(told), told


@contextmanager
def silent_server() -> Iterator[int]:
    """Takes every connection and never says a word: a hung gateway."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        listener.close()


def test_control_message_refused_by_the_sink_ends_the_run_at_once(tmp_path):
    db = tmp_path / "l.db"
    with service("sink", "--listen", "127.0.0.1:0", "--db", str(db), "--domain", "probe.test") as s:
        with lab_gateway(s, "healthy") as gateway:
            started = time.monotonic()
            result = probe(
                "burst",
                "--gateway",
                f"127.0.0.1:{gateway}",
                "--sink",
                f"127.0.0.1:{s}",
                "--no-sink",
                "--domain",
                "wrong.test",
                "--count",
                "3",
                "--db",
                str(db),
            )
            took = time.monotonic() - started
    assert result.returncode == 3, result.stderr
    assert took < 15, took  # not the 30 s settle window a gateway without history gets
    assert "UNKNOWN  inconclusive: the probe's own sink refused its control message" in (
        result.stdout
    )
    assert "550 5.7.1 Relaying denied: this sink accepts only @probe.test" in result.stdout
    assert "--domain" in advice(result.stdout)[1]


def test_unknown_service_is_a_one_line_error(tmp_path):
    result = probe(
        "burst",
        "--gateway",
        f"127.0.0.1:{unused_port()}",
        "--db",
        str(tmp_path / "l.db"),
        "--service",
        "no-such-gateway-svc",
    )
    assert result.returncode == 3
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("notifyprobe: error: unknown --service no-such-gateway-svc")
    assert not (tmp_path / "l.db").exists()  # stopped before anything was sent or recorded


@pytest.mark.skipif(not VENV_COMMAND.exists(), reason="needs the installed notifyprobe command")
def test_process_named_like_the_probe_never_matches_the_probe_itself(tmp_path):
    """`notifyprobe` runs as a process named notifyprobe, like a lab gateway started with it."""
    sink = unused_port()
    gateway = subprocess.Popen(
        [
            str(VENV_COMMAND),
            "lab",
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--relay",
            f"127.0.0.1:{sink}",
            "--mode",
            "healthy",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=ENV,
    )
    try:
        assert gateway.stderr is not None
        listening = re.search(r"listening on [\d.]+:(\d+)", gateway.stderr.readline())
        assert listening
        port = int(listening.group(1))
        assert psutil.Process(gateway.pid).name() == "notifyprobe"
        burst = subprocess.Popen(
            [
                str(VENV_COMMAND),
                "burst",
                "--gateway",
                f"127.0.0.1:{port}",
                "--sink",
                f"127.0.0.1:{sink}",
                "--count",
                "2",
                "--db",
                str(tmp_path / "l.db"),
                "--process",
                "notifyprobe",
                "--json",
                "-",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        out, err = burst.communicate(timeout=60)
    finally:
        gateway.terminate()
        gateway.wait(timeout=10)
    assert burst.returncode == 0, err
    pids = {p["pid"] for p in json.loads(out)["gateway_processes"]}
    assert gateway.pid in pids
    assert burst.pid not in pids


# -- monitoring output: one UNKNOWN line on stdout for every failure ---------------------------


def nagios(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=60, env={**ENV, **(env or {})})


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--gateway", "127.0.0.1:25", "--warning", "loss=lots"], "bad threshold 'loss=lots'"),
        ([], "the following arguments are required: --gateway"),
        (["--gateway", "127.0.0.1:25", "--count", "abc"], "not an integer"),
        (
            ["--gateway", "127.0.0.1:25", "--user", "ops", "--password-env", "NOPE_UNSET_VAR"],
            "NOPE_UNSET_VAR",
        ),
        (["--gateway", "127.0.0.1:25", "--service", "no-such-gateway-svc"], "unknown --service"),
        (["--gateway", "127.0.0.1:25", "--json", "-"], "both want stdout"),
    ],
)
def test_nagios_format_says_unknown_on_stdout_for_bad_arguments_and_config(tmp_path, args, says):
    result = nagios("burst", "--format", "nagios", "--db", str(tmp_path / "l.db"), *args)
    assert result.returncode == 3, result.stderr
    (line,) = result.stdout.splitlines()
    assert line.startswith("NOTIFYPROBE UNKNOWN - ") and says in line, line
    assert "|" not in line


def test_nagios_format_says_unknown_on_stdout_for_a_ledger_that_is_not_one(tmp_path):
    bad = tmp_path / "l.db"
    bad.write_bytes(b"not a database at all" * 100)
    result = nagios("burst", "--format=nagios", "--gateway", "127.0.0.1:25", "--db", str(bad))
    assert result.returncode == 3
    (line,) = result.stdout.splitlines()
    assert line.startswith("NOTIFYPROBE UNKNOWN - ") and str(bad) in line


def test_nagios_format_says_unknown_on_stdout_for_an_internal_error(tmp_path):
    """A bug of ours, injected into the real command: still one line, still UNKNOWN."""
    buggy = (
        "import sys, probe.cli.burst as b\n"
        "def run(args): raise ZeroDivisionError('injected')\n"
        "b.run = run\n"
        "from probe.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            buggy,
            "burst",
            "--format",
            "nagios",
            "--gateway",
            "127.0.0.1:25",
            "--db",
            str(tmp_path / "l.db"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert result.returncode == 3, result.stderr
    assert result.stdout == "NOTIFYPROBE UNKNOWN - internal error: ZeroDivisionError: injected\n"
    assert "Traceback" not in result.stderr
