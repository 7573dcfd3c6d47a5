"""Every `--json` output validates against its schema in docs/schema/ (#23): the outputs of the
real commands, run in-process against lab gateways, temporary profile roots and recorded
inventories, never hand-written samples; and every enumeration a schema names is the set the
code defines, so the two cannot drift apart."""

from __future__ import annotations

import json
import os
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, get_args

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from fixtures.hold_module import held
from fixtures.make_pe import write_dll
from probe.cli import main
from probe.delivery.bounce import BounceFormat
from probe.delivery.tls import TLS_MODES
from probe.diagnosis import Confidence
from probe.history import FailedAs
from probe.host import ModuleState, Sight
from probe.host.platform.base import HowHeld
from probe.host.platform.linux import LinuxModules
from probe.host.platform.windows import WindowsModules
from probe.host.reboot import ALL_SOURCES
from probe.lab.gateway import FaultMode, LabGateway
from probe.ledger import Ledger
from probe.monitor.config import OnChange, WatchConfig
from probe.monitor.metrics import Metrics
from probe.monitor.watch import Watcher
from probe.records import (
    BOUNCE_ACTIONS,
    FOUND_IN,
    BouncedBy,
    Endpoint,
    ErrorKind,
    RunStatus,
    SmtpPhase,
    Stage,
    StartKind,
    WindowSource,
)
from probe.reporting.text import OUTCOMES
from probe.upgrade import Status
from probe.upgrade.checks import PART_ORDER
from probe.upgrade.drift import Drift
from probe.verdict import Cause, Pattern, Severity
from tests.monitor.test_outage_watch import watch_runs
from tests.monitor.test_watch import target
from tests.ports import unused_port
from tests.test_cli import lab_gateway, service
from tests.upgrade.helpers import REGISTRY
from tests.upgrade.test_drift_and_fix import bin_pair, drift_args
from tests.upgrade.test_upgrade_checks import exchange_tree

SCHEMAS = Path(__file__).resolve().parents[1] / "docs" / "schema"
# Each JSON output and the schema it must validate against.
RUN_REPORT, RUNS, MODULES, UPGRADE, ON_CHANGE = (
    "run-report",
    "runs",
    "modules",
    "upgrade-checks",
    "watch-on-change",
)
OUTPUTS = (RUN_REPORT, RUNS, MODULES, UPGRADE, ON_CHANGE)


def load(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    return schema


REGISTRY_OF_SCHEMAS: Registry[Any] = Registry().with_resources(
    (load(name)["$id"], Resource.from_contents(load(name))) for name in OUTPUTS
)


def assert_valid(name: str, instance: object) -> None:
    """`instance` validates against docs/schema/NAME.schema.json; else every error, with where."""
    validator = Draft202012Validator(load(name), registry=REGISTRY_OF_SCHEMAS)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}" for e in errors
    )


def json_out(capsys: pytest.CaptureFixture[str], argv: list[str], codes: tuple[int, ...]) -> Any:
    """Run the CLI in-process with `--json -` and return what it printed."""
    code = main([*argv, "--json", "-"])
    out, err = capsys.readouterr()
    assert code in codes, (code, err)
    return json.loads(out)


def enum_at(schema: dict[str, Any], *path: str) -> set[object]:
    node: Any = schema
    for key in path:
        node = node[key]
    if "oneOf" in node:  # an enum or null
        (node,) = [n for n in node["oneOf"] if "enum" in n]
    return set(node["enum"])


# -- the schemas themselves -----------------------------------------------------------------


