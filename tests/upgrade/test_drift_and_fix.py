"""Relocated drift (document 002) and the fixes with their undo journal, on temporary trees."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fixtures.hold_module import held
from fixtures.make_pe import write_dll
from probe.errors import ProbeError
from probe.upgrade.drift import Drift, compare_trees
from probe.upgrade.fix import apply, plan_sync, undo
from tests.upgrade.helpers import (
    REGISTRY,
    assert_one_line_error,
    check,
    probe,
    probe_json,
    tree_hash,
)

DEFAULT_AS = r"C:\exchsrvr\connect\msmcon\bin"
RELOCATED_AS = r"D:\exchsrvr\connect\msmcon\bin"


def bin_pair(tmp_path: Path) -> tuple[Path, Path]:
    """Default copy updated by the service pack; relocated copy left behind."""
    default, relocated = tmp_path / "c" / "bin", tmp_path / "d" / "bin"
    default.mkdir(parents=True)
    relocated.mkdir(parents=True)
    for name in (
        "msmi.exe",
        "msmiperf.dll",
        "msmimsg.dll",
        "pcmta.exe",
        "pcmtaprf.dll",
        "pcmtamsg.dll",
    ):
        write_dll(default / name, "5.5.2650.0")
        write_dll(relocated / name, "5.5.2650.0")
    write_dll(relocated / "msmi.exe", "5.5.2448.0")  # the service pack missed it
    write_dll(default / "msmcli.dll", "5.5.2650.0")  # new in the service pack
    write_dll(relocated / "local.dll", "1.0.0.0")  # only on the relocated side
    (default / "readme.txt").write_text("new notes")
    (relocated / "readme.txt").write_text("old notes")
    return default, relocated


def drift_args(default: Path, relocated: Path, *extra: str) -> tuple[str, ...]:
    return (
        "drift",
        "--default",
        str(default),
        "--relocated",
        str(relocated),
        "--default-as",
        DEFAULT_AS,
        "--relocated-as",
        RELOCATED_AS,
        *extra,
    )


@pytest.mark.real
def test_drift_finds_an_older_pe_in_the_relocated_copy(tmp_path: Path) -> None:
    default, relocated = bin_pair(tmp_path)
    states = {d.name: d.state for d in compare_trees(default, relocated)}
    assert states == {
        "local.dll": Drift.EXTRA,
        "msmcli.dll": Drift.MISSING,
        "msmi.exe": Drift.OLDER,
        "msmimsg.dll": Drift.IDENTICAL,
        "msmiperf.dll": Drift.IDENTICAL,
        "pcmta.exe": Drift.IDENTICAL,
        "pcmtamsg.dll": Drift.IDENTICAL,
        "pcmtaprf.dll": Drift.IDENTICAL,
        "readme.txt": Drift.DIFFERS,
    }
    code, report = probe_json("drift", "--default", str(default), "--relocated", str(relocated))
    assert code == 2
    older = check(report, "bin: msmi.exe")
    assert older["status"] == "fail" and "5.5.2448.0 vs default 5.5.2650.0" in older["reason"]
    assert "sync-relocated" in older["fix"]
    assert check(report, "registry")["status"] == "not_run"


@pytest.mark.real
def test_drift_reads_a_utf16_export_and_flags_the_value_on_the_default_copy(
    tmp_path: Path,
) -> None:
    default, relocated = bin_pair(tmp_path)
    code, report = probe_json(
        *drift_args(default, relocated, "--registry", str(REGISTRY / "msmail-relocated.reg"))
    )
    assert code == 2
    image = check(report, "registry: MSExchangeMSMI\\ImagePath")
    assert image["status"] == "fail" and "default copy" in image["reason"]
    assert DEFAULT_AS + r"\msmi.exe" in image["reason"]
    for name in (
        "MSExchangeMSMI\\Performance\\Library",
        "EventLog\\Application\\MSExchangeMSMI\\EventMessageFile",
        "EventLog\\Application\\MSExchangePCMTA\\CategoryMessageFile",
        "MSExchangePCMTA\\ImagePath",
    ):
        assert check(report, f"registry: {name}")["status"] == "pass", name
    assert check(report, "share: Maildat$")["status"] == "pass"


@pytest.mark.real
def test_ansi_export_without_the_share_fails_the_share_check(tmp_path: Path) -> None:
    default, relocated = bin_pair(tmp_path)
    code, report = probe_json(
        *drift_args(default, relocated, "--registry", str(REGISTRY / "msmail-relocated-ansi.reg"))
    )
    share = check(report, "share: Maildat$")
    assert share["status"] == "fail" and "not shared" in share["reason"]
    assert check(report, "registry: MSExchangeMSMI\\ImagePath")["status"] == "pass"
    assert check(report, "registry: MSExchangePCMTA\\ImagePath")["status"] == "warn"
    assert code == 2


@pytest.mark.real
def test_sync_dry_run_changes_nothing(tmp_path: Path) -> None:
    default, relocated = bin_pair(tmp_path)
    before = tree_hash(tmp_path)
    proc = probe("fix", "sync-relocated", "--default", str(default), "--relocated", str(relocated))
    assert proc.returncode == 0, proc.stderr
    assert "dry run" in proc.stdout and "msmi.exe" in proc.stdout
    assert tree_hash(tmp_path) == before


@pytest.mark.real
def test_sync_apply_then_undo_restores_byte_identical_trees(tmp_path: Path) -> None:
    default, relocated = bin_pair(tmp_path)
    before_default, before_relocated = tree_hash(default), tree_hash(relocated)
    journal = tmp_path / "journal.json"
    backup = tmp_path / "d" / "bin.backup"
    proc = probe(
        "fix",
        "sync-relocated",
        "--default",
        str(default),
        "--relocated",
        str(relocated),
        "--apply",
        "--journal",
        str(journal),
        "--backup-dir",
        str(backup),
    )
    assert proc.returncode == 0, proc.stderr
    assert tree_hash(backup) == before_relocated
    after = tree_hash(relocated)
    for name in ("msmi.exe", "msmcli.dll", "readme.txt"):
        assert after[name] == before_default[name]
    assert after["local.dll"] == before_relocated["local.dll"]  # extra files are left alone
    code, report = probe_json("drift", "--default", str(default), "--relocated", str(relocated))
    assert code == 0 and check(report, "bin copies")["status"] == "pass"
    proc = probe("fix", "undo", str(journal))
    assert proc.returncode == 0, proc.stderr
    assert tree_hash(relocated) == before_relocated and tree_hash(default) == before_default
    assert json.loads(journal.read_text())["state"] == "undone"
    assert_one_line_error(probe("fix", "undo", str(journal)), "already undone")


@pytest.mark.real
def test_failure_half_way_leaves_each_file_old_or_new_and_undo_restores(tmp_path: Path) -> None:
    default, relocated = bin_pair(tmp_path)
    write_dll(default / "msmt.dll", "5.5.2650.0")
    (relocated / "msmt.dll").mkdir()  # a folder where a file must go: the third copy fails
    before, new = tree_hash(relocated), tree_hash(default)
    journal = tmp_path / "journal.json"
    proc = probe(
        "fix",
        "sync-relocated",
        "--default",
        str(default),
        "--relocated",
        str(relocated),
        "--apply",
        "--journal",
        str(journal),
    )
    assert_one_line_error(proc, "step 4 of 5", "fix undo")
    steps = json.loads(journal.read_text())["steps"]
    assert [s["status"] for s in steps] == ["done", "done", "done", "failed", "planned"]
    after = tree_hash(relocated)
    assert after["msmcli.dll"] == new["msmcli.dll"] and after["msmi.exe"] == new["msmi.exe"]
    assert after["readme.txt"] == before["readme.txt"]  # not reached: still the old file
    assert all(after[name] in (before.get(name), new.get(name)) for name in after)
    assert not list(relocated.glob("*.notifyprobe-tmp"))
    proc = probe("fix", "undo", str(journal))
    assert proc.returncode == 0, proc.stderr
    assert tree_hash(relocated) == before


def test_injected_failure_after_some_copies_is_undone_exactly(tmp_path: Path) -> None:
    default, relocated = bin_pair(tmp_path)
    before = tree_hash(relocated)
    plan = plan_sync(default, relocated, compare_trees(default, relocated))
    assert [s.op for s in plan.steps] == ["backup", "replace", "replace", "replace"]
    with pytest.raises(ProbeError, match="step 4 of 4"):
        apply(plan, tmp_path / "j.json", fail_before=4)
    mid = tree_hash(relocated)
    old_or_new = {name: (before.get(name), tree_hash(default).get(name)) for name in mid}
    assert all(mid[name] in pair for name, pair in old_or_new.items() if name != "local.dll")
    assert mid != before
    undo(tmp_path / "j.json")
    assert tree_hash(relocated) == before


@pytest.mark.real
def test_undo_refuses_when_a_file_changed_after_the_fix(tmp_path: Path) -> None:
    default, relocated = bin_pair(tmp_path)
    journal = tmp_path / "j.json"
    apply(plan_sync(default, relocated, compare_trees(default, relocated)), journal)
    (relocated / "msmi.exe").write_bytes(b"changed by hand")
    snapshot = tree_hash(relocated)
    assert_one_line_error(probe("fix", "undo", str(journal)), "changed after the fix")
    assert tree_hash(relocated) == snapshot


@pytest.mark.real
@pytest.mark.linux_only
def test_rename_in_use_dry_run_apply_and_undo(tmp_path: Path) -> None:
    folder = tmp_path / "Exchsrvr" / "BIN"
    folder.mkdir(parents=True)
    for name in ("Mdbperf.dll", "Msefperf.dll", "Mtaperf.dll", "Perfdsa.dll"):
        write_dll(folder / name, "5.5.2448.0")
    before = tree_hash(tmp_path)
    journal = tmp_path.parent / f"{tmp_path.name}-journal.json"
    base = ("fix", "rename-in-use", "--profile", "exchange-sp4", "--root", str(tmp_path))
    with held(folder / "Perfdsa.dll"):
        dry = probe(*base)
        assert dry.returncode == 0 and "Perfdsa.dll.old" in dry.stdout
        assert tree_hash(tmp_path) == before
        done = probe(*base, "--apply", "--journal", str(journal))
        assert done.returncode == 0, done.stderr
        assert (folder / "Perfdsa.dll.old").exists() and not (folder / "Perfdsa.dll").exists()
        assert (folder / "Mdbperf.dll").exists()  # not in use: not renamed
    assert probe("fix", "undo", str(journal)).returncode == 0
    assert tree_hash(tmp_path) == before


@pytest.mark.real
def test_bad_drift_and_fix_input_are_one_line_errors(tmp_path: Path) -> None:
    default, relocated = bin_pair(tmp_path)
    assert_one_line_error(
        probe("drift", "--default", str(tmp_path / "nope"), "--relocated", str(relocated)),
        "does not exist",
    )
    (tmp_path / "file").write_text("x")
    assert_one_line_error(
        probe("drift", "--default", str(tmp_path / "file"), "--relocated", str(relocated)),
        "is not a folder",
    )
    assert_one_line_error(
        probe(*drift_args(default, relocated, "--registry", str(REGISTRY / "broken.reg"))),
        "broken.reg:4",
    )
    garbage = tmp_path / "garbage.reg"
    garbage.write_bytes(bytes(range(256)) * 4)
    assert_one_line_error(
        probe(*drift_args(default, relocated, "--registry", str(garbage))), "garbage.reg"
    )
    assert_one_line_error(
        probe(*drift_args(default, relocated, "--registry", str(tmp_path))),
        "cannot read registry export",
    )
    assert_one_line_error(
        probe(
            "drift",
            "--default",
            str(default),
            "--relocated",
            str(relocated),
            "--registry",
            str(REGISTRY / "msmail-relocated.reg"),
        ),
        "--relocated-as",
    )
    assert_one_line_error(probe("fix", "undo", str(tmp_path / "none.json")), "cannot read journal")
    assert_one_line_error(probe("fix", "undo", str(garbage)), "not valid JSON")
    if hasattr(os, "mkfifo"):
        fifo = relocated / "pipe"
        os.mkfifo(fifo)  # skipped by the tree reader: reading it would block
        code, _ = probe_json("drift", "--default", str(default), "--relocated", str(relocated))
        assert code == 2
