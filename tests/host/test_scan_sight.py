"""What a scan saw, on crafted counts and recorded Windows inventories: a scan that could not
read every process in its scope is never a clean one, and says what would let it see."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from probe.cli import main
from probe.cli.modules import exit_code, to_text
from probe.host.inventory import Inventory, Sight, judge_sight, take_inventory, unreadable_note
from probe.host.platform import ProcessDenied, ProcessFilter, ProcessVanished, scan_processes
from probe.host.platform.linux import LinuxModules
from probe.host.platform.windows import RecordedWindows, loads_no_user_modules
from probe.reporting.artifacts import InventoryView
from tests.cli import run_cli

ROOT = Path(__file__).resolve().parents[2]
WINDOWS = ROOT / "fixtures" / "windows"
MEETINGPLACE = WINDOWS / "meetingplace-gateway.json"
INSTALLED = r"D:\Latitude\Shared Components\MeetingPlace Notification Gateway\MPNotifyPerf.dll"


def inventory(scanned: int, denied: int, advice: str = "run as root") -> Inventory:
    return Inventory(
        ("X.dll",),
        (),
        "linux",
        (),
        scanned=scanned,
        denied=denied,
        vanished=0,
        unreadable_advice=advice,
    )


def test_only_a_scan_that_read_every_process_in_scope_is_clean() -> None:
    assert judge_sight(False, scanned=60, unreadable=0) is Sight.CLEAN
    assert judge_sight(False, scanned=60, unreadable=9) is Sight.PARTIAL
    assert judge_sight(False, scanned=0, unreadable=9) is Sight.BLIND
    assert judge_sight(False, scanned=0, unreadable=0) is Sight.EMPTY


def test_an_old_copy_found_is_a_finding_whatever_was_left_unread() -> None:
    assert judge_sight(True, scanned=60, unreadable=9) is Sight.OLD_COPY
    assert judge_sight(True, scanned=1, unreadable=0) is Sight.OLD_COPY


def test_modules_exits_0_only_when_clean_1_for_an_old_copy_and_3_when_it_could_not_see() -> None:
    assert {s: exit_code(s) for s in Sight} == {
        Sight.CLEAN: 0,
        Sight.OLD_COPY: 1,
        Sight.PARTIAL: 3,
        Sight.BLIND: 3,
        Sight.EMPTY: 3,
    }


def test_the_unreadable_note_counts_against_the_processes_in_scope_and_gives_the_advice() -> None:
    note = unreadable_note(9, 60, "run as root, or grant CAP_SYS_PTRACE")
    assert note == (
        "could not read 9 of 69 processes: an old copy may be loaded there; run as root, or "
        "grant CAP_SYS_PTRACE"
    )
    text = to_text(inventory(60, 9))
    assert "could not read 9 of 69 processes" in text and "UNKNOWN" in text
    assert "UNKNOWN" not in to_text(inventory(60, 0))


def test_vanished_and_filtered_out_processes_are_not_unreadable() -> None:
    def read(pid: int) -> list[int]:
        if pid == 1:
            raise ProcessDenied(pid)
        if pid == 2:
            raise ProcessVanished(pid)
        return [pid]

    found, counts = scan_processes([1, 2, 3, 4], read, in_scope=lambda pid: pid != 4)
    assert found == [3]
    assert (counts.scanned, counts.denied, counts.vanished, counts.out_of_scope) == (1, 1, 1, 1)
    _, outside = scan_processes([1, 3], read, in_scope=lambda pid: pid == 3)
    assert (outside.scanned, outside.denied, outside.out_of_scope) == (1, 0, 1)


def test_a_process_filter_matches_names_case_insensitively_with_globs_and_optional_exe() -> None:
    keep = ProcessFilter(["MPNotify", "perf*"])
    assert keep.keeps("mpnotify.exe") and keep.keeps("MPNotify") and keep.keeps("perfmon.exe")
    assert not keep.keeps("wmiprvse.exe")
    assert keep.keeps("")  # a name that cannot be read might be the one asked for


def test_each_platform_gives_its_own_advice() -> None:
    linux = LinuxModules().unreadable_advice
    assert "root" in linux and "CAP_SYS_PTRACE" in linux and "CAP_DAC_READ_SEARCH" in linux
    windows = RecordedWindows.load(MEETINGPLACE).unreadable_advice
    assert "SeDebugPrivilege" in windows and "elevated" in windows and "CAP_" not in windows
    assert "CAP_CHECKPOINT_RESTORE" in LinuxModules().loaded_copy_advice


def recording(tmp_path: Path, keep: set[int], denied: frozenset[int] = frozenset()) -> Path:
    data = json.loads(MEETINGPLACE.read_text())
    data["processes"] = [
        {**p, "error": "denied"} if p["pid"] in denied else p
        for p in data["processes"]
        if p["pid"] in keep
    ]
    path = tmp_path / "recording.json"
    path.write_text(json.dumps(data))
    return path


def test_system_and_the_idle_process_load_no_module_so_not_reading_them_misses_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nobody may read pid 0 and 4, not even elevated; they run no user-mode code."""
    path = recording(tmp_path, {0, 4, 1020, 2604})
    assert main(["modules", "--recorded", str(path)]) == 0
    assert "could not read" not in capsys.readouterr().out


