"""What a module file is, from its bytes alone: PE version numbers, ELF soname, SHA-256.

The probe inspects DLLs that a gateway still has loaded. It reads each file's bytes once and
parses them in memory (pefile with `data=`, only the resource directory), so it never keeps a
file open or mapped — on Windows an open mapping is a lock that would block the very
uninstall the probe recommends. Nothing read here is ever imported or executed.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Literal

import pefile

RESOURCE_DIRECTORY = pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_RESOURCE"]
RT_VERSION = pefile.RESOURCE_TYPE["RT_VERSION"]
VS_FIXEDFILEINFO_SIGNATURE = struct.pack("<I", 0xFEEF04BD)
MAX_VERSION_BLOCK = 64 * 1024  # a VS_VERSIONINFO is a few hundred bytes
_SUBDIRECTORY = 0x80000000  # high bit of an entry's offset: it points at a directory
_NAMED = 0x80000000  # high bit of an entry's id: it is a name, not a number
ELF_MAGIC = b"\x7fELF"
SHT_DYNAMIC = 6
DT_NULL = 0
DT_SONAME = 14


@dataclass(frozen=True)
class ModuleVersion:
    """Identity of one copy of a module. Versions come from VS_FIXEDFILEINFO (PE only)."""

    sha256: str
    size: int
    kind: Literal["pe", "elf", "data"]
    file_version: str | None = None
    product_version: str | None = None
    soname: str | None = None

    @property
    def label(self) -> str:
        """The most telling short name of this copy: version, soname, or hash prefix."""
        return self.file_version or self.soname or f"sha256:{self.sha256[:12]}"


def describe(data: bytes) -> ModuleVersion:
    digest = hashlib.sha256(data).hexdigest()
    if data[:2] == b"MZ":
        fixed = pe_versions(data)
        if fixed is not None:
            return ModuleVersion(digest, len(data), "pe", *fixed)
        return ModuleVersion(digest, len(data), "pe")
    if data[:4] == ELF_MAGIC:
        return ModuleVersion(digest, len(data), "elf", soname=elf_soname(data))
    return ModuleVersion(digest, len(data), "data")


def pe_versions(data: bytes) -> tuple[str, str] | None:
    """(FileVersion, ProductVersion) from the fixed version block, or None when absent.

    The string table's FileVersion can disagree with the fixed numbers (builds often forget to
    update one), so only the fixed numbers are compared. pefile reads the headers; the resource
    tree is then followed along the one path to the version block (RT_VERSION, first name,
    first language) instead of parsed whole: a hostile file with a fan-out of thousands of
    resource entries costs one pass over the root directory, not a second of parsing.
    """
    # Built from bytes there is no file or mapping to release, so no `close()`: it only runs a
    # full gc.collect(), which would cost more than the whole parse.
    try:
        pe = pefile.PE(data=data, fast_load=True)
        base = pe.OPTIONAL_HEADER.DATA_DIRECTORY[RESOURCE_DIRECTORY].VirtualAddress
        if not base:
            return None
        entry = _resource_entry(pe, base, RT_VERSION)
        for _ in range(2):  # name, then language: the first of each
            if entry is None or not entry & _SUBDIRECTORY:
                return None
            entry = _resource_entry(pe, base + (entry & ~_SUBDIRECTORY), None)
        if entry is None or entry & _SUBDIRECTORY:
            return None
        rva, size = struct.unpack("<II", pe.get_data(base + entry, 8))
        block = pe.get_data(rva, min(size, MAX_VERSION_BLOCK))
        at = block.find(VS_FIXEDFILEINFO_SIGNATURE)
        if at < 0:
            return None
        file_ms, file_ls, product_ms, product_ls = struct.unpack_from("<4I", block, at + 8)
        return _dotted(file_ms, file_ls), _dotted(product_ms, product_ls)
    except (pefile.PEFormatError, struct.error, ValueError, IndexError, AttributeError):
        return None


def _resource_entry(pe: pefile.PE, directory: int, type_id: int | None) -> int | None:
    """The offset field of the first entry of the resource directory at RVA `directory`, or of
    the first one with the numeric id `type_id` (named entries never are a standard type)."""
    named, ids = struct.unpack("<HH", pe.get_data(directory + 12, 4))
    table = pe.get_data(directory + 16, 8 * (named + ids))
    for name, offset in struct.iter_unpack("<II", table):
        if type_id is None or (not name & _NAMED and name == type_id):
            return int(offset)
    return None


def _dotted(ms: int, ls: int) -> str:
    return f"{ms >> 16}.{ms & 0xFFFF}.{ls >> 16}.{ls & 0xFFFF}"


def elf_soname(data: bytes) -> str | None:
    """DT_SONAME of an ELF shared object, parsed by hand from the section headers."""
    try:
        return _elf_soname(data)
    except (struct.error, IndexError, ValueError, UnicodeDecodeError):
        return None


def _elf_soname(data: bytes) -> str | None:
    if data[:4] != ELF_MAGIC or data[4] not in (1, 2) or data[5] not in (1, 2):
        return None
    wide = data[4] == 2
    e = "<" if data[5] == 1 else ">"
    if wide:
        shoff, shentsize, shnum = (
            struct.unpack_from(e + "Q", data, 0x28)[0],
            *struct.unpack_from(e + "HH", data, 0x3A),
        )
        section_fmt, dyn_fmt = e + "IIQQQQIIQQ", e + "qQ"
    else:
        shoff, shentsize, shnum = (
            struct.unpack_from(e + "I", data, 0x20)[0],
            *struct.unpack_from(e + "HH", data, 0x2E),
        )
        section_fmt, dyn_fmt = e + "IIIIIIIIII", e + "iI"
    sections = [struct.unpack_from(section_fmt, data, shoff + i * shentsize) for i in range(shnum)]
    for section in sections:
        sh_type, sh_offset, sh_size, sh_link = section[1], section[4], section[5], section[6]
        if sh_type != SHT_DYNAMIC:
            continue
        strtab = sections[sh_link]
        str_offset, str_size = strtab[4], strtab[5]
        step = struct.calcsize(dyn_fmt)
        for at in range(sh_offset, sh_offset + sh_size, step):
            tag, value = struct.unpack_from(dyn_fmt, data, at)
            if tag == DT_NULL:
                break
            if tag == DT_SONAME and value < str_size:
                start = str_offset + value
                end = data.index(b"\0", start)
                return data[start:end].decode("utf-8")
    return None
