"""A check with nothing to check is `not run` or `warn`, with the reason, never a pass; and the
`.old` copies that document 001's fix leaves behind are the fix applied, not a new failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fixtures.hold_module import held
from fixtures.make_pe import write_dll
from probe.host.reboot import linux_sources
from probe.upgrade.checks import Check, Status, exit_code, overall
from probe.upgrade.flight import reboot_checks, version_check
from probe.upgrade.profiles import load_profile
from tests.upgrade.helpers import check, probe, probe_json

BIN = "Exchsrvr/BIN"
PERF = ("Mdbperf.dll", "Msefperf.dll", "Mtaperf.dll", "Perfdsa.dll")


def test_a_run_where_no_check_could_run_is_not_run_and_exit_3() -> None:
    skipped = [Check("a", Status.NOT_RUN, "why"), Check("b", Status.NOT_RUN, "why")]
    assert overall(skipped) is Status.NOT_RUN and exit_code(overall(skipped)) == 3
    assert overall([]) is Status.NOT_RUN
    assert overall([*skipped, Check("c", Status.PASS, "seen")]) is Status.PASS


@pytest.mark.real
def test_a_root_without_any_of_the_profiles_files_is_a_warning_not_a_pass(tmp_path: Path) -> None:
    code, report = probe_json("preflight", "--profile", "exchange-sp4", "--root", str(tmp_path))
    files = check(report, "files in use")
    assert files["status"] == "warn" and "nothing to check" in files["reason"]
    assert code == 1 and report["status"] == "warn"


def test_no_installed_kernel_found_is_not_run_not_a_pass(tmp_path: Path) -> None:
    _, kernel = linux_sources(tmp_path, running="6.1.0-9-amd64")
    assert not kernel.checked
    (result,) = reboot_checks([kernel], (), load_profile("exchange-sp4"))
    assert result.status is Status.NOT_RUN and "no installed kernel found" in result.reason


def test_files_without_a_version_resource_do_not_pass_as_all_at_none(tmp_path: Path) -> None:
    folder = tmp_path / BIN
    folder.mkdir(parents=True)
    for name in PERF:
        (folder / name).write_bytes(b"MZ not really a PE file")
    result = version_check(load_profile("exchange-sp4"), tmp_path, None)
    assert result.status is Status.NOT_RUN and "None" not in result.reason
    assert "carries a version" in result.reason


def test_an_expected_version_that_cannot_be_compared_is_a_warning(tmp_path: Path) -> None:
    result = version_check(load_profile("meetingplace"), tmp_path, "5.0.0.41")
    assert result.status is Status.WARN and "no MPNotifyPerf.dll under" in result.reason
    result = version_check(load_profile("msmail-relocated"), tmp_path, "5.5.2653.23")
    assert result.status is Status.WARN and "names no files" in result.reason


@pytest.mark.real
@pytest.mark.linux_only
def test_after_the_rename_fix_a_held_old_copy_no_longer_fails_preflight(tmp_path: Path) -> None:
    """Document 001: rename the held DLL to .old, then install. The holder keeps the .old copy
    mapped until it restarts; preflight must not send the operator back to the same fix."""
    folder = tmp_path / BIN
    folder.mkdir(parents=True)
    for name in PERF:
        write_dll(folder / name, "5.5.2448.0")
    with held(folder / "Mdbperf.dll") as holder:
        fixed = probe(
            "fix",
            "rename-in-use",
            "--profile",
            "exchange-sp4",
            "--root",
            str(tmp_path),
            "--apply",
            "--journal",
            str(tmp_path / "journal.json"),
        )
        assert fixed.returncode == 0, fixed.stderr
        assert (folder / "Mdbperf.dll.old").exists() and not (folder / "Mdbperf.dll").exists()
        code, report = probe_json("preflight", "--profile", "exchange-sp4", "--root", str(tmp_path))
    assert report["status"] != "fail", report["checks"]
    aside = check(report, f"set aside: {BIN}/Mdbperf.dll.old")
    assert aside["status"] == "warn" and f"pid {holder.pid}" in aside["reason"]
    assert "restart" in aside["fix"]
    assert code == 1
    assert os.path.exists(folder / "Mdbperf.dll.old")
