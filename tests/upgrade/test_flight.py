"""Pre- and postflight checks called directly, on real trees, DLLs and holder processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.hold_module import held, upgraded_while_loaded
from fixtures.make_pe import write_dll
from probe.errors import ProbeError
from probe.host import files_in_use, linux_sources, local_holders, local_source, take_inventory
from probe.host.reboot import FileRename, RebootSource
from probe.upgrade.checks import Status
from probe.upgrade.flight import (
    backup_check,
    burst_check,
    check_root,
    held_candidates,
    in_use_checks,
    is_under,
    leftover_checks,
    module_check,
    profile_files,
    reboot_checks,
    version_check,
)
from probe.upgrade.profiles import Profile, load_profile
from probe.verdict import classify
from tests.test_verdict import note, record

linux_only = pytest.mark.linux_only
EXCHANGE = load_profile("exchange-sp4")
MEETINGPLACE = load_profile("meetingplace")
BIN = "Exchsrvr/BIN"
PERF = ("Mdbperf.dll", "Msefperf.dll", "Mtaperf.dll", "Perfdsa.dll")


def exchange_tree(root: Path, versions: tuple[str, ...] = ("5.5.2448.0",) * 4) -> Path:
    folder = root / BIN
    folder.mkdir(parents=True)
    for name, version in zip(PERF, versions, strict=True):
        write_dll(folder / name, version)
    return folder


def test_a_root_must_be_an_existing_folder(tmp_path: Path) -> None:
    check_root(tmp_path)
    with pytest.raises(ProbeError, match="does not exist"):
        check_root(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ProbeError, match="is not a folder"):
        check_root(tmp_path / "file")


def test_under_means_the_folder_or_below_it_not_a_sibling_with_the_same_prefix(
    tmp_path: Path,
) -> None:
    assert is_under(str(tmp_path / "BIN" / "x.dll"), tmp_path / "BIN")
    assert is_under(str(tmp_path / "BIN"), tmp_path / "BIN")
    assert not is_under(str(tmp_path / "BIN2" / "x.dll"), tmp_path / "BIN")


def test_profile_files_are_the_named_files_and_everything_in_watched_folders(
    tmp_path: Path,
) -> None:
    gateway = tmp_path / "Latitude" / "MeetingPlace Email-Gateway"
    (gateway / "templates").mkdir(parents=True)
    (gateway / "templates" / "notify.tpl").write_text("Dear {name}")
    (gateway / "gateway.log").write_text("")
    assert sorted(profile_files(MEETINGPLACE, tmp_path)) == sorted(
        [str(gateway / "gateway.log"), str(gateway / "templates" / "notify.tpl")]
    )
    assert profile_files(EXCHANGE, tmp_path) == [str(tmp_path / BIN / n) for n in PERF]


@pytest.mark.real
@linux_only
def test_a_held_dll_fails_with_its_holder_and_the_fix(tmp_path: Path) -> None:
    folder = exchange_tree(tmp_path)
    with held(folder / "Mtaperf.dll") as holder:
        usage = files_in_use(local_holders(), profile_files(EXCHANGE, tmp_path))
    summary, detail = in_use_checks(usage, EXCHANGE, tmp_path)
    assert summary.status is Status.FAIL and summary.reason.startswith("1 of 4 file(s) held")
    assert detail.name == f"in use: {BIN}/Mtaperf.dll" and detail.status is Status.FAIL
    assert f"pid {holder.pid}" in detail.reason and "rename-in-use" in detail.fix


@linux_only
def test_files_nobody_holds_pass_and_absent_files_warn_that_nothing_was_checked(
    tmp_path: Path,
) -> None:
    exchange_tree(tmp_path)
    usage = files_in_use(local_holders(), profile_files(EXCHANGE, tmp_path))
    seen_all = Status.PASS if usage.denied == 0 else Status.WARN  # some hosts hide a process
    assert [(c.status, c.reason[:28]) for c in in_use_checks(usage, EXCHANGE, tmp_path)] == [
        (seen_all, "0 of 4 file(s) held by a pro")
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    usage = files_in_use(local_holders(), profile_files(EXCHANGE, empty))
    (only,) = in_use_checks(usage, EXCHANGE, empty)
    assert only.status is Status.WARN and "none of the profile's files is present" in only.reason


def test_a_pending_reboot_that_renames_a_profile_file_fails() -> None:
    rename = FileRename("\\??\\C:\\Exchsrvr\\BIN\\Mtaperf.dll", "")
    owed = RebootSource("file-rename", True, "1 rename pending", "HKLM\\...", renames=(rename,))
    (check,) = reboot_checks([owed], [], EXCHANGE)
    assert check.status is Status.FAIL and "Mtaperf.dll" in check.reason
    assert check.evidence == ("\\??\\C:\\Exchsrvr\\BIN\\Mtaperf.dll -> (delete)",)


def test_a_noisy_reboot_source_warns_and_an_ignored_one_passes(tmp_path: Path) -> None:
    rename = FileRename("C:\\Program Files\\AV\\engine.dll", "")
    noisy = RebootSource("file-rename", True, "1 rename", "HKLM", noisy=True, renames=(rename,))
    assert [c.status for c in reboot_checks([noisy], [], EXCHANGE)] == [Status.WARN]
    assert [c.status for c in reboot_checks([noisy], ["file-rename"], EXCHANGE)] == [Status.PASS]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "reboot-required").write_text("")
    by_name = {c.name: c for c in reboot_checks(linux_sources(tmp_path, "6.1.0"), [], EXCHANGE)}
    assert by_name["reboot: reboot-required"].status is Status.FAIL


def backup_status(profile: Profile, backup: Path | None) -> Status:
    """The status of the backup check for a procedure that asks for a backup."""
    check = backup_check(profile, backup)
    assert check is not None
    return check.status


def test_the_backup_must_hold_a_non_empty_matching_file(tmp_path: Path) -> None:
    backup = tmp_path / "backup"
    assert backup_status(MEETINGPLACE, None) is Status.WARN
    assert backup_status(MEETINGPLACE, backup) is Status.FAIL
    backup.mkdir()
    (backup / "notify.tpl").write_text("")
    assert backup_status(MEETINGPLACE, backup) is Status.FAIL
    (backup / "notify.tpl").write_text("Dear {name}")
    passed = backup_check(MEETINGPLACE, backup)
    assert passed is not None
    assert passed.status is Status.PASS and passed.reason == f"1 file(s) in {backup}"
    assert backup_check(EXCHANGE, backup) is None  # this procedure asks for no backup


def test_a_leftover_folder_is_judged_by_the_version_it_holds_not_by_being_there(
    tmp_path: Path,
) -> None:
    shared = tmp_path / "Latitude" / "Shared Components" / "MeetingPlace Notification Gateway"
    shared.mkdir(parents=True)
    write_dll(shared / "MPNotifyPerf.dll", "4.3.0.12")
    name = "leftover: Latitude/Shared Components/MeetingPlace Notification Gateway"

    def judged(expect: str | None) -> dict[str, Status]:
        return {c.name: c.status for c in leftover_checks(MEETINGPLACE, tmp_path, expect)}

    assert judged("5.0.0.41") == {
        "leftover: Latitude/MeetingPlace Email-Gateway": Status.PASS,
        name: Status.FAIL,
    }
    (old,) = [c for c in leftover_checks(MEETINGPLACE, tmp_path, "5.0.0.41") if c.name == name]
    assert "MPNotifyPerf.dll 4.3.0.12" in old.reason and "delete" not in old.fix
    # Without a version: the DLL alone, no other file of the product, is what the uninstall left.
    assert judged(None)[name] is Status.FAIL
    write_dll(shared / "MPNotifyPerf.dll", "5.0.0.41")
    assert judged("5.0.0.41")[name] is Status.PASS


def test_installed_files_must_agree_on_one_version_or_the_expected_one(tmp_path: Path) -> None:
    assert version_check(EXCHANGE, tmp_path, None).status is Status.NOT_RUN
    exchange_tree(tmp_path, ("5.5.2653.23",) * 3 + ("5.5.2448.0",))
    mixed = version_check(EXCHANGE, tmp_path, None)
    assert mixed.status is Status.FAIL and "5.5.2448.0, 5.5.2653.23" in mixed.reason
    expected = version_check(EXCHANGE, tmp_path, "5.5.2653.23")
    assert expected.status is Status.FAIL and expected.reason.startswith("1 file(s) not at")
    write_dll(tmp_path / BIN / "Perfdsa.dll", "5.5.2653.23")
    assert version_check(EXCHANGE, tmp_path, "5.5.2653.23").status is Status.PASS
    assert version_check(EXCHANGE, tmp_path, None).reason == "all 4 file(s) at 5.5.2653.23"


@pytest.mark.real
@linux_only
def test_an_old_copy_still_loaded_under_the_root_fails_postflight(tmp_path: Path) -> None:
    (tmp_path / BIN).mkdir(parents=True)
    with upgraded_while_loaded(tmp_path / BIN / "Mtaperf.dll") as dll:
        inventory = take_inventory(local_source(), list(EXCHANGE.modules), [])
        assert str(dll) in held_candidates(EXCHANGE, tmp_path)
    stale = module_check(EXCHANGE, inventory, tmp_path)
    assert stale.status is Status.FAIL and "Mtaperf.dll" in stale.reason
    assert any("stale" in line for line in stale.evidence)
    elsewhere = tmp_path / "other-root"
    elsewhere.mkdir()
    seen_all = Status.PASS if inventory.denied == 0 else Status.WARN  # some hosts hide a process
    assert module_check(EXCHANGE, inventory, elsewhere).status is seen_all
    assert module_check(EXCHANGE, None, tmp_path).status is Status.NOT_RUN


def test_the_burst_check_follows_the_verdict_and_is_not_run_without_a_gateway() -> None:
    assert burst_check(None).status is Status.NOT_RUN
    healthy = record(*(note(s) for s in range(1, 6)))
    first_only = record(note(1), *(note(s, delivered=0) for s in range(2, 6)))
    assert burst_check(classify(healthy)).status is Status.PASS
    failed = burst_check(classify(first_only))
    assert failed.status is Status.FAIL and failed.reason.startswith("first_only")
