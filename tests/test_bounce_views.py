"""A bounce told the same way in every view: the terminal report, JSON, the nagios long output,
`verdict RUN` and the evidence bundle (report.html, report.json and the returned messages
themselves, redacted). The gateway is a real lab gateway process whose later notifications come
back as RFC 3464 bounces, as a gateway does when its next hop refuses them."""

from __future__ import annotations

import json
import zipfile

import pytest

from probe.cli import main
from tests.ports import unused_port
from tests.test_cli import service

pytestmark = pytest.mark.real

REASON = "550 5.7.1 Recipient address rejected"


def test_a_bounce_reads_the_same_in_text_json_nagios_verdict_and_the_bundle(tmp_path, capsys):
    db, sink, bundle = tmp_path / "l.db", unused_port(), tmp_path / "case.zip"
    relay = ["--relay", f"127.0.0.1:{sink}"]
    with service(
        "lab", "gateway", "--listen", "127.0.0.1:0", *relay, "--mode", "first-only:bounce"
    ) as gateway:
        where = [
            "--gateway",
            f"127.0.0.1:{gateway}",
            "--sink",
            f"127.0.0.1:{sink}",
            "--db",
            str(db),
            "--count",
            "4",
        ]
        assert main(["burst", *where, "--evidence", str(bundle)]) == 2
        text = capsys.readouterr().out
        assert main(["burst", *where, "--format", "nagios"]) == 2
        nagios = capsys.readouterr().out.splitlines()
    assert "CRITICAL  first_only" in text and "bounced 3" in text
    assert f"seq 2-4: accepted, then bounced: failed 5.7.1 (smtp; {REASON}" in text
    # the gateway restarted nothing: every notification of the second run came back, and the
    # run continues the first one's outage (told as first_only, the bounces in its long output)
    assert nagios[0].startswith("NOTIFYPROBE CRITICAL - first_only: one notification delivered")
    assert any(line.startswith("seq 1-4: failed 5.7.1") for line in nagios[1:])
    # the gateway relayed every lost one: its next hop refused them, no stale module is offered
    onward = "every lost notification ({}) was accepted by the gateway and refused further on, by "
    assert f"Refused beyond the gateway: {onward.format(3)}next-hop.lab-gateway.invalid" in text
    assert "[000]" not in text and not any("[000]" in line for line in nagios)
    assert f"refused beyond the gateway: {onward.format(4)}" in "\n".join(nagios)

    with zipfile.ZipFile(bundle) as archive:
        names = archive.namelist()
        page = archive.read("report.html").decode("utf-8")
        kept = json.loads(archive.read("report.json"))
        returned = [archive.read(n) for n in names if n.startswith("bounces/")]
    assert len(returned) == 3 and all(b"message/delivery-status" in r for r in returned)
    assert "<span>bounced <b>3</b></span>" in page and REASON in page
    assert '<p id="next-hop"><b>Refused beyond the gateway:</b> every lost notification' in page
    assert kept["possible_known_issues"] == [] and kept["refused_beyond_gateway"]["refused"] == 3
    [second] = [n for n in kept["notifications"] if n["seq"] == 2]
    assert second["outcome"] == "bounced" and second["copies"] == 0
    assert (second["bounce"]["status"], second["bounce"]["named_by"]) == ("5.7.1", "verp")

    assert main(["verdict", kept["run_id"], "--db", str(db), "--json", "-"]) == 2
    again = json.loads(capsys.readouterr().out)
    assert again["verdict"]["pattern"] == "first_only" and again["verdict"]["bounced"] == 3
    assert again["possible_known_issues"] == [] and again["refused_beyond_gateway"]["all_lost"]
