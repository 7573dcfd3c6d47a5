"""Preflight and postflight on temporary trees with real helper processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fixtures.hold_module import held
from fixtures.make_pe import write_dll
from probe.host.reboot import linux_sources, release_key
from tests.ports import unused_port
from tests.test_cli import lab_gateway
from tests.upgrade.helpers import (
    REGISTRY,
    assert_one_line_error,
    check,
    passes_as_far_as_it_could_see,
    probe,
    probe_json,
)

linux_only = pytest.mark.linux_only
BIN = "Exchsrvr/BIN"
PERF = ("Mdbperf.dll", "Msefperf.dll", "Mtaperf.dll", "Perfdsa.dll")


def exchange_tree(root: Path, version: str = "5.5.2448.0") -> Path:
    folder = root / BIN
    folder.mkdir(parents=True)
    for name in PERF:
        write_dll(folder / name, version)
    return folder


@pytest.mark.real
@linux_only
def test_file_mapped_by_a_helper_is_in_use_with_its_pid(tmp_path: Path) -> None:
    folder = exchange_tree(tmp_path)
    with held(folder / "Mtaperf.dll") as holder:
        code, report = probe_json("preflight", "--profile", "exchange-sp4", "--root", str(tmp_path))
    assert code == 2 and report["status"] == "fail"
    failed = check(report, f"in use: {BIN}/Mtaperf.dll")
    assert failed["status"] == "fail" and f"pid {holder.pid}" in failed["reason"]
    assert "rename-in-use" in failed["fix"]
    (use,) = [f for f in report["in_use"]["files"] if f["path"].endswith("Mtaperf.dll")]
    assert {(h["pid"], h["how"]) for h in use["holders"]} >= {(holder.pid, "loaded")}
    free = [f for f in report["in_use"]["files"] if not f["path"].endswith("Mtaperf.dll")]
    assert len(free) == 3 and all(not f["holders"] for f in free)


@pytest.mark.real
@linux_only
def test_file_merely_open_is_in_use_and_a_watched_folder_is_scanned(tmp_path: Path) -> None:
    gateway = tmp_path / "Latitude" / "MeetingPlace Email-Gateway"
    gateway.mkdir(parents=True)
    template = gateway / "notify.tpl"
    template.write_text("Dear {name}")
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "notify.tpl").write_text("Dear {name}")
    with held(opened=(template,)) as holder:
        code, report = probe_json(
            "preflight",
            "--profile",
            "meetingplace",
            "--root",
            str(tmp_path),
            "--backup",
            str(backup),
        )
    failed = check(report, "in use: Latitude/MeetingPlace Email-Gateway/notify.tpl")
    assert f"pid {holder.pid}" in failed["reason"] and "(open)" in failed["reason"]
    assert check(report, "backup: notification templates")["status"] == "pass"
    assert code == 2


@pytest.mark.real
def test_nothing_held_no_reboot_and_backup_present_passes(tmp_path: Path) -> None:
    exchange_tree(tmp_path)
    code, report = probe_json("preflight", "--profile", "exchange-sp4", "--root", str(tmp_path))
    assert passes_as_far_as_it_could_see(code, report), report["checks"]
    assert check(report, "files in use")["reason"].startswith("0 of 4 file(s) held")


@pytest.mark.real
def test_missing_backup_folder_fails_and_absent_backup_option_warns(tmp_path: Path) -> None:
    code, report = probe_json(
        "preflight",
        "--profile",
        "meetingplace",
        "--root",
        str(tmp_path),
        "--backup",
        str(tmp_path / "nowhere"),
    )
    assert (
        code == 2 and "does not exist" in check(report, "backup: notification templates")["reason"]
    )
    code, report = probe_json("preflight", "--profile", "meetingplace", "--root", str(tmp_path))
    assert code == 1 and check(report, "backup: notification templates")["status"] == "warn"


@pytest.mark.real
def test_pending_reboot_sources_from_an_export_each_reported_and_ignorable(tmp_path: Path) -> None:
    gateway = tmp_path / "Latitude" / "MeetingPlace Email-Gateway"
    gateway.mkdir(parents=True)
    (gateway / "notify.tpl").write_text("Dear {name}")  # a file to check: files in use passes
    exchange_tree(tmp_path)
    args = (
        "preflight",
        "--profile",
        "meetingplace",
        "--root",
        str(tmp_path),
        "--backup",
        str(REGISTRY),
        "--registry",
        str(REGISTRY / "pending-reboot.reg"),
    )
    code, report = probe_json(*args)
    assert code == 2
    rename = check(report, "reboot: pending-file-rename")
    # MPNotifyPerf.dll is scheduled for deletion at boot: the last uninstall is not finished.
    assert rename["status"] == "fail" and "MPNotifyPerf.dll" in rename["reason"]
    assert check(report, "reboot: cbs-reboot-pending")["status"] == "fail"
    assert check(report, "reboot: windows-update")["status"] == "fail"
    assert check(report, "reboot: computer-rename")["status"] == "fail"
    assert check(report, "reboot: domain-join")["status"] == "pass"
    ignored = [*args]
    for name in ("pending-file-rename", "cbs-reboot-pending", "windows-update", "computer-rename"):
        ignored += ["--ignore-reboot-source", name]
    code, report = probe_json(*ignored)
    assert passes_as_far_as_it_could_see(code, report), report["checks"]
    assert "ignored" in check(report, "reboot: windows-update")["reason"]
    code, report = probe_json(
        "preflight",
        "--profile",
        "exchange-sp4",
        "--root",
        str(tmp_path),
        "--registry",
        str(REGISTRY / "no-reboot.reg"),
    )
    assert passes_as_far_as_it_could_see(code, report), report["checks"]


@pytest.mark.real
def test_unrelated_pending_renames_only_warn(tmp_path: Path) -> None:
    code, report = probe_json(
        "preflight",
        "--profile",
        "exchange-sp4",
        "--root",
        str(tmp_path),
        "--registry",
        str(REGISTRY / "pending-reboot.reg"),
        "--ignore-reboot-source",
        "cbs-reboot-pending",
        "--ignore-reboot-source",
        "windows-update",
        "--ignore-reboot-source",
        "computer-rename",
    )
    assert code == 1
    assert check(report, "reboot: pending-file-rename")["status"] == "warn"


def test_linux_reboot_flag_and_newer_installed_kernel(tmp_path: Path) -> None:
    assert all(not s.pending for s in linux_sources(tmp_path, running="6.1.0-9-amd64"))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "reboot-required").write_text("*** System restart required ***\n")
    (tmp_path / "run" / "reboot-required.pkgs").write_text("libc6\nlinux-base\n")
    for release in ("6.1.0-9-amd64", "6.1.0-10-amd64"):
        (tmp_path / "lib" / "modules" / release / "kernel").mkdir(parents=True)
    flag, kernel = linux_sources(tmp_path, running="6.1.0-9-amd64")
    assert flag.pending and "libc6, linux-base" in flag.detail
    assert kernel.pending and "6.1.0-10-amd64" in kernel.detail
    assert not linux_sources(tmp_path, running="6.1.0-10-amd64")[1].pending
    assert release_key("5.15.0-101-generic") > release_key("5.15.0-91-generic")


@pytest.mark.real
def test_a_leftover_folder_holding_the_old_version_fails_postflight(tmp_path: Path) -> None:
    leftover = tmp_path / "Latitude" / "Shared Components" / "MeetingPlace Notification Gateway"
    leftover.mkdir(parents=True)
    write_dll(leftover / "MPNotifyPerf.dll", "4.3.0.1")
    root = ("postflight", "--profile", "meetingplace", "--root", str(tmp_path))
    code, report = probe_json(*root, "--expect-version", "5.0.0.41")
    assert code == 2 and report["status"] == "fail"
    failed = check(report, "leftover: Latitude/Shared Components/MeetingPlace Notification Gateway")
    assert failed["status"] == "fail" and "MPNotifyPerf.dll 4.3.0.1" in failed["reason"]
    assert check(report, "leftover: Latitude/MeetingPlace Email-Gateway")["status"] == "pass"
    assert check(report, "burst")["status"] == "not_run"
    code, report = probe_json(*root)  # the DLL alone, no gateway beside it: left behind
    assert report["status"] == "fail"
    leftover.joinpath("MPNotifyPerf.dll").unlink()
    for folder in (leftover, leftover.parent, leftover.parent.parent):
        folder.rmdir()
    code, report = probe_json(*root)
    assert passes_as_far_as_it_could_see(code, report), report["checks"]


@pytest.mark.real
@linux_only
def test_postflight_finds_a_renamed_copy_still_loaded_and_mixed_versions(tmp_path: Path) -> None:
    folder = exchange_tree(tmp_path)
    with held(folder / "Mdbperf.dll") as holder:
        os.rename(folder / "Mdbperf.dll", folder / "Mdbperf.dll.old")
        write_dll(folder / "Mdbperf.dll", "5.5.2653.13")
        code, report = probe_json(
            "postflight", "--profile", "exchange-sp4", "--root", str(tmp_path)
        )
    assert code == 2
    stale = check(report, "no stale module loaded")
    assert stale["status"] == "fail" and f"pid {holder.pid}" in stale["evidence"][0]
    versions = check(report, "installed versions")
    assert versions["status"] == "fail" and "5.5.2448.0" in versions["reason"]


@pytest.mark.real
def test_postflight_burst_through_a_healthy_lab_gateway_passes(tmp_path: Path) -> None:

    sink = unused_port()
    with lab_gateway(sink, "healthy") as gateway:
        code, report = probe_json(
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
            "5",
            "--db",
            str(tmp_path / "l.db"),
        )
    assert check(report, "burst")["status"] == "pass", report["checks"]
    assert passes_as_far_as_it_could_see(code, report), report["checks"]


@pytest.mark.real
def test_bad_profile_root_and_reboot_source_are_one_line_errors(tmp_path: Path) -> None:
    assert_one_line_error(
        probe("preflight", "--profile", "nope", "--root", str(tmp_path)),
        "no profile 'nope'",
        "meetingplace",
    )
    assert_one_line_error(
        probe("postflight", "--profile", "meetingplace", "--root", str(tmp_path / "missing")),
        "does not exist",
    )
    assert_one_line_error(
        probe(
            "preflight",
            "--profile",
            "meetingplace",
            "--root",
            str(tmp_path),
            "--ignore-reboot-source",
            "bogus",
        ),
        "bogus",
    )
    assert_one_line_error(
        probe(
            "preflight",
            "--profile",
            "meetingplace",
            "--root",
            str(tmp_path),
            "--registry",
            str(tmp_path),
        ),
        "cannot read registry export",
    )
    assert_one_line_error(
        probe(
            "preflight",
            "--profile",
            "meetingplace",
            "--root",
            str(tmp_path),
            "--registry",
            str(REGISTRY / "broken.reg"),
        ),
        "broken.reg:4",
    )