def test_a_recorded_windows_scan_that_could_not_read_a_service_is_unknown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """svchost is denied (not elevated); perfmon runs the current copy."""
    path = recording(tmp_path, {0, 4, 1020, 2604}, denied=frozenset({1020}))
    assert main(["modules", "--recorded", str(path)]) == 3
    out = capsys.readouterr().out
    assert "UNKNOWN: could not read 1 of 4 processes" in out and "SeDebugPrivilege" in out
    assert main(["modules", "--recorded", str(path), "--process", "perfmon"]) == 0
    assert "only perfmon" in capsys.readouterr().out


def test_a_process_named_like_a_minimal_one_is_not_exempt_unless_system_started_it() -> None:
    assert loads_no_user_modules(0, "System Idle Process", None)
    assert loads_no_user_modules(88, "Registry", 4)
    assert not loads_no_user_modules(5120, "Registry", 3344)
    assert not loads_no_user_modules(5120, "svchost.exe", 4)


def test_a_scope_with_an_old_copy_fails_and_one_with_no_such_process_is_unknown(
    capsys: pytest.CaptureFixture[str],
) -> None:
    replay = ["modules", "--recorded", str(MEETINGPLACE), "--installed", INSTALLED]
    assert main([*replay, "--process", "MPNotify.exe"]) == 1
    assert "could not read" not in capsys.readouterr().out  # System is out of scope
    assert main([*replay, "--process", "nothing"]) == 3
    assert "no process is named nothing: nothing was scanned" in capsys.readouterr().out


def test_the_inventory_json_keeps_the_count_and_the_advice_and_old_ones_still_load() -> None:
    source = RecordedWindows.load(MEETINGPLACE)
    source.processes[1020] = replace(source.processes[1020], error="denied")  # svchost
    scoped = take_inventory(source, ["MPNotifyPerf.dll"])
    data = scoped.to_dict()
    assert (data["unreadable"], data["sight"]) == (1, "old_copy")
    assert "SeDebugPrivilege" in data["unreadable_advice"]
    view = InventoryView.from_dict(data)
    assert view.unreadable_line() == scoped.unreadable_note()
    old = {
        k: v
        for k, v in data.items()
        if k in ("names", "platform", "scanned", "denied", "vanished", "hits")
    }
    stored_before = InventoryView.from_dict(old)
    assert stored_before.denied == 1
    assert "could not read 1 of 7 processes" in (stored_before.unreadable_line() or "")
    assert InventoryView.from_dict({**old, "denied": 0}).unreadable_line() is None


@pytest.mark.real
def test_an_empty_process_name_is_one_line_and_exit_3() -> None:
    proc = run_cli("modules", "--process", " ", cwd=ROOT, timeout=60)
    assert proc.returncode == 3
    assert proc.stderr.strip() == "notifyprobe: error: --process needs a process name"
