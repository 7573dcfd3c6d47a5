"""The shipped service and monitoring files work as written: the systemd units pass
`systemd-analyze verify` and agree on one install layout and user; the Nagios and Icinga
definitions pass their own checkers where installed; every Grafana query names an exported
series."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from probe.monitor.metrics import Metrics, probe_exposition
from probe.verdict import Pattern, Severity, Verdict

pytestmark = pytest.mark.real  # real processes and sockets on loopback

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
UNITS = [EXAMPLES / "notifyprobe-watch.service", EXAMPLES / "notifyprobe-sink.service"]
PREFIX = "/opt/notifyprobe/bin/"  # the install layout README.md creates
README = (ROOT / "README.md").read_text()


def keys(unit: Path, key: str) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", unit.read_text(), re.MULTILINE)


def test_the_units_share_one_install_layout_one_static_user_and_the_readme_creates_it():
    for unit in UNITS:
        assert keys(unit, "User") == ["notifyprobe"] and keys(unit, "DynamicUser") == []
        assert keys(unit, "StateDirectory") == ["notifyprobe"]
        for line in keys(unit, "ExecStart") + keys(unit, "ExecStartPre"):
            assert line.startswith(PREFIX + "notifyprobe "), line
        (doc,) = keys(unit, "Documentation")
        page = doc.removeprefix("file:///usr/share/doc/notifyprobe/")
        assert (ROOT / "docs" / page).is_file(), doc  # installed there by README's commands
    assert "python3 -m venv /opt/notifyprobe" in README
    assert "/opt/notifyprobe/bin/pip install ." in README
    assert "cp -r docs/. /usr/share/doc/notifyprobe/" in README
    assert "useradd --system" in README


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_the_units_pass_systemd_analyze_verify(tmp_path):
    # The executable must exist: /opt/notifyprobe/bin is this checkout's .venv/bin here.
    venv_bin = str(Path(sys.executable).parent) + "/"
    for unit in UNITS:
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace(PREFIX, venv_bin))
        result = subprocess.run(
            ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
        )
        problems = [line for line in result.stderr.splitlines() if unit.name in line]
        assert result.returncode == 0 and not problems, result.stderr


def test_the_nagios_command_line_is_a_valid_check():
    text = (EXAMPLES / "nagios.cfg").read_text()
    (line,) = re.findall(r"^\s*command_line\s+(.+)$", text, re.MULTILINE)
    argv = shlex.split(line.replace("$HOSTADDRESS$", "gw.example.org").replace("$ARG1$", "25"))
    assert argv[0] == PREFIX + "notifyprobe"
    assert {"--no-sink", "--db", "--format"} <= set(argv)
    from probe.cli import build_parser

    build_parser(argv[1:]).parse_args(argv[1:])
    assert re.search(r"check_command\s+check_notifyprobe!25", text)


@pytest.mark.skipif(not shutil.which("nagios4"), reason="nagios4 not installed (apt nagios4)")
def test_the_nagios_definitions_pass_nagios4_verify(tmp_path):
    main = Path("/etc/nagios4/nagios.cfg").read_text()
    config = tmp_path / "nagios.cfg"
    config.write_text(main + f"\ncfg_file={EXAMPLES / 'nagios.cfg'}\n")
    result = subprocess.run(["nagios4", "-v", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.skipif(not shutil.which("icinga2"), reason="icinga2 not installed (apt icinga2)")
def test_the_icinga2_definitions_pass_daemon_check(tmp_path):
    conf = tmp_path / "icinga2.conf"
    conf.write_text(
        'include <itl>\ninclude "/etc/icinga2/conf.d/templates.conf"\n'
        f'include "{EXAMPLES / "icinga2.conf"}"\n'
    )
    result = subprocess.run(
        ["icinga2", "daemon", "-C", "-c", str(conf)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def exported_names() -> set[str]:
    metrics = Metrics()
    metrics.add_targets([("gw", 60.0)], started_at=0.0)
    verdict = Verdict(Pattern.HEALTHY, Severity.OK, "all delivered", sent=1, delivered=1)
    text = (metrics.exposition() + probe_exposition(verdict, 1.0, 0.0, False)).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1].isalpha()}


def test_every_grafana_query_names_an_exported_series():
    dashboard = json.loads((EXAMPLES / "grafana-dashboard.json").read_text())
    exported = exported_names()
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    assert queries
    wanted = {
        "notifyprobe_verdict",
        "notifyprobe_last_run_duration_seconds",
        "notifyprobe_verdicts_corrected_total",
        "notifyprobe_unreadable_processes",
        "notifyprobe_sink_up",
    }
    named: set[str] = set()
    for query in queries:
        names = set(re.findall(r"\b(notifyprobe_[a-z_]+|probe_[a-z_]+)", query))
        assert names, query
        named |= names
    assert named <= exported, named - exported
    assert wanted <= named
