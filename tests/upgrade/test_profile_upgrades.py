"""Each profile's upgrade, done right and done wrong, on real trees of PE files with versions:
a good upgrade passes (a fresh install in the old place included), each bad one fails with the
reason that names it, every view of one postflight opens with the same status, and a fix is
offered only where the profile's known issue prescribes it."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fixtures.hold_module import upgraded_while_loaded
from fixtures.make_pe import write_dll
from probe.upgrade import load_profile, profile_names
from probe.upgrade.checks import Check, Status, report_dict, report_nagios, report_text
from probe.upgrade.flight import in_use_fix
from tests.ports import unused_port
from tests.upgrade.helpers import (
    assert_one_line_error,
    check,
    passes_as_far_as_it_could_see,
    probe,
    probe_json,
)

pytestmark = pytest.mark.real  # real processes and sockets on loopback

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")
NEW, OLD = "5.0.0.41", "4.3.0.12"
GATEWAY = "Latitude/MeetingPlace Email-Gateway"
SHARED = "Latitude/Shared Components/MeetingPlace Notification Gateway"
BIN = "Exchsrvr/BIN"
PERF = ("Mdbperf.dll", "Msefperf.dll", "Mtaperf.dll", "Perfdsa.dll")
SP4 = "5.5.2653.23"


def meetingplace_install(root: Path, dll_version: str = NEW) -> Path:
    """A fresh MeetingPlace SMTP Gateway in the very folders document 000 removes."""
    gateway, shared = root / GATEWAY, root / SHARED
    (gateway / "templates").mkdir(parents=True)
    shared.mkdir(parents=True)
    write_dll(gateway / "MPGateway.exe", NEW)
    (gateway / "templates" / "notify.tpl").write_text("Dear {name}")  # restored templates
    write_dll(shared / "MPNotifyPerf.dll", dll_version)
    return shared / "MPNotifyPerf.dll"


def exchange_install(root: Path, versions: tuple[str, ...] = (SP4,) * 4) -> Path:
    folder = root / BIN
    folder.mkdir(parents=True)
    for name, version in zip(PERF, versions, strict=True):
        write_dll(folder / name, version)
    return folder


def postflight(root: Path, profile: str, *extra: str) -> tuple[int, dict[str, Any]]:
    return probe_json("postflight", "--profile", profile, "--root", str(root), *extra)


def pending_reboot(root: Path) -> None:
    (root / "run").mkdir()
    (root / "run" / "reboot-required").write_text("*** System restart required ***\n")


# -- meetingplace (document 000) ------------------------------------------------------------


def test_meetingplace_fresh_install_in_the_old_folders_passes_with_the_version_found(
    tmp_path: Path,
) -> None:
    meetingplace_install(tmp_path)
    code, report = postflight(tmp_path, "meetingplace", "--expect-version", NEW)
    assert passes_as_far_as_it_could_see(code, report), report["checks"]
    for folder in (GATEWAY, SHARED):
        left = check(report, f"leftover: {folder}")
        assert left["status"] == "pass" and f"fresh install of {NEW}" in left["reason"]
        assert "delete" not in (left["fix"] or "")
    versions = check(report, "installed versions")
    assert versions["status"] == "pass" and NEW in versions["reason"]
    assert report["versions"] == [
        {"file": f"{SHARED}/MPNotifyPerf.dll", "installed": NEW, "loaded": [], "expected": NEW}
    ]


@pytest.mark.parametrize("expect", [(), ("--expect-version", NEW)], ids=["by-content", "expected"])
def test_meetingplace_correct_reinstall_in_the_same_folders_passes_with_a_healthy_gateway(
    tmp_path: Path, expect: tuple[str, ...]
) -> None:
    from tests.test_cli import lab_gateway

    meetingplace_install(tmp_path)
    sink = unused_port()
    with lab_gateway(sink, "healthy") as gateway:
        code, report = postflight(
            tmp_path,
            "meetingplace",
            *expect,
            "--gateway",
            f"127.0.0.1:{gateway}",
            "--sink",
            f"127.0.0.1:{sink}",
            "--count",
            "3",
            "--db",
            str(tmp_path / "l.db"),
        )
    assert check(report, "burst")["status"] == "pass", report["checks"]
    assert passes_as_far_as_it_could_see(code, report), report["checks"]
    assert report["parts"]["leftovers"] == "pass" and report["parts"]["versions"] == "pass"
    for folder in (GATEWAY, SHARED):
        left = check(report, f"leftover: {folder}")
        assert f"a fresh install of {NEW} in the same place" in left["reason"]
    if not expect:  # what made it fresh, said: the whole installation at one version
        reason = check(report, f"leftover: {SHARED}")["reason"]
        assert f"MPNotifyPerf.dll {NEW}" in reason and f"MPGateway.exe {NEW}" in reason
        assert "no process runs an old copy" in reason


def test_meetingplace_old_dll_left_beside_the_new_gateway_fails_naming_it(tmp_path: Path) -> None:
    meetingplace_install(tmp_path, dll_version=OLD)
    code, report = postflight(tmp_path, "meetingplace", "--expect-version", NEW)
    assert code == 2 and report["status"] == "fail"
    left = check(report, f"leftover: {SHARED}")
    assert left["status"] == "fail" and f"MPNotifyPerf.dll {OLD}" in left["reason"]
    assert "uninstall" in left["fix"] and "reboot" in left["fix"]
    assert check(report, f"leftover: {GATEWAY}")["status"] == "pass"  # the new gateway stays
    versions = check(report, "installed versions")
    assert versions["status"] == "fail" and f"MPNotifyPerf.dll at {OLD}" in versions["reason"]


def test_meetingplace_another_version_than_expected_is_reported_with_the_file(
    tmp_path: Path,
) -> None:
    meetingplace_install(tmp_path)
    code, report = postflight(tmp_path, "meetingplace", "--expect-version", "5.0.0.42")
    versions = check(report, "installed versions")
    assert code == 2 and versions["status"] == "fail"
    assert f"{SHARED}/MPNotifyPerf.dll at {NEW}" in versions["reason"]


def test_meetingplace_lone_old_dll_left_by_the_uninstall_fails_naming_it_without_a_version(
    tmp_path: Path,
) -> None:
    (tmp_path / SHARED).mkdir(parents=True)
    write_dll(tmp_path / SHARED / "MPNotifyPerf.dll", OLD)  # locked through the uninstall
    (tmp_path / GATEWAY / "templates").mkdir(parents=True)  # templates kept, gateway removed
    (tmp_path / GATEWAY / "templates" / "notify.tpl").write_text("Dear {name}")
    code, report = postflight(tmp_path, "meetingplace")
    assert code == 2 and report["status"] == "fail"
    left = check(report, f"leftover: {SHARED}")
    assert left["status"] == "fail" and f"MPNotifyPerf.dll {OLD}" in left["reason"]
    assert "without the rest of an installation" in left["reason"]
    assert "uninstall" in left["fix"] and "reboot" in left["fix"]


def test_meetingplace_dll_at_another_version_than_the_rest_fails_naming_it_without_a_version(
    tmp_path: Path,
) -> None:
    meetingplace_install(tmp_path, dll_version=OLD)  # reinstalled without the reboot
    code, report = postflight(tmp_path, "meetingplace")
    assert code == 2 and report["status"] == "fail"
    left = check(report, f"leftover: {SHARED}")
    assert left["status"] == "fail" and f"MPNotifyPerf.dll {OLD}" in left["reason"]
    assert f"the rest of the installation is at {NEW}" in left["reason"]
    assert f"MPGateway.exe {NEW}" in left["reason"]
    assert check(report, f"leftover: {GATEWAY}")["status"] != "fail"  # the new gateway stays


@pytest.mark.parametrize("case", ["gateway-gone", "no-version"])
def test_meetingplace_without_the_expected_version_warns_when_the_content_cannot_decide(
    tmp_path: Path, case: str
) -> None:
    if case == "gateway-gone":  # the DLL and one more file: a partial leftover or an install?
        (tmp_path / SHARED).mkdir(parents=True)
        write_dll(tmp_path / SHARED / "MPNotifyPerf.dll", NEW)
        write_dll(tmp_path / SHARED / "MPNotifyRes.dll", NEW)
        why = f"{GATEWAY} holds no program file"
    else:  # the gateway's own files carry no version to compare the DLL with
        meetingplace_install(tmp_path)
        (tmp_path / GATEWAY / "MPGateway.exe").write_bytes(b"not a PE file")
        why = "carries a version to compare"
    code, report = postflight(tmp_path, "meetingplace")
    left = check(report, f"leftover: {SHARED}")
    assert left["status"] == "warn" and why in left["reason"], left
    assert "--expect-version" in left["fix"]
    assert code == 1 and report["status"] == "warn"
    code, report = postflight(tmp_path, "meetingplace", "--expect-version", NEW)
    assert check(report, f"leftover: {SHARED}")["status"] == "pass"  # told: decided


@linux_only
def test_meetingplace_old_dll_still_loaded_fails_the_module_check_with_the_000_remedy(
    tmp_path: Path,
) -> None:
    meetingplace_install(tmp_path)
    shared = tmp_path / SHARED
    (shared / "MPNotifyPerf.dll").unlink()
    with upgraded_while_loaded(shared / "MPNotifyPerf.dll", OLD, NEW):
        code, report = postflight(tmp_path, "meetingplace", "--expect-version", NEW)
    assert code == 2
    modules = check(report, "no stale module loaded")
    assert modules["status"] == "fail" and "MPNotifyPerf.dll" in modules["reason"]
    assert "known issue 000" in modules["fix"] and "rename" not in modules["fix"]
    (row,) = report["versions"]
    assert row["installed"] == NEW and any(OLD in loaded for loaded in row["loaded"])
    assert report["modules"]["names"] == ["MPNotifyPerf.dll"]  # the inventory it took


@linux_only
def test_meetingplace_old_dll_still_loaded_fails_the_leftover_without_a_version(
    tmp_path: Path,
) -> None:
    meetingplace_install(tmp_path)  # on disk: the whole installation at one version
    shared = tmp_path / SHARED
    (shared / "MPNotifyPerf.dll").unlink()
    with upgraded_while_loaded(shared / "MPNotifyPerf.dll", OLD, NEW):
        code, report = postflight(tmp_path, "meetingplace")
    left = check(report, f"leftover: {SHARED}")
    assert code == 2 and left["status"] == "fail", left
    assert "MPNotifyPerf.dll loaded " + OLD in left["reason"]


def test_meetingplace_pending_reboot_fails_postflight(tmp_path: Path) -> None:
    meetingplace_install(tmp_path)
    pending_reboot(tmp_path)
    code, report = postflight(tmp_path, "meetingplace", "--expect-version", NEW)
    reboot = check(report, "reboot: reboot-required")
    assert code == 2 and reboot["status"] == "fail" and "postflight again" in reboot["fix"]


# -- exchange-sp4 (document 001) ------------------------------------------------------------


def test_exchange_service_pack_installed_passes(tmp_path: Path) -> None:
    exchange_install(tmp_path)
    code, report = postflight(tmp_path, "exchange-sp4", "--expect-version", SP4)
    assert passes_as_far_as_it_could_see(code, report), report["checks"]
    assert [row["installed"] for row in report["versions"]] == [SP4] * 4


def test_exchange_one_dll_left_at_the_old_version_fails_naming_it(tmp_path: Path) -> None:
    exchange_install(tmp_path, (SP4,) * 3 + ("5.5.2448.0",))
    code, report = postflight(tmp_path, "exchange-sp4", "--expect-version", SP4)
    versions = check(report, "installed versions")
    assert code == 2 and f"{BIN}/Perfdsa.dll at 5.5.2448.0" in versions["reason"]


@linux_only
def test_exchange_old_dll_still_loaded_fails(tmp_path: Path) -> None:
    folder = exchange_install(tmp_path)
    (folder / "Mtaperf.dll").unlink()
    with upgraded_while_loaded(folder / "Mtaperf.dll", "5.5.2448.0", SP4):
        code, report = postflight(tmp_path, "exchange-sp4", "--expect-version", SP4)
    modules = check(report, "no stale module loaded")
    assert code == 2 and modules["status"] == "fail" and "known issue 001" in modules["fix"]


def test_exchange_pending_reboot_fails_postflight(tmp_path: Path) -> None:
    exchange_install(tmp_path)
    pending_reboot(tmp_path)
    code, report = postflight(tmp_path, "exchange-sp4", "--expect-version", SP4)
    assert code == 2 and check(report, "reboot: reboot-required")["status"] == "fail"


# -- msmail-relocated (document 002) --------------------------------------------------------


def test_msmail_without_the_default_msmcon_folder_passes_and_with_it_warns(
    tmp_path: Path,
) -> None:
    code, report = postflight(tmp_path, "msmail-relocated")
    assert passes_as_far_as_it_could_see(code, report), report["checks"]
    (tmp_path / "exchsrvr" / "connect" / "msmcon" / "bin").mkdir(parents=True)
    code, report = postflight(tmp_path, "msmail-relocated")
    assert code == 1 and check(report, "leftover: exchsrvr/connect/msmcon")["status"] == "warn"
    pending_reboot(tmp_path)
    code, report = postflight(tmp_path, "msmail-relocated")
    assert code == 2 and check(report, "reboot: reboot-required")["status"] == "fail"


# -- one status, first, in every view -------------------------------------------------------

VIEW_WORD = {"pass": "OK", "warn": "WARNING", "fail": "CRITICAL", "not_run": "UNKNOWN"}


@dataclass(frozen=True)
class Views:
    text: str
    report: dict[str, object]
    nagios: str


def views(checks: list[Check]) -> Views:
    title = "postflight meetingplace"
    return Views(
        report_text(title, checks),
        report_dict("postflight", checks),
        report_nagios(title, checks),
    )


def combinations() -> Iterator[list[Check]]:
    parts = ("delivery", "modules", "leftovers", "versions", "reboot")
    for i, status in enumerate(Status):
        for j, other in enumerate(Status):
            yield [
                Check("burst", status, "delivery", part="delivery"),
                *(
                    Check(f"c{k}", other if k == i % 4 else Status.PASS, "x", part=p)  # type: ignore[arg-type]
                    for k, p in enumerate(parts[1:])
                ),
            ]
            del j


@pytest.mark.parametrize("checks", list(combinations()))
def test_text_json_and_nagios_open_with_the_same_overall_status(checks: list[Check]) -> None:
    seen = views(checks)
    status = str(seen.report["status"])
    assert next(iter(seen.report)) == "status"
    word = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "not_run": "NOT RUN"}[status]
    assert seen.text.splitlines()[0].startswith(f"notifyprobe postflight meetingplace: {word} ")
    assert seen.nagios.startswith(f"NOTIFYPROBE {VIEW_WORD[status]} - ")
    parts = list(seen.report["parts"])  # type: ignore[call-overload]
    assert parts == ["delivery", "modules", "leftovers", "versions", "reboot"]


def test_a_failing_postflight_opens_with_its_failure_in_text_json_and_nagios(
    tmp_path: Path,
) -> None:
    meetingplace_install(tmp_path, dll_version=OLD)
    args = (
        "postflight",
        "--profile",
        "meetingplace",
        "--root",
        str(tmp_path),
        "--expect-version",
        NEW,
    )
    text, nagios, js = probe(*args), probe(*args, "--format", "nagios"), probe(*args, "--json", "-")
    assert text.returncode == nagios.returncode == js.returncode == 2
    assert text.stdout.startswith("notifyprobe postflight meetingplace: FAIL")
    assert nagios.stdout.startswith("NOTIFYPROBE CRITICAL - postflight meetingplace: fail")
    assert json.loads(js.stdout)["status"] == "fail"
    assert "versions (loaded, installed, expected)" in text.stdout


# -- remedies come from the signatures ------------------------------------------------------


@pytest.mark.parametrize("name", profile_names())
def test_each_profile_suggests_only_its_own_known_issues_fix(name: str, tmp_path: Path) -> None:
    profile = load_profile(name)
    fix = in_use_fix(profile, tmp_path)
    offers_rename = "fix rename-in-use" in fix
    assert offers_rename == ("rename-in-use" in profile.signature.fix_actions)
    assert profile.signature.remedy in fix or offers_rename
    refused = probe("fix", "rename-in-use", "--profile", name, "--root", str(tmp_path))
    if offers_rename:
        assert refused.returncode == 0, refused.stderr
    else:
        assert_one_line_error(refused, "not the remedy", f"known issue {profile.signature.id}")


def test_meetingplace_fix_rename_in_use_is_refused_naming_uninstall_reboot_reinstall(
    tmp_path: Path,
) -> None:
    refused = probe("fix", "rename-in-use", "--profile", "meetingplace", "--root", str(tmp_path))
    assert_one_line_error(refused, "uninstall", "reboot", "Latitude folders", "reinstall")


def test_meetingplace_preflight_never_suggests_rename_in_use(tmp_path: Path) -> None:
    meetingplace_install(tmp_path, dll_version=OLD)
    _, report = probe_json("preflight", "--profile", "meetingplace", "--root", str(tmp_path))
    assert "rename-in-use" not in json.dumps(report)
    assert report["signature"] == "000" and "uninstall" in str(report["remedy"])
    assert report["modules"]["names"] == ["MPNotifyPerf.dll"]  # the inventory it took