@pytest.mark.parametrize("name", OUTPUTS)
def test_each_schema_is_draft_2020_12_with_an_id_and_version_1_and_an_open_top(name):
    schema = load(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://notifyprobe.invalid/schema/{name}.schema.json"
    assert schema["properties"]["schema_version"]["const"] == 1
    assert "schema_version" in schema["required"]
    assert schema["additionalProperties"] is True  # adding a key is not a break


def test_every_schema_file_is_one_of_the_outputs():
    assert {p.name for p in SCHEMAS.glob("*.json")} == {f"{n}.schema.json" for n in OUTPUTS}


def test_the_enumerations_are_the_codes_sets():
    report, modules, upgrade = load(RUN_REPORT)["$defs"], load(MODULES)["$defs"], load(UPGRADE)
    checks = upgrade["$defs"]
    notification, submission = report["notification"]["properties"], report["submission"]
    assert enum_at(report, "pattern") == {p.value for p in Pattern}
    assert enum_at(report, "severity") == {s.name.lower() for s in Severity}
    assert enum_at(report, "cause") == {c.value for c in Cause}
    assert enum_at(report, "run_status") == set(get_args(RunStatus))
    assert enum_at(report, "settle", "properties", "source") == {s.value for s in WindowSource}
    assert enum_at(report, "security", "properties", "tls") == set(TLS_MODES)
    assert enum_at(notification, "found_in", "items") == set(FOUND_IN)
    assert enum_at(notification, "outcome") == set(OUTCOMES)
    assert enum_at(submission, "properties", "stage") == set(get_args(Stage))
    assert enum_at(submission, "properties", "kind") == {k.value for k in ErrorKind}
    assert enum_at(submission, "properties", "stalled_at") == {p.value for p in SmtpPhase}
    bounce = report["bounce"]["properties"]
    assert enum_at(bounce, "action") == set(BOUNCE_ACTIONS)
    assert enum_at(bounce, "named_by") == set(get_args(BouncedBy))
    assert enum_at(bounce, "format") == {*get_args(BounceFormat), ""}
    assert enum_at(report, "outage", "properties", "failed_as") == set(get_args(FailedAs))
    assert enum_at(report, "process_start", "properties", "kind") == set(get_args(StartKind))
    firm = {c.word for c in Confidence if c >= Confidence.MEDIUM}
    assert enum_at(report, "diagnosis", "properties", "confidence") == firm
    assert enum_at(report, "check_status") == {s.value for s in Status}
    assert enum_at(modules, "state") == {s.value for s in ModuleState}
    assert enum_at(modules, "sight") == {s.value for s in Sight}
    platforms = {LinuxModules.platform, WindowsModules.platform}
    assert enum_at(modules, "inventory", "properties", "platform") == platforms
    assert enum_at(checks, "status") == {s.value for s in Status}
    assert enum_at(checks, "part") == set(PART_ORDER)
    assert enum_at(checks, "reboot_source", "properties", "name") == set(ALL_SOURCES)
    holder = checks["in_use"]["properties"]["files"]["items"]["properties"]["holders"]["items"]
    assert enum_at(holder, "properties", "how") == set(get_args(HowHeld))
    assert enum_at(checks, "file_drift", "properties", "state") == {d.value for d in Drift}


def test_a_key_missing_or_a_word_out_of_its_set_is_refused():
    """The validation in this file can fail: a report without a required key, or with a
    pattern the code does not have, does not validate."""
    validator = Draft202012Validator(load(RUNS), registry=REGISTRY_OF_SCHEMAS)
    row = {
        "run_id": "r",
        "started_at": 1.0,
        "finished_at": None,
        "target": None,
        "gateway": "g:25",
        "status": "done",
        "pattern": "healthy",
        "severity": "ok",
        "own_pattern": "healthy",
        "outage_since": None,
        "delivered": 1,
        "sent": 1,
        "corrected": False,
        "original_pattern": "healthy",
    }
    assert validator.is_valid({"schema_version": 1, "runs": [row]})
    assert not validator.is_valid({"schema_version": 2, "runs": [row]})
    assert not validator.is_valid({"schema_version": 1, "runs": [{**row, "pattern": "fine"}]})
    assert not validator.is_valid({"schema_version": 1, "runs": [{**row, "extra": 1}]})
    del row["sent"]
    assert not validator.is_valid({"schema_version": 1, "runs": [row]})


# -- modules and the upgrade checks: recorded inventories and temporary roots ---------------


@pytest.mark.parametrize("recording", ["meetingplace-gateway.json", "exchange-sp4.json"])
def test_modules_json_of_a_recorded_windows_inventory_validates(recording, capsys):
    recorded = Path(__file__).resolve().parents[1] / "fixtures" / "windows" / recording
    argv = ["modules", "--recorded", str(recorded), "--name", "*perf*.dll"]
    report = json_out(capsys, argv, codes=(1,))  # an old copy in each recording
    assert report["platform"] == "windows" and report["hits"]
    assert_valid(MODULES, report)


@pytest.mark.real
@pytest.mark.linux_only
def test_modules_json_with_a_held_stale_module_validates(tmp_path, capsys):
    dll = write_dll(tmp_path / "MPNotifyPerf.dll", "1.4.0.7")
    with held(dll):
        write_dll(tmp_path / "setup.tmp", "2.0.1.3").replace(dll)  # the installer's rename
        report = json_out(
            capsys, ["modules", "--name", dll.name, "--installed", str(dll)], codes=(1,)
        )
    assert "stale" in {h["state"] for h in report["hits"]}
    assert_valid(MODULES, report)


def test_drift_json_validates_with_and_without_a_registry(tmp_path, capsys):
    default, relocated = bin_pair(tmp_path)
    without = json_out(
        capsys, ["drift", "--default", str(default), "--relocated", str(relocated)], codes=(2,)
    )
    assert {f["state"] for f in without["files"]} >= {"older", "missing", "extra", "differs"}
    assert_valid(UPGRADE, without)
    argv = list(
        drift_args(default, relocated, "--registry", str(REGISTRY / "msmail-relocated.reg"))
    )
    with_registry = json_out(capsys, argv, codes=(0, 1, 2))
    assert with_registry["registry"] is not None
    assert_valid(UPGRADE, with_registry)


@pytest.mark.linux_only
def test_preflight_and_postflight_json_on_a_profile_root_validate(tmp_path, capsys):
    gateway = tmp_path / "Latitude" / "MeetingPlace Email-Gateway"
    gateway.mkdir(parents=True)
    (gateway / "notify.tpl").write_text("Dear {name}")
    root = ["--profile", "meetingplace", "--root", str(tmp_path)]
    pending = ["--registry", str(REGISTRY / "pending-reboot.reg")]
    preflight = json_out(capsys, ["preflight", *root, *pending], codes=(1, 2, 3))
    assert preflight["command"] == "preflight" and preflight["reboot"]
    assert_valid(UPGRADE, preflight)
    postflight = json_out(
        capsys, ["postflight", *root, "--expect-version", "5.0.0.41"], codes=(0, 1, 2, 3)
    )
    assert postflight["command"] == "postflight" and postflight["run_id"] is None
    assert_valid(UPGRADE, postflight)


@pytest.mark.real
@pytest.mark.linux_only
def test_preflight_and_postflight_json_with_a_held_module_validate(tmp_path, capsys):
    folder = exchange_tree(tmp_path)
    root = ["--profile", "exchange-sp4", "--root", str(tmp_path)]
    with held(folder / "Mtaperf.dll"):
        preflight = json_out(capsys, ["preflight", *root], codes=(2,))
    holders = [h for f in preflight["in_use"]["files"] for h in f["holders"]]
    assert holders
    assert_valid(UPGRADE, preflight)
    with held(folder / "Mdbperf.dll"):
        os.rename(folder / "Mdbperf.dll", folder / "Mdbperf.dll.old")
        write_dll(folder / "Mdbperf.dll", "5.5.2653.13")
        postflight = json_out(capsys, ["postflight", *root], codes=(2,))
    assert postflight["modules"]["hits"] and any(v["loaded"] for v in postflight["versions"])
    assert_valid(UPGRADE, postflight)


# -- runs through lab gateways: burst, verdict, runs and the bundle's report.json -----------


@contextmanager
def lab(mode: str, sink: int) -> Iterator[int]:
    with lab_gateway(sink, mode) as gateway:
        yield gateway


def burst(
    capsys: pytest.CaptureFixture[str],
    gateway: int,
    sink: int,
    db: Path,
    *extra: str,
    codes: tuple[int, ...],
) -> Any:
    where = ["--gateway", f"127.0.0.1:{gateway}", "--sink", f"127.0.0.1:{sink}", "--db", str(db)]
    return json_out(capsys, ["burst", *where, "--count", "4", "--settle", "1", *extra], codes)


def judged_again_and_listed(capsys: pytest.CaptureFixture[str], db: Path, run_id: str) -> Any:
    """`verdict RUN --json -` and `runs --json -` on the stored run: both validate."""
    again = json_out(capsys, ["verdict", run_id, "--db", str(db)], codes=(0, 1, 2, 3))
    assert again["run_id"] == run_id and "revision" in again
    assert_valid(RUN_REPORT, again)
    listed = json_out(capsys, ["runs", "--db", str(db)], codes=(0,))
    assert run_id in {r["run_id"] for r in listed["runs"]}
    assert_valid(RUNS, listed)
    return again


def bundled(capsys: pytest.CaptureFixture[str], db: Path, run_id: str, out: Path) -> Any:
    assert main(["evidence", run_id, "--db", str(db), "--out", str(out)]) == 0
    capsys.readouterr()
    with zipfile.ZipFile(out) as archive:
        return json.loads(archive.read("report.json"))


@pytest.mark.real
@pytest.mark.parametrize(
    ("mode", "code", "pattern"),
    [
        ("healthy", 0, "healthy"),
        ("first-only", 2, "first_only"),
        ("reject", 2, "all_refused"),
        ("stall:rcpt", 2, "gateway_stalled"),
    ],
)
def test_burst_verdict_runs_and_bundle_json_of_a_lab_run_validate(
    mode, code, pattern, tmp_path, capsys
):
    db, sink = tmp_path / "l.db", unused_port()
    with lab(mode, sink) as gateway:
        report = burst(capsys, gateway, sink, db, "--step-timeout", "1", codes=(code,))
    assert report["verdict"]["pattern"] == pattern
    assert_valid(RUN_REPORT, report)
    judged_again_and_listed(capsys, db, report["run_id"])
    kept = bundled(capsys, db, report["run_id"], tmp_path / "case.zip")
    assert kept["run_id"] == report["run_id"]
    assert_valid(RUN_REPORT, kept)


@pytest.mark.real
def test_bounces_and_an_outage_story_validate(tmp_path, capsys):
    db, sink = tmp_path / "l.db", unused_port()
    with lab("first-only:bounce", sink) as gateway:
        first = burst(capsys, gateway, sink, db, codes=(2,))
        second = burst(capsys, gateway, sink, db, codes=(2,))
    assert first["bounced"] and first["notifications"][1]["bounce"]["action"] == "failed"
    assert first["possible_known_issues"] == [] and first["refused_beyond_gateway"]["all_lost"]
    assert second["story"]["outage"]["since_run"] == first["run_id"]  # it continues the outage
    for report in (first, second):
        assert_valid(RUN_REPORT, report)
    again = judged_again_and_listed(capsys, db, second["run_id"])
    assert again["story"]["outage"] is not None
    assert_valid(RUN_REPORT, bundled(capsys, db, second["run_id"], tmp_path / "case.zip"))


@pytest.mark.real
def test_a_refused_gateway_validates(tmp_path, capsys):
    db, sink = tmp_path / "l.db", unused_port()
    report = burst(capsys, unused_port(), sink, db, codes=(2,))
    assert report["verdict"]["pattern"] == "gateway_unreachable"
    assert report["notifications"][0]["submit"]["kind"] == "connection_refused"
    assert_valid(RUN_REPORT, report)
    judged_again_and_listed(capsys, db, report["run_id"])


@pytest.mark.real
def test_an_inconclusive_run_validates(tmp_path, capsys):
    """The probe's own sink refuses the control message (a wrong --domain): inconclusive."""
    db = tmp_path / "l.db"
    with service("sink", "--listen", "127.0.0.1:0", "--db", str(db), "--domain", "probe.test") as s:
        with lab("healthy", s) as gateway:
            report = burst(
                capsys, gateway, s, db, "--no-sink", "--domain", "wrong.test", codes=(3,)
            )
    assert report["verdict"]["pattern"] == "inconclusive"
    assert report["verdict"]["cause"] == "sink_refused"
    assert_valid(RUN_REPORT, report)
    judged_again_and_listed(capsys, db, report["run_id"])


@pytest.mark.real
@pytest.mark.linux_only
def test_a_diagnosed_run_with_its_stale_module_validates(tmp_path, capsys):
    """The demo's first run: first_only, the old module this process holds, the diagnosis."""
    db = tmp_path / "l.db"
    assert main(["demo", "--db", str(db), "--count", "3"]) == 0
    capsys.readouterr()
    listed = json_out(capsys, ["runs", "--db", str(db)], codes=(0,))
    assert_valid(RUNS, listed)
    first_only = listed["runs"][-1]["run_id"]
    again = judged_again_and_listed(capsys, db, first_only)
    assert again["diagnosis"]["confidence"] in ("medium", "high") and again["modules"]["hits"]
    assert_valid(RUN_REPORT, bundled(capsys, db, first_only, tmp_path / "case.zip"))


@pytest.mark.real
def test_postflight_with_a_burst_and_its_run_report_validate(tmp_path, capsys):
    db, sink = tmp_path / "l.db", unused_port()
    with lab("healthy", sink) as gateway:
        argv = [
            "postflight",
            "--profile",
            "exchange-sp4",
            "--root",
            str(tmp_path),
            "--gateway",
            f"127.0.0.1:{gateway}",
            "--sink",
            f"127.0.0.1:{sink}",
            "--count",
            "3",
            "--settle",
            "1",
            "--db",
            str(db),
        ]
        report = json_out(capsys, argv, codes=(0, 1, 2, 3))
    assert report["run_id"] is not None
    assert_valid(UPGRADE, report)
    again = judged_again_and_listed(capsys, db, report["run_id"])
    assert again["overall"]["command"] == "postflight" and again["upgrade_checks"]
    assert_valid(RUN_REPORT, bundled(capsys, db, report["run_id"], tmp_path / "case.zip"))


# -- watch: the on_change payload -----------------------------------------------------------


@pytest.mark.real
async def test_the_watch_on_change_payload_validates(tmp_path):
    sink, listen = Endpoint("127.0.0.1", unused_port()), Endpoint("127.0.0.1", unused_port())
    payload = tmp_path / "payload.json"
    script = f"import sys; open({str(payload)!r}, 'wb').write(sys.stdin.buffer.read())"
    hook = OnChange((sys.executable, "-c", script), timeout_s=10.0)
    with Ledger(tmp_path / "l.db") as ledger:
        async with LabGateway(listen, sink, FaultMode.parse("first-only")):
            config = WatchConfig(targets=(target("gw", listen),), sink=sink, on_change=hook)
            await watch_runs(Watcher(config, ledger, Metrics()), 1)
    sent = json.loads(payload.read_text())
    assert sent["current"]["pattern"] == "first_only" and sent["previous"] is None
    assert_valid(ON_CHANGE, sent)
