"""A gateway that is the probe's own sink is refused before anything is sent, by every command:
`burst` (with its own sink or `--no-sink`, in text and nagios format), `postflight`, and `watch`
(`--check` and a real start). Exit 3, one line, never `healthy`, no run in the ledger."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest

from probe.cli import main
from probe.host import interface_addresses
from probe.ledger import Ledger
from tests.ports import unused_port
from tests.test_cli import lab_gateway


def no_runs(db: Path) -> bool:
    if not db.exists():
        return True
    with Ledger(db) as ledger:
        return ledger.run_ids() == []


def refused(capsys: pytest.CaptureFixture[str], argv: list[str], db: Path) -> tuple[str, str]:
    """Run the command in-process: exit 3, one line saying why, nothing recorded."""
    assert main(argv) == 3
    out, err = capsys.readouterr()
    assert "healthy" not in out + err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("notifyprobe: error: ") and "is the probe's own sink listener" in err
    assert no_runs(db)
    return out, err


def local_ipv4() -> str | None:
    """An address of one of this host's interfaces that is not loopback."""
    for text in interface_addresses():
        address = ipaddress.ip_address(text)
        if address.version == 4 and not address.is_loopback:
            return text
    return None


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_the_default_sink_address_as_gateway(tmp_path, capsys):
    db = tmp_path / "l.db"
    _, err = refused(capsys, ["burst", "--gateway", "127.0.0.1:2525", "--db", str(db)], db)
    assert "gateway 127.0.0.1:2525" in err and "(sink 127.0.0.1:2525)" in err


@pytest.mark.real
@pytest.mark.parametrize("own_sink", [[], ["--no-sink"]])
def test_localhost_names_the_sinks_loopback_listener(tmp_path, capsys, own_sink):
    db, port = tmp_path / "l.db", unused_port()
    refused(
        capsys,
        [
            "burst",
            "--gateway",
            f"localhost:{port}",
            "--sink",
            f"127.0.0.1:{port}",
            "--db",
            str(db),
            *own_sink,
        ],
        db,
    )


@pytest.mark.real
def test_a_wildcard_sink_and_a_gateway_on_a_local_interface(tmp_path, capsys):
    address = local_ipv4()
    if address is None:
        pytest.skip("no interface address besides loopback on this host")
    db, port = tmp_path / "l.db", unused_port()
    refused(
        capsys,
        [
            "burst",
            "--gateway",
            f"{address}:{port}",
            "--sink",
            f"0.0.0.0:{port}",
            "--allow-remote",
            "--allow-client",
            f"{address}/32",
            "--db",
            str(db),
        ],
        db,
    )


@pytest.mark.real
@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this host")
def test_ipv6_loopback(tmp_path, capsys):
    db, port = tmp_path / "l.db", unused_port()
    refused(
        capsys,
        ["burst", "--gateway", f"[::1]:{port}", "--sink", f"[::1]:{port}", "--db", str(db)],
        db,
    )
    refused(
        capsys,
        ["burst", "--gateway", f"[::1]:{port}", "--sink", f"[::]:{port}", "--db", str(db)],
        db,
    )


@pytest.mark.real
def test_nagios_format_says_unknown_in_its_one_status_line(tmp_path, capsys):
    db, port = tmp_path / "l.db", unused_port()
    argv = [
        "burst",
        "--gateway",
        f"localhost:{port}",
        "--sink",
        f"127.0.0.1:{port}",
        "--format",
        "nagios",
        "--db",
        str(db),
    ]
    assert main(argv) == 3
    out, err = capsys.readouterr()
    assert err == "" and no_runs(db)  # a plugin's error is its one status line, nowhere else
    assert out.splitlines() == [out.strip()]
    assert out.startswith("NOTIFYPROBE UNKNOWN - gateway localhost:")
    assert "own sink listener" in out


@pytest.mark.real
def test_postflight_refuses_before_any_check(tmp_path, capsys):
    db, port = tmp_path / "l.db", unused_port()
    refused(
        capsys,
        [
            "postflight",
            "--profile",
            "exchange-sp4",
            "--root",
            str(tmp_path),
            "--gateway",
            f"127.0.0.1:{port}",
            "--sink",
            f"127.0.0.1:{port}",
            "--db",
            str(db),
        ],
        db,
    )


def watch_config(tmp_path: Path, gateway: str, sink: str) -> Path:
    config = tmp_path / "watch.toml"
    config.write_text(
        f'sink = "{sink}"\nledger = "l.db"\n\n[[target]]\nname = "looped"\ngateway = "{gateway}"\n'
    )
    return config


@pytest.mark.real
def test_watch_refuses_a_target_that_is_its_own_sink(tmp_path, capsys):
    db, port = tmp_path / "l.db", unused_port()
    config = watch_config(tmp_path, f"localhost:{port}", f"127.0.0.1:{port}")
    _, err = refused(capsys, ["watch", "--config", str(config), "--check"], db)
    assert "target 'looped'" in err
    refused(capsys, ["watch", "--config", str(config), "--once"], db)  # the service itself


@pytest.mark.real
def test_a_gateway_on_another_port_is_probed(tmp_path, capsys):
    db, sink = tmp_path / "l.db", unused_port()
    with lab_gateway(sink, "healthy") as gateway:
        code = main(
            [
                "burst",
                "--gateway",
                f"localhost:{gateway}",
                "--sink",
                f"127.0.0.1:{sink}",
                "--count",
                "3",
                "--db",
                str(db),
            ]
        )
    out, _ = capsys.readouterr()
    assert code == 0 and "OK  healthy" in out
    config = watch_config(tmp_path, f"localhost:{gateway}", f"127.0.0.1:{sink}")
    assert main(["watch", "--config", str(config), "--check"]) == 0
