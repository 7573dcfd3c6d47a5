"""The Windows path of the inventory, driven by recorded inventories (fixtures/windows)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from probe.cli import main
from probe.host.inventory import Copy, Inventory, ModuleHit, ModuleState, take_inventory
from probe.host.platform import NameMatcher
from probe.host.platform.windows import RecordedWindows, dos_path, modules_from_paths

WINDOWS = Path(__file__).resolve().parents[2] / "fixtures" / "windows"
MEETINGPLACE = WINDOWS / "meetingplace-gateway.json"
EXCHANGE = WINDOWS / "exchange-sp4.json"
INSTALLED = r"D:\Latitude\Shared Components\MeetingPlace Notification Gateway\MPNotifyPerf.dll"
DEVICES = {r"\Device\HarddiskVolume1": "C:", r"\Device\HarddiskVolume12": "F:"}


def test_device_paths_become_drive_paths() -> None:
    assert dos_path(r"\Device\HarddiskVolume1\WINDOWS\x.dll", DEVICES) == r"C:\WINDOWS\x.dll"
    assert dos_path(r"\device\harddiskvolume12\y.dll", DEVICES) == r"F:\y.dll"
    assert dos_path(r"\Device\HarddiskVolume3\z.dll", DEVICES) == r"\Device\HarddiskVolume3\z.dll"
    assert dos_path(r"\\?\C:\a.dll", DEVICES) == r"C:\a.dll"
    assert dos_path(r"C:\a.dll", DEVICES) == r"C:\a.dll"


def test_only_matching_images_are_kept_once_each() -> None:
    paths = [
        r"\Device\HarddiskVolume1\x\MPNotifyPerf.dll",
        r"\Device\HarddiskVolume1\X\mpnotifyperf.DLL",
        r"\Device\HarddiskVolume1\x\other.dll",
    ]
    found = modules_from_paths(7, paths, NameMatcher(["MPNotifyPerf.dll"]), DEVICES, bool)
    assert [m.path for m in found] == [r"C:\x\MPNotifyPerf.dll"]
    assert found[0].same_file is True


def by_pid(inventory: Inventory) -> dict[int, ModuleHit]:
    return {h.process.pid: h for h in inventory.hits}


def file_version(copy: Copy) -> str | None:
    """The file version of a copy the test knows was read."""
    assert copy.version is not None, f"{copy} was not read"
    return copy.version.file_version


def test_old_dll_loaded_from_the_previous_install_is_stale() -> None:
    source = RecordedWindows.load(MEETINGPLACE)
    inventory = take_inventory(source, ["MPNotifyPerf.dll"], [INSTALLED])
    hits = by_pid(inventory)
    wmi = hits[1876]
    assert wmi.state is ModuleState.STALE
    assert file_version(wmi.loaded) == "4.3.0.12"
    assert (file_version(wmi.installed) or "").startswith("5.0.0.")
    assert wmi.mapped_path.startswith("C:\\Latitude")
    assert wmi.process.name == "wmiprvse.exe" and wmi.process.started_at == 1104221000.5
    assert hits[2210].state is ModuleState.STALE
    assert hits[2480].state is ModuleState.RENAMED
    assert hits[2604].state is ModuleState.CURRENT
    # System Idle Process and System are denied to everyone and load no DLL: read as empty
    assert (inventory.scanned, inventory.denied, inventory.vanished) == (7, 0, 1)
    assert 1020 not in hits


def test_exchange_perf_dlls_renamed_to_old_and_still_loaded() -> None:
    source = RecordedWindows.load(EXCHANGE)
    names = ["Mdbperf.dll", "Msefperf.dll", "Mtaperf.dll", "Perfdsa.dll"]
    inventory = take_inventory(source, names)
    renamed = [h for h in inventory.hits if h.process.pid == 188]
    assert len(renamed) == 4
    assert {h.state for h in renamed} == {ModuleState.RENAMED}
    assert {file_version(h.installed) for h in renamed} == {"5.5.2653.13"}
    (mad,) = [h for h in inventory.hits if h.process.pid == 240]
    assert mad.state is ModuleState.CURRENT


def test_modules_command_replays_a_recorded_inventory_as_json(capsys) -> None:
    code = main(
        ["modules", "--recorded", str(MEETINGPLACE), "--installed", INSTALLED, "--json", "-"]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 1
    assert report["platform"] == "windows"
    states = {h["pid"]: h["state"] for h in report["hits"]}
    assert states == {1876: "stale", 2210: "stale", 2480: "renamed", 2604: "current"}
    stale = next(h for h in report["hits"] if h["pid"] == 1876)
    assert (stale["loaded_version"], stale["installed_version"]) == ("4.3.0.12", "5.0.0.41")


def test_broken_recording_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"processes": []}')
    assert main(["modules", "--recorded", str(bad)]) == 3
    assert "cannot load recorded inventory" in capsys.readouterr().err


@pytest.mark.parametrize("fixture", sorted(WINDOWS.glob("*.json")))
def test_every_recorded_inventory_loads(fixture: Path) -> None:
    assert RecordedWindows.load(fixture).pids()
