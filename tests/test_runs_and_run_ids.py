"""Run history on the command line: `notifyprobe runs` lists runs as `verdict` tells them, a
unique run-id prefix works wherever a run id does, and a nagios check speaks on stdout only."""

from __future__ import annotations

import json
import socket

import pytest

from probe.ledger import Ledger
from probe.records import Run
from tests.ports import unused_port
from tests.test_cli import burst, lab_gateway, probe

pytestmark = pytest.mark.real  # real processes and sockets on loopback


def test_runs_lists_a_first_only_burst_series_as_one_outage_and_prefixes_find_runs(tmp_path):
    db = tmp_path / "l.db"
    sink = unused_port()
    with lab_gateway(sink, "first-only") as gateway:
        first = burst(gateway, sink, db, "--count", "5", "--settle", "1", "--json", "-")
        second = burst(gateway, sink, db, "--count", "5", "--settle", "1", "--format", "nagios")
    first_id = json.loads(first.stdout)["run_id"]
    assert second.returncode == 2 and second.stderr == ""
    status = second.stdout.splitlines()[0]
    assert status.startswith("NOTIFYPROBE CRITICAL - first_only: one notification delivered since")
    assert f"since {first_id} at" in status and "none since; no restart seen" in status

    listed = probe("runs", "--db", str(db))
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 2 and lines[1].startswith(first_id)
    assert f"first_only (since {first_id}; on its own none_delivered)" in lines[0]
    assert "1/5  first_only" in lines[1]
    rows = json.loads(probe("runs", "--db", str(db), "--limit", "1", "--json", "-").stdout)
    assert rows["schema_version"] == 1 and len(rows["runs"]) == 1
    assert rows["runs"][0]["outage_since"] == first_id
    assert (
        json.loads(probe("runs", "--db", str(db), "--target", "nope", "--json", "-").stdout)["runs"]
        == []
    )

    short = probe("verdict", first_id[:6], "--db", str(db))
    assert short.returncode == 2 and f"notifyprobe run {first_id}:" in short.stdout
    bundle = probe("evidence", first_id[:6], "--db", str(db), "--out", str(tmp_path / "c.zip"))
    assert bundle.returncode == 0, bundle.stderr


def test_an_ambiguous_prefix_is_one_usage_line_listing_the_candidates(tmp_path):
    db = tmp_path / "l.db"
    with Ledger(db) as ledger:
        for run_id in ("9685bb0001", "9685bb0002", "1234567890"):
            ledger.create_run(Run(run_id, "gw:25", "probe.invalid", 1, 1000.0))
    result = probe("verdict", "9685bb", "--db", str(db))
    assert result.returncode == 3 and result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "ambiguous" in result.stderr
    assert "9685bb0001" in result.stderr and "9685bb0002" in result.stderr
    missing = probe("verdict", "ffff", "--db", str(db))
    assert missing.returncode == 3 and "no run 'ffff'" in missing.stderr


def test_a_busy_sink_port_is_one_unknown_line_on_stdout_saying_what_to_do(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = burst(unused_port(), port, tmp_path / "l.db", "--format", "nagios")
    assert result.returncode == 3
    assert result.stderr == ""
    assert result.stdout.count("\n") == 1
    line = result.stdout.strip()
    assert line.startswith("NOTIFYPROBE UNKNOWN - ") and "in use" in line
    assert "--no-sink" in line and "notifyprobe sink --listen" in line
