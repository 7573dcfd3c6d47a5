"""Postflight's module check and preflight's files-in-use check on crafted scans: a scan that
could not read every process warns (some read) or is not run (none read), never passes."""

from __future__ import annotations

from pathlib import Path

from fixtures.make_pe import write_dll
from probe.host.inuse import FileUse, Holder, InUse
from probe.host.inventory import Copy, Inventory, ModuleHit, ModuleState
from probe.host.platform import ProcessInfo
from probe.upgrade.checks import Status, exit_code, overall
from probe.upgrade.flight import in_use_checks, module_check
from probe.upgrade.profiles import load_profile

EXCHANGE = load_profile("exchange-sp4")
ADVICE = "run as root, or grant the service CAP_SYS_PTRACE"


def inventory(scanned: int, denied: int, *hits: ModuleHit) -> Inventory:
    return Inventory(
        EXCHANGE.modules,
        (),
        "linux",
        hits,
        scanned=scanned,
        denied=denied,
        vanished=0,
        unreadable_advice=ADVICE,
    )


def hit(root: Path, state: ModuleState) -> ModuleHit:
    path = str(root / "Exchsrvr/BIN/Mtaperf.dll")
    return ModuleHit(
        ProcessInfo(42, "perfmon"), path, "Mtaperf.dll", state, "crafted", Copy(path), Copy(path)
    )


def test_a_module_check_that_read_every_process_passes(tmp_path: Path) -> None:
    check = module_check(EXCHANGE, inventory(60, 0, hit(tmp_path, ModuleState.CURRENT)), tmp_path)
    assert check.status is Status.PASS


def test_some_processes_unreadable_and_none_old_among_the_rest_warns(tmp_path: Path) -> None:
    check = module_check(EXCHANGE, inventory(60, 9, hit(tmp_path, ModuleState.CURRENT)), tmp_path)
    assert check.status is Status.WARN
    assert "1 of the 60 processes read map" in check.reason
    assert "could not read 9 of 69 processes" in check.reason
    assert check.fix.startswith(ADVICE)
    assert exit_code(overall([check])) == 1


def test_no_process_readable_is_not_run_with_the_reason(tmp_path: Path) -> None:
    check = module_check(EXCHANGE, inventory(0, 70), tmp_path)
    assert check.status is Status.NOT_RUN
    assert "could not read 70 of 70 processes" in check.reason and ADVICE in check.reason


def test_an_old_copy_fails_even_when_some_processes_were_unreadable(tmp_path: Path) -> None:
    check = module_check(EXCHANGE, inventory(60, 9, hit(tmp_path, ModuleState.STALE)), tmp_path)
    assert check.status is Status.FAIL
    assert "could not read 9 of 69" in check.reason and check.evidence


def in_use(root: Path, scanned: int, denied: int, held: bool = False) -> InUse:
    path = str(write_dll(root / "Mdbperf.dll", "5.5.0.0"))
    holders = (Holder(7, "perfmon", None, "loaded", path),) if held else ()
    return InUse((FileUse(path, True, holders),), scanned, denied, 0, 0.0, ADVICE)


def test_nobody_holds_the_files_only_passes_when_every_process_was_read(tmp_path: Path) -> None:
    (clean,) = in_use_checks(in_use(tmp_path, 60, 0), EXCHANGE, tmp_path)
    assert clean.status is Status.PASS
    (partial,) = in_use_checks(in_use(tmp_path, 60, 3), EXCHANGE, tmp_path)
    assert partial.status is Status.WARN
    assert "could not read 3 of 63 processes" in partial.reason and partial.fix == ADVICE
    (blind,) = in_use_checks(in_use(tmp_path, 0, 63), EXCHANGE, tmp_path)
    assert blind.status is Status.NOT_RUN


def test_a_file_held_fails_whatever_was_left_unread(tmp_path: Path) -> None:
    first, *_ = in_use_checks(in_use(tmp_path, 60, 3, held=True), EXCHANGE, tmp_path)
    assert first.status is Status.FAIL and "could not read 3 of 63" in first.reason
