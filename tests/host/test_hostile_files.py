"""What a local user can plant where the probe reads: each planted thing, for real (a FIFO, a
symbolic link to a device, a sparse file of gigabytes), costs one bounded read and a reason."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from fixtures.hold_module import held
from fixtures.make_pe import build_dll, write_dll
from probe.errors import UsageError
from probe.files import UnsafeFileError, read_host_file
from probe.host.pe import describe
from probe.upgrade.drift import Drift, compare_trees
from tests.cli import run_cli

pytestmark = pytest.mark.linux_only

ROOT = Path(__file__).resolve().parents[2]
NAME = "MPNotifyPerf.dll"


def reason(path: Path, limit: int = 2**20, *, follow_link: bool = False) -> str:
    with pytest.raises(UnsafeFileError) as caught:
        read_host_file(path, limit, follow_link=follow_link)
    return str(caught.value.strerror)


def test_a_fifo_without_a_writer_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / NAME
    os.mkfifo(fifo)
    assert reason(fifo) == "not a regular file (a FIFO)"


def test_a_symbolic_link_is_not_followed(tmp_path: Path) -> None:
    link = tmp_path / NAME
    link.symlink_to("/dev/zero")
    assert reason(link) == "a symbolic link, not read"


def test_a_followed_link_to_a_device_is_refused_before_any_read(tmp_path: Path) -> None:
    link = tmp_path / "password"
    link.symlink_to("/dev/zero")
    assert reason(link, follow_link=True) == "not a regular file (a character device)"


def test_a_sparse_file_over_the_cap_is_refused_by_its_size(tmp_path: Path) -> None:
    sparse = tmp_path / NAME
    with sparse.open("wb") as handle:
        handle.truncate(3 * 2**30)
    assert reason(sparse, limit=2**20).startswith("too large (3221225472 bytes")


def test_a_regular_file_within_the_cap_is_read_whole(tmp_path: Path) -> None:
    dll = write_dll(tmp_path / NAME, "4.3.0.12")
    assert read_host_file(dll) == dll.read_bytes()


@pytest.mark.real
def test_the_scan_goes_on_when_the_module_path_became_a_fifo(tmp_path: Path) -> None:
    """Map a module, delete it, put a FIFO at its path: the scan still ends, with a reason."""
    dll = write_dll(tmp_path / NAME, "1.4.0.7")
    with held(dll) as holder:
        dll.unlink()
        os.mkfifo(dll)
        proc = run_cli(
            "modules", "--name", NAME, "--installed", str(dll), "--json", "-", cwd=ROOT, timeout=30
        )
    assert proc.returncode in (0, 1), proc.stderr
    hits = [h for h in json.loads(proc.stdout)["hits"] if h["pid"] == holder.pid]
    assert len(hits) == 1
    assert "not a regular file (a FIFO)" in json.dumps(hits[0])


def test_a_password_file_that_is_a_fifo_is_a_usage_error(tmp_path: Path) -> None:
    from probe.delivery.credentials import password_from_file

    fifo = tmp_path / "password"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="not a regular file"):
        password_from_file(fifo)


def test_drift_records_planted_files_and_case_twins_instead_of_dropping_them(
    tmp_path: Path,
) -> None:
    default, relocated = tmp_path / "default", tmp_path / "relocated"
    for folder in (default, relocated):
        folder.mkdir()
        write_dll(folder / "Msmcon.dll", "5.5.2653.0")
    write_dll(default / "x.dll", "1.0.0.0")
    write_dll(relocated / "x.dll", "1.0.0.0")
    write_dll(relocated / "X.DLL", "0.9.0.0")
    os.mkfifo(relocated / "pipe.dll")
    write_dll(default / "pipe.dll", "1.0.0.0")
    with (relocated / "huge.dll").open("wb") as handle:
        handle.truncate(3 * 2**30)
    states = {d.name.lower(): d for d in compare_trees(default, relocated)}
    assert states["msmcon.dll"].state is Drift.IDENTICAL
    assert states["x.dll"].state is Drift.UNCHECKED
    assert states["pipe.dll"].state is Drift.UNCHECKED
    assert states["huge.dll"].state is Drift.UNCHECKED
    case_clash, fifo = states["x.dll"].relocated, states["pipe.dll"].relocated
    assert case_clash is not None and "differ only in case" in (case_clash.problem or "")
    assert fifo is not None and "FIFO" in (fifo.problem or "")


def test_drift_over_deeply_nested_folders_is_a_clear_error(tmp_path: Path) -> None:
    from probe.errors import ProbeError

    default, relocated = tmp_path / "default", tmp_path / "relocated"
    default.mkdir()
    relocated.mkdir()
    fd = os.open(relocated, os.O_RDONLY)
    for _ in range(1200):  # by descriptor: pathlib's own recursion would give out first
        os.mkdir("d", dir_fd=fd)
        inner = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.close(fd)
    try:
        with pytest.raises(ProbeError, match="deeper than"):
            compare_trees(default, relocated)
    finally:
        remove_chain(relocated)


def remove_chain(top: Path) -> None:
    """Remove a deep chain top/d/d/… one level at a time (pytest's own cleanup recurses)."""
    while (top / "d").exists():
        if (top / "d" / "d").exists():
            (top / "d" / "d").rename(top / "lifted")
            (top / "d").rmdir()
            (top / "lifted").rename(top / "d")
        else:
            (top / "d").rmdir()


def _with_resource_fan_out(dll: bytes, entries: int) -> bytes:
    """Raise the root resource directory's id-entry count so that its table runs over the
    rest of the file: the shape of a hostile fan-out, read by a full resource parse."""
    import pefile

    pe = pefile.PE(data=dll, fast_load=True)
    rva = pe.OPTIONAL_HEADER.DATA_DIRECTORY[2].VirtualAddress
    at = pe.get_offset_from_rva(rva)
    patched = bytearray(dll)
    named, ids = struct.unpack_from("<HH", patched, at + 12)
    struct.pack_into("<HH", patched, at + 12, named, ids + entries)
    return bytes(patched) + bytes(8 * entries)


def test_a_version_is_read_along_one_path_of_the_resource_tree() -> None:
    dll = build_dll("4.3.0.12", name=NAME)
    fanned = _with_resource_fan_out(dll, 30_000)
    assert describe(dll).file_version == "4.3.0.12"
    assert describe(fanned).file_version == "4.3.0.12"
