"""The module inventory on Linux, for real: a helper process maps a DLL, an "upgrade" replaces
it on disk, and `notifyprobe modules` must see the old copy still loaded."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import psutil
import pytest

from fixtures.hold_module import held, holder_name
from fixtures.make_pe import build_dll, write_dll
from probe.host.inventory import ModuleState, take_inventory
from probe.host.pe import ModuleVersion
from probe.host.platform import (
    MappedModule,
    NameMatcher,
    ProcessDenied,
    ProcessInfo,
    ProcessVanished,
)
from probe.host.platform.linux import LinuxModules, parse_maps_line
from tests.cli import run_cli

pytestmark = pytest.mark.linux_only

ROOT = Path(__file__).resolve().parents[2]
NAME = "MPNotifyPerf.dll"


def install(path: Path, version: str) -> None:
    """Replace a file the way an installer does: write a temporary file, then rename over."""
    temp = path.with_name(path.name + ".new")
    temp.write_bytes(build_dll(version, name=path.name))
    os.replace(temp, path)


def modules_json(*args: str) -> dict[str, Any]:
    proc = run_cli("modules", *args, "--json", "-", cwd=ROOT, timeout=60)
    assert proc.returncode in (0, 1), proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


def hit_for(report: dict[str, Any], pid: int) -> dict[str, Any]:
    hits: list[dict[str, Any]] = [h for h in report["hits"] if h["pid"] == pid]
    assert len(hits) == 1, report["hits"]
    return hits[0]


@pytest.fixture
def dll(tmp_path: Path) -> Path:
    return write_dll(tmp_path / NAME, "1.4.0.7")


@pytest.mark.real
def test_replaced_dll_still_loaded_is_stale_with_both_versions(dll: Path) -> None:
    with held(dll) as holder:
        install(dll, "2.0.1.3")
        report = modules_json("--name", NAME, "--installed", str(dll))
    hit = hit_for(report, holder.pid)
    assert hit["state"] == "stale"
    assert hit["loaded_version"].startswith("1.")
    assert hit["installed_version"].startswith("2.")
    assert hit["loaded_sha256"] != hit["installed_sha256"]
    assert hit["mapped_path"] == str(dll)
    assert hit["process"] and hit["started_at"] > 0
    assert report["scanned"] > 1


@pytest.mark.real
def test_loaded_dll_removed_from_disk_is_deleted(dll: Path) -> None:
    with held(dll) as holder:
        install(dll, "2.0.1.3")
        dll.unlink()
        report = modules_json("--name", NAME, "--installed", str(dll))
    hit = hit_for(report, holder.pid)
    assert hit["state"] == "deleted"
    assert hit["loaded_version"] == "1.4.0.7"
    assert hit["installed_version"] is None


@pytest.mark.real
def test_loaded_dll_moved_aside_to_old_is_renamed(dll: Path) -> None:
    with held(dll, executable=False) as holder:
        dll.rename(dll.with_name(NAME + ".old"))
        install(dll, "2.0.1.3")
        report = modules_json("--name", NAME, "--installed", str(dll))
    hit = hit_for(report, holder.pid)
    assert hit["state"] == "renamed"
    assert hit["mapped_path"].endswith(".old")
    assert (hit["loaded_version"], hit["installed_version"]) == ("1.4.0.7", "2.0.1.3")


@pytest.mark.real
def test_untouched_dll_is_current_and_exit_code_is_zero(dll: Path) -> None:
    with held(dll, own_name=True) as holder:
        # Scoped to this holder, by a name made of its pid: a host may keep another process
        # unreadable even to root (this sandbox's init), and a scan that could not read every
        # process is not exit 0; another process (a parallel test, another checkout's suite) may
        # hold an old copy of a same-named module, and that would be exit 1.
        name = holder_name(holder)
        assert psutil.Process(holder.pid).name() == name
        proc = run_cli(
            "modules", "--name", "mpnotify*.DLL", "--process", name, cwd=ROOT, timeout=60
        )
    assert proc.returncode == 0, proc.stderr
    assert f"pid {holder.pid}" in proc.stdout
    assert "current" in proc.stdout


@pytest.mark.real
def test_without_map_files_access_state_is_still_right_and_version_unknown(dll: Path) -> None:
    def no_privilege(path: str, flags: int) -> int:
        raise PermissionError(13, "Permission denied", path)

    source = LinuxModules(opener=no_privilege)
    with held(dll) as holder:
        install(dll, "2.0.1.3")
        inventory = take_inventory(source, [NAME], [str(dll)])
    (hit,) = [h for h in inventory.hits if h.process.pid == holder.pid]
    assert hit.state is ModuleState.STALE
    assert hit.loaded.version is None
    assert "map_files" in (hit.loaded.error or "")
    assert hit.installed.version and hit.installed.version.file_version == "2.0.1.3"


@pytest.mark.real
def test_executable_mapping_and_other_names_are_told_apart(tmp_path: Path) -> None:
    ours = write_dll(tmp_path / NAME, "1.0.0.0")
    other = write_dll(tmp_path / "Mdbperf.dll", "5.5.0.0")
    try:
        with held(ours, other, executable=True) as holder:
            inventory = take_inventory(LinuxModules(), ["mdbperf.dll"])
    except RuntimeError:
        pytest.skip("this filesystem refuses executable mappings")
    (hit,) = [h for h in inventory.hits if h.process.pid == holder.pid]
    assert hit.mapped_path == str(other)
    assert hit.state is ModuleState.CURRENT


def test_maps_line_with_spaces_and_deleted_marker_is_parsed() -> None:
    line = b"7f00a000-7f00b000 r--p 00000000 fe:01 42    /opt/Shared Components/x.dll (deleted)"
    start, end, dev, inode, path = parse_maps_line(line) or (0, 0, 0, 0, "")
    assert (start, end, inode) == (0x7F00A000, 0x7F00B000, 42)
    assert (os.major(dev), os.minor(dev)) == (0xFE, 1)
    assert path == "/opt/Shared Components/x.dll (deleted)"
    assert parse_maps_line(b"7f00a000-7f00b000 rw-p 00000000 00:00 0  [heap]") is None
    assert parse_maps_line(b"7f00a000-7f00b000 rw-p 00000000 00:00 0") is None


def test_names_match_case_insensitively_with_globs_and_rename_suffixes() -> None:
    matcher = NameMatcher(["MPNotifyPerf.dll", "*perf.DLL"])
    exact, glob = matcher.match("mpnotifyperf.DLL"), matcher.match("Mtaperf.dll")
    assert exact is not None and exact.pattern == "MPNotifyPerf.dll"
    assert glob is not None and glob.pattern == "*perf.DLL"
    renamed = matcher.match("MPNotifyPerf.dll.old")
    assert renamed and renamed.renamed and renamed.canonical == "MPNotifyPerf.dll"
    assert matcher.match("MPNotifyPerf.dll.manifest") is None
    assert matcher.could_match(b"/x/mtaperf.dll") and not matcher.could_match(b"/x/libc.so.6")
    assert NameMatcher(["*"]).literals is None


class FlakySource:
    """A platform where some processes refuse to be read or exit mid-scan."""

    platform = "linux"
    unreadable_advice = "run as root"
    loaded_copy_advice = "run as root"

    def __init__(self, base: LinuxModules):
        self.base = base

    def pids(self) -> list[int]:
        return [1, 2, 3]

    def mapped_modules(self, pid: int, matcher: NameMatcher) -> list[MappedModule]:
        if pid == 1:
            raise ProcessDenied(pid)
        if pid == 2:
            raise ProcessVanished(pid)
        return []

    def process_info(self, pid: int) -> ProcessInfo:
        return ProcessInfo(pid, "x")

    def read_loaded_copy(self, module: MappedModule) -> ModuleVersion:
        raise AssertionError("no hits")

    def read_file(self, path: str) -> ModuleVersion:
        raise AssertionError("no hits")

    def same_path(self, a: str, b: str) -> bool:
        return a == b

    def basename(self, path: str) -> str:
        return self.base.basename(path)

    def dirname(self, path: str) -> str:
        return self.base.dirname(path)

    def join(self, directory: str, name: str) -> str:
        return self.base.join(directory, name)


def test_unreadable_and_vanished_processes_are_counted_not_fatal() -> None:
    inventory = take_inventory(FlakySource(LinuxModules()), [NAME])
    assert (inventory.scanned, inventory.denied, inventory.vanished) == (1, 1, 1)
    assert inventory.hits == ()


@pytest.mark.real
def test_a_bad_name_is_a_usage_error() -> None:
    proc = run_cli("modules", "--name", " ", cwd=ROOT, timeout=60)
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("notifyprobe: error:")
