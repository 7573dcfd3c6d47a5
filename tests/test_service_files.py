"""The shipped service and monitoring files work as written: the systemd units pass
`systemd-analyze verify` and agree on one install layout and user; the Nagios and Icinga
definitions pass their own checkers (`nagios4 -v`, `icinga2 daemon -C`) where installed, and
NOTIFYPROBE_REQUIRE_MONITORING=1 (CI) turns a missing checker into a failure; every Grafana
query names an exported series."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
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


# The monitoring tools live in /usr/sbin, which a non-root user's PATH may leave out.
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
REQUIRE_MONITORING = "NOTIFYPROBE_REQUIRE_MONITORING"


def monitoring_tool(name: str, package: str) -> str:
    """The tool's path; a skip without it, unless NOTIFYPROBE_REQUIRE_MONITORING=1 (CI, which
    installs it) makes that a failure: then a missing checker cannot pass for a verified file."""
    path = shutil.which(name, path=SBIN_PATH)
    if path is None:
        skip_unless_required(f"{name} not installed (apt {package})")
    return str(path)


def skip_unless_required(reason: str) -> None:
    if os.environ.get(REQUIRE_MONITORING) == "1":
        pytest.fail(f"{REQUIRE_MONITORING}=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture
def readable_dir() -> Iterator[Path]:
    """A directory every user can read. Started as root, nagios4 and icinga2 drop to their own
    user (nagios) before they read the object files, and pytest's tmp_path lies under a 0700
    directory of the user running the tests: there they fail with Permission denied."""
    path = Path(tempfile.mkdtemp(prefix="notifyprobe-monitoring-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def readable_file(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o644)
    return path


# What a Nagios install has around the example, reduced to what its service needs: a timeperiod,
# a contact (notified by a command that does nothing), the gateway host the example's
# placeholder names, and generic-service standing in for the template of Nagios's sample
# objects.
NAGIOS_SURROUNDINGS = """\
define timeperiod {
    timeperiod_name     24x7
    alias               all the time
    sunday              00:00-24:00
    monday              00:00-24:00
    tuesday             00:00-24:00
    wednesday           00:00-24:00
    thursday            00:00-24:00
    friday              00:00-24:00
    saturday            00:00-24:00
}

define command {
    command_name    notify-nobody
    command_line    /bin/true
}

define contact {
    contact_name                    monitoring-team
    service_notification_period     24x7
    host_notification_period        24x7
    service_notification_options    w,u,c,r
    host_notification_options       d,u,r
    service_notification_commands   notify-nobody
    host_notification_commands      notify-nobody
}

define service {
    name                    generic-service
    check_period            24x7
    notification_period     24x7
    notification_interval   60
    contacts                monitoring-team
    register                0
}

define host {
    host_name               gw.example.org
    address                 192.0.2.25
    max_check_attempts      3
    check_period            24x7
    notification_period     24x7
    notification_interval   60
    contacts                monitoring-team
}
"""


def test_the_nagios_definitions_pass_nagios4_verify(readable_dir):
    nagios4 = monitoring_tool("nagios4", "nagios4-core")
    # A main config of its own: the system's /etc/nagios4/nagios.cfg brings the sample objects
    # (their own localhost and generic-service) and paths only root or nagios may read.
    example = readable_file(readable_dir / "notifyprobe.cfg", (EXAMPLES / "nagios.cfg").read_text())
    surroundings = readable_file(readable_dir / "surroundings.cfg", NAGIOS_SURROUNDINGS)
    results = readable_dir / "checkresults"  # must be writable by the nagios user too
    results.mkdir(mode=0o1777)
    results.chmod(0o1777)
    main = readable_file(
        readable_dir / "nagios.cfg",
        f"cfg_file={surroundings}\ncfg_file={example}\ncheck_result_path={results}\n"
        "illegal_macro_output_chars=`~$&|'\"<>\n",  # Debian's value; unset, a warning
    )
    result = subprocess.run([nagios4, "-v", str(main)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout
    assert "Total Warnings: 0" in result.stdout, result.stdout
    assert re.search(r"Checked 1 services\.", result.stdout), result.stdout


# The gateway host the example's apply rule is for (checked by the ITL's dummy: the stock
# generic-host's hostalive needs the plugin ITL and constants.conf). The example's
# generic-service comes from Icinga's stock conf.d/templates.conf, which a copy into conf.d
# sits beside.
ICINGA_GATEWAY = """\
object Host "gw.example.org" {
  check_command = "dummy"
  address = "192.0.2.25"
  vars.notification_gateway = true
}
"""


def test_the_icinga2_definitions_pass_daemon_check(readable_dir):
    icinga2 = monitoring_tool("icinga2", "icinga2-bin")
    example = readable_file(
        readable_dir / "notifyprobe.conf", (EXAMPLES / "icinga2.conf").read_text()
    )
    gateway = readable_file(readable_dir / "gateway.conf", ICINGA_GATEWAY)
    conf = readable_file(
        readable_dir / "icinga2.conf",
        'include <itl>\ninclude "/etc/icinga2/conf.d/templates.conf"\n'
        f'include "{gateway}"\ninclude "{example}"\n',
    )
    result = subprocess.run(
        [icinga2, "daemon", "-C", "-c", str(conf)], capture_output=True, text=True, timeout=60
    )
    if "re-run this command as a privileged user" in result.stdout:
        skip_unless_required("icinga2 runs only as root or its own user")
    assert result.returncode == 0, result.stdout
    assert "Instantiated 1 Service." in result.stdout, result.stdout
    assert not re.search(r"\] (warning|critical)/", result.stdout), result.stdout


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
