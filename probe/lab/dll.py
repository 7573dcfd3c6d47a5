"""Stand-in DLLs for the lab: minimal, valid PE32 files whose only content is a version resource.

The real modules (MPNotifyPerf.dll and friends) cannot be shipped, yet the demo and the tests
must show an old copy loaded while a newer one is installed. These files have one `.rsrc`
section holding RT_VERSION (VS_VERSIONINFO, VS_FIXEDFILEINFO, a StringFileInfo table) and no
code at all: nothing in them could run. `pefile` parses them like any DLL.
"""

from __future__ import annotations

import struct
from pathlib import Path

FILE_ALIGNMENT = 0x200
SECTION_ALIGNMENT = 0x1000
RSRC_RVA = 0x1000
RT_VERSION = 16
LANG_EN_US = 0x0409
CODEPAGE_UNICODE = 0x04B0


def parse_version(text: str) -> tuple[int, int, int, int]:
    parts = [int(p) for p in text.split(".")]
    if not 1 <= len(parts) <= 4 or any(not 0 <= p <= 0xFFFF for p in parts):
        raise ValueError(f"not a version a.b.c.d with 16-bit parts: {text!r}")
    major, minor, build, private = (*parts, 0, 0, 0)[:4]
    return major, minor, build, private


def _align(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _block(
    key: str, value: bytes, *, value_length: int, text: bool, children: bytes = b""
) -> bytes:
    """One VS_VERSIONINFO-style node: wLength, wValueLength, wType, szKey, Value, Children."""
    head = _pad4(struct.pack("<HHH", 0, value_length, 1 if text else 0) + _utf16z(key))
    body = head + value
    if children:
        body = _pad4(body) + children
    return struct.pack("<H", len(body)) + body[2:]


def _utf16z(text: str) -> bytes:
    return (text + "\0").encode("utf-16-le")


def _string(key: str, value: str) -> bytes:
    return _block(key, _utf16z(value), value_length=len(value) + 1, text=True)


def version_info(
    file_version: tuple[int, int, int, int],
    product_version: tuple[int, int, int, int],
    strings: dict[str, str],
) -> bytes:
    fv_ms, fv_ls = (
        (file_version[0] << 16) | file_version[1],
        (file_version[2] << 16) | file_version[3],
    )
    pv_ms = (product_version[0] << 16) | product_version[1]
    pv_ls = (product_version[2] << 16) | product_version[3]
    fixed = struct.pack(
        "<13I",
        0xFEEF04BD,  # signature
        0x00010000,  # struct version
        fv_ms,
        fv_ls,
        pv_ms,
        pv_ls,
        0x3F,  # file flags mask
        0,  # file flags
        0x00040004,  # VOS_NT_WINDOWS32
        2,  # VFT_DLL
        0,
        0,
        0,
    )
    table = b"".join(_pad4(_string(k, v)) for k, v in strings.items())
    string_table = _block(
        f"{LANG_EN_US:04x}{CODEPAGE_UNICODE:04x}", b"", value_length=0, text=True, children=table
    )
    string_info = _block("StringFileInfo", b"", value_length=0, text=True, children=string_table)
    translation = struct.pack("<HH", LANG_EN_US, CODEPAGE_UNICODE)
    var = _block("Translation", translation, value_length=len(translation), text=False)
    var_info = _block("VarFileInfo", b"", value_length=0, text=True, children=var)
    return _block(
        "VS_VERSION_INFO",
        fixed,
        value_length=len(fixed),
        text=False,
        children=_pad4(string_info) + var_info,
    )


def resource_section(version_blob: bytes) -> bytes:
    """Three-level resource tree: type RT_VERSION → name 1 → language en-US → data."""

    def directory(entry_id: int, target: int, *, subdir: bool) -> bytes:
        header = struct.pack("<IIHHHH", 0, 0, 0, 0, 0, 1)
        return header + struct.pack("<II", entry_id, target | (0x80000000 if subdir else 0))

    level1 = directory(RT_VERSION, 0x18, subdir=True)  # each directory is 0x18 bytes
    level2 = directory(1, 0x30, subdir=True)
    level3 = directory(LANG_EN_US, 0x48, subdir=False)
    data_offset = 0x58
    data_entry = struct.pack("<IIII", RSRC_RVA + data_offset, len(version_blob), 0, 0)
    return level1 + level2 + level3 + data_entry + version_blob


def build_dll(
    file_version: str,
    product_version: str | None = None,
    *,
    name: str = "MPNotifyPerf.dll",
    description: str = "notifyprobe test module",
) -> bytes:
    fv = parse_version(file_version)
    pv = parse_version(product_version or file_version)
    strings = {
        "CompanyName": "notifyprobe fixtures",
        "FileDescription": description,
        "FileVersion": ".".join(map(str, fv)),
        "InternalName": name.rsplit(".", 1)[0],
        "OriginalFilename": name,
        "ProductName": "notifyprobe fixtures",
        "ProductVersion": ".".join(map(str, pv)),
    }
    rsrc = resource_section(version_info(fv, pv, strings))
    raw_size = _align(len(rsrc), FILE_ALIGNMENT)
    headers_size = FILE_ALIGNMENT
    image_size = RSRC_RVA + _align(len(rsrc), SECTION_ALIGNMENT)

    dos = bytearray(0x40)
    dos[0:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 0x40)
    coff = struct.pack(
        "<HHIIIHH",
        0x014C,  # i386
        1,  # one section
        0,  # timestamp: fixed, so builds are reproducible
        0,
        0,
        0xE0,  # size of the PE32 optional header
        0x2102,  # DLL | 32BIT_MACHINE | EXECUTABLE_IMAGE
    )
    optional = struct.pack(
        "<HBBIIIIIIIIIHHHHHHIIIIHHIIIIII",
        0x010B,  # PE32
        14,
        0,
        0,  # size of code
        raw_size,  # size of initialised data
        0,
        0,  # entry point: none, a resource-only DLL
        0,  # base of code
        RSRC_RVA,  # base of data
        0x10000000,  # image base
        SECTION_ALIGNMENT,
        FILE_ALIGNMENT,
        6,
        0,
        0,
        0,
        6,
        0,
        0,
        image_size,
        headers_size,
        0,  # checksum
        2,  # GUI subsystem
        0x0140,  # DYNAMIC_BASE | NX_COMPAT
        0x100000,
        0x1000,
        0x100000,
        0x1000,
        0,
        16,  # number of data directories
    )
    directories = bytearray(16 * 8)
    struct.pack_into("<II", directories, 2 * 8, RSRC_RVA, len(rsrc))
    section = struct.pack(
        "<8sIIIIIIHHI",
        b".rsrc",
        len(rsrc),
        RSRC_RVA,
        raw_size,
        headers_size,
        0,
        0,
        0,
        0,
        0x40000040,  # initialised data, readable
    )
    headers = bytes(dos) + b"PE\0\0" + coff + optional + bytes(directories) + section
    headers = headers.ljust(headers_size, b"\0")
    return headers + rsrc.ljust(raw_size, b"\0")


def write_dll(path: Path, file_version: str, product_version: str | None = None) -> Path:
    path.write_bytes(build_dll(file_version, product_version, name=path.name))
    return path
