"""Reading module versions from bytes: PE fixed version numbers, ELF soname, plain hashes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pefile
import pytest

from fixtures.make_pe import build_dll, parse_version, write_dll
from probe.host.pe import describe, elf_soname, pe_versions


def test_generated_dll_is_a_pe_dll_that_pefile_fully_parses() -> None:
    data = build_dll("1.2.3.4", "1.2.0.0")
    pe = pefile.PE(data=data)
    assert pe.is_dll()
    fixed = pe.VS_FIXEDFILEINFO[0]
    assert (fixed.FileVersionMS, fixed.FileVersionLS) == (0x00010002, 0x00030004)
    strings = {
        key: value
        for info in pe.FileInfo[0]
        for table in getattr(info, "StringTable", [])
        for key, value in table.entries.items()
    }
    assert strings[b"FileVersion"] == b"1.2.3.4"
    assert strings[b"ProductVersion"] == b"1.2.0.0"
    assert strings[b"OriginalFilename"] == b"MPNotifyPerf.dll"


def test_file_and_product_versions_come_from_the_fixed_block() -> None:
    info = describe(build_dll("4.3.0.12", "4.3.0.0"))
    assert info.kind == "pe"
    assert info.file_version == "4.3.0.12"
    assert info.product_version == "4.3.0.0"
    assert info.label == "4.3.0.12"


def test_hash_and_size_identify_each_copy() -> None:
    data = build_dll("2.0.0.1")
    info = describe(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.size == len(data)
    assert describe(build_dll("2.0.0.2")).sha256 != info.sha256


def test_damaged_pe_gives_no_version_but_still_a_hash() -> None:
    info = describe(b"MZ" + b"\0" * 30)
    assert info.kind == "pe"
    assert info.file_version is None
    assert pe_versions(build_dll("1.0")[:300]) is None


def test_non_pe_file_is_described_by_hash_only() -> None:
    info = describe(b"plain data")
    assert (info.kind, info.file_version, info.soname) == ("data", None, None)
    assert info.label.startswith("sha256:")


@pytest.mark.real
@pytest.mark.linux_only
def test_elf_shared_object_reports_its_soname() -> None:
    import ctypes.util

    name = ctypes.util.find_library("c")
    candidates = (
        [
            p
            for d in ("/lib", "/usr/lib", "/lib64", "/usr/lib64")
            for p in Path(d).rglob(name or "libc.so.6")
        ]
        if name
        else []
    )
    if not candidates:
        pytest.skip("libc not found")
    data = candidates[0].read_bytes()
    assert describe(data).kind == "elf"
    assert elf_soname(data) == name


def test_truncated_elf_has_no_soname() -> None:
    assert elf_soname(b"\x7fELF\x02\x01\x01" + b"\0" * 20) is None


def test_version_parts_must_fit_sixteen_bits() -> None:
    assert parse_version("5") == (5, 0, 0, 0)
    with pytest.raises(ValueError):
        parse_version("1.70000")


def test_fixture_writer_names_the_dll_after_its_file(tmp_path: Path) -> None:
    path = write_dll(tmp_path / "Mtaperf.dll", "5.5.2653.0")
    assert describe(path.read_bytes()).file_version == "5.5.2653.0"
    assert b"M\0t\0a\0p\0e\0r\0f\0.\0d\0l\0l" in path.read_bytes()
