"""Files in use, found by identity in real processes that map or open real files (Linux /proc)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from fixtures.hold_module import held
from probe.host.inuse import files_in_use
from probe.host.platform import local_holders

pytestmark = pytest.mark.linux_only


def files(tmp_path: Path, *names: str) -> list[Path]:
    paths = [tmp_path / name for name in names]
    for path in paths:
        path.write_bytes(b"MZ" + path.name.encode() * 64)
    return paths


@pytest.mark.real
def test_a_mapped_file_is_held_loaded_and_an_open_one_held_open(tmp_path: Path) -> None:
    dll, template, free = files(tmp_path, "Mtaperf.dll", "notify.tpl", "free.dll")
    with held(dll, opened=(template,)) as holder:
        usage = files_in_use(local_holders(), [str(dll), str(template), str(free)])
    by_path = {f.path: f for f in usage.files}
    # Python's mmap keeps a duplicate descriptor, so the mapped file is open as well.
    assert {(h.pid, h.how) for h in by_path[str(dll)].holders} >= {(holder.pid, "loaded")}
    assert [(h.pid, h.how) for h in by_path[str(template)].holders] == [(holder.pid, "open")]
    assert not by_path[str(free)].in_use
    assert [f.path for f in usage.held] == [str(dll), str(template)]
    assert usage.scanned > 0


@pytest.mark.real
def test_a_file_reached_through_another_name_is_the_same_file(tmp_path: Path) -> None:
    (dll,) = files(tmp_path, "Perfdsa.dll")
    alias = tmp_path / "link-to-perfdsa.dll"
    os.link(dll, alias)
    with held(dll) as holder:
        usage = files_in_use(local_holders(), [str(alias)])
    (use,) = usage.files
    assert use.path == str(alias) and {h.pid for h in use.holders} == {holder.pid}
    assert {h.path for h in use.holders} == {str(dll)}  # the holder's own name for it


def test_a_missing_file_is_reported_absent_and_nothing_is_scanned_for_it(tmp_path: Path) -> None:
    usage = files_in_use(local_holders(), [str(tmp_path / "gone.dll")])
    (use,) = usage.files
    assert (use.present, use.in_use) == (False, False)
    assert usage.scanned == 0  # nothing to look for: no process is read


def test_a_path_given_twice_is_reported_once(tmp_path: Path) -> None:
    (dll,) = files(tmp_path, "Msefperf.dll")
    usage = files_in_use(local_holders(), [str(dll), str(dll)])
    assert [f.path for f in usage.files] == [str(dll)]


@pytest.mark.real
def test_the_json_names_each_holder_with_its_process(tmp_path: Path) -> None:
    (dll,) = files(tmp_path, "Mdbperf.dll")
    with held(dll) as holder:
        data = files_in_use(local_holders(), [str(dll)]).to_dict()
    (entry,) = data["files"]
    (loaded,) = [h for h in entry["holders"] if (h["pid"], h["how"]) == (holder.pid, "loaded")]
    assert loaded["process"] and loaded["exe"] == os.path.realpath(sys.executable)
    assert set(data) == {"scanned", "denied", "vanished", "unreadable_advice", "elapsed_s", "files"}
    assert data["unreadable_advice"] is None or data["denied"]
