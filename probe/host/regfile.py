"""A `.reg` export parser, so registry checks run on evidence a customer sent.

regedit writes `Windows Registry Editor Version 5.00` files in UTF-16LE with a BOM (strings in
`hex(N):` are UTF-16LE too) and `REGEDIT4` files in the ANSI code page. Long hex values are split
over lines ending in `\\` with the next line indented. Anything the parser does not understand is
a `ProbeError` naming the file and the line: a check must never run on a half-read export.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from probe.errors import ProbeError
from probe.files import read_host_file
from probe.host.registry import (
    REG_BINARY,
    REG_DWORD,
    REG_DWORD_BIG_ENDIAN,
    REG_EXPAND_SZ,
    REG_LINK,
    REG_MULTI_SZ,
    REG_QWORD,
    REG_SZ,
    LiveRegistry,
    RegData,
    RegistryReader,
    RegValue,
    key_id,
    normalize_key,
)

HEADER_V5 = "Windows Registry Editor Version 5.00"
HEADER_V4 = "REGEDIT4"
MAX_BYTES = 256 * 1024 * 1024
_HEX_BYTE = re.compile(r"[0-9a-fA-F]{1,2}")
_HEX_LIST = re.compile(r"[0-9a-fA-F]{1,2}(?:,[0-9a-fA-F]{1,2})*")
_HEX_TYPE = re.compile(r"hex(?:\(([0-9a-fA-F]+)\))?:(.*)\Z", re.DOTALL)


@dataclass
class _Key:
    path: str
    values: dict[str, RegValue] = field(default_factory=dict)


class RegFile:
    """A parsed export: keys (case-insensitive) with their values. Implements RegistryReader.

    A key under `CurrentControlSet` that the export lacks is looked up under `ControlSet001`
    (exports taken from an offline hive name the control set by number)."""

    def __init__(self, source: str, keys: dict[str, _Key]):
        self.source = source
        self._keys = keys

    @classmethod
    def load(cls, path: Path) -> RegFile:
        try:
            data = read_host_file(path, MAX_BYTES, follow_link=True)
        except OSError as exc:
            raise ProbeError(f"cannot read registry export {path}: {exc.strerror or exc}") from None
        return parse_reg(decode(data, str(path)), str(path))

    def _key(self, path: str) -> _Key | None:
        kid = key_id(path)
        key = self._keys.get(kid)
        if key is None and "\\currentcontrolset\\" in kid + "\\":
            key = self._keys.get(kid.replace("\\currentcontrolset", "\\controlset001", 1))
        return key

    def key_exists(self, path: str) -> bool:
        return self._key(path) is not None

    def value(self, path: str, name: str) -> RegValue | None:
        key = self._key(path)
        return None if key is None else key.values.get(name.lower())

    def values(self, path: str) -> Sequence[RegValue]:
        key = self._key(path)
        return () if key is None else tuple(key.values.values())


def decode(data: bytes, source: str) -> str:
    """UTF-16LE with BOM (regedit 5), UTF-8 with or without BOM, else the ANSI code page."""
    if data.startswith(b"\xff\xfe"):
        try:
            return data[2:].decode("utf-16-le")
        except UnicodeDecodeError as exc:
            raise ProbeError(f"{source}: broken UTF-16 text at byte {exc.start + 2}") from None
    if data.startswith(b"\xfe\xff"):
        raise ProbeError(f"{source}: UTF-16 big-endian is not a format regedit writes")
    if data[:4] in (b"W\0i\0", b"R\0E\0"):  # UTF-16LE that lost its BOM
        try:
            return data.decode("utf-16-le")
        except UnicodeDecodeError as exc:
            raise ProbeError(f"{source}: broken UTF-16 text at byte {exc.start}") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def parse_reg(text: str, source: str = "<export>") -> RegFile:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    number = 0
    while number < len(lines) and not lines[number].strip():
        number += 1
    header = lines[number].strip() if number < len(lines) else ""
    if header == HEADER_V5:
        wide = True
    elif header == HEADER_V4:
        wide = False
    else:
        raise ProbeError(
            f"{source}: not a registry export: the first line must be {HEADER_V5!r} or "
            f"{HEADER_V4!r}, found {header[:60]!r}"
        )
    keys: dict[str, _Key] = {}
    current: _Key | None = None
    for start, logical in _logical_lines(lines, number + 1):
        where = f"{source}:{start}"
        stripped = logical.strip()
        if not stripped or stripped.startswith(";"):
            continue
        if stripped.startswith("["):
            if not stripped.endswith("]"):
                raise ProbeError(f"{where}: key line without closing ']'")
            inner = stripped[1:-1].strip()
            deleted = inner.startswith("-")
            try:
                path = normalize_key(inner[1:] if deleted else inner)
            except ProbeError as exc:
                raise ProbeError(f"{where}: {exc}") from None
            kid = path.lower()
            if deleted:
                for other in [k for k in keys if k == kid or k.startswith(kid + "\\")]:
                    del keys[other]
                current = None
                continue
            current = keys.setdefault(kid, _Key(path))
            continue
        if current is None:
            raise ProbeError(f"{where}: a value before any [key] line (or under a deleted key)")
        name, rest = _value_name(stripped, where)
        if rest == "-":
            current.values.pop(name.lower(), None)
            continue
        kind, data = _value_data(rest, where, wide=wide)
        current.values[name.lower()] = RegValue(name, kind, data)
    return RegFile(source, keys)


def _logical_lines(lines: list[str], first: int) -> list[tuple[int, str]]:
    """Join continuation lines (a trailing backslash outside a quoted string); keep the number
    of the line each logical line starts on."""
    out: list[tuple[int, str]] = []
    i = first
    while i < len(lines):
        start, text = i + 1, lines[i].rstrip()
        i += 1
        if i < len(lines) and _continues(text):
            # Joined once at the end: appending line by line is quadratic on a long hex value.
            parts = [text[:-1]]
            while i < len(lines):
                part = lines[i].strip()
                i += 1
                if not (part.endswith("\\") and i < len(lines)):
                    parts.append(part)
                    break
                parts.append(part[:-1])
            text = "".join(parts)
        out.append((start, text))
    return out


def _continues(text: str) -> bool:
    if not text.endswith("\\"):
        return False
    stripped = text.lstrip()
    if stripped.startswith(("[", ";")):
        return False
    _, sep, data = _split_unquoted_eq(stripped)
    return bool(sep) and data.lstrip().lower().startswith("hex")


def _split_unquoted_eq(text: str) -> tuple[str, str, str]:
    """Split `"name"=data` at the `=` after the (escaped) quoted name."""
    if text.startswith("@"):
        return "@", "=" if text[1:].lstrip().startswith("=") else "", text[1:].lstrip()[1:]
    if not text.startswith('"'):
        return text, "", ""
    i = 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            rest = text[i + 1 :].lstrip()
            if rest.startswith("="):
                return text[: i + 1], "=", rest[1:]
            return text, "", ""
        i += 1
    return text, "", ""


def _value_name(text: str, where: str) -> tuple[str, str]:
    raw, sep, rest = _split_unquoted_eq(text)
    if not sep:
        raise ProbeError(f'{where}: expected "Name"=value or @=value, found {text[:60]!r}')
    if raw == "@":
        return "", rest.strip()
    return _unescape(raw[1:-1], where), rest.strip()


def _unescape(text: str, where: str) -> str:
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 >= len(text):
                raise ProbeError(f"{where}: dangling backslash in a string")
            nxt = text[i + 1]
            out.append({"n": "\n", "r": "\r", "t": "\t", "0": "\0"}.get(nxt, nxt))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _value_data(rest: str, where: str, *, wide: bool) -> tuple[int, RegData]:
    if rest.startswith('"'):
        if len(rest) < 2 or not rest.endswith('"') or _ends_escaped(rest[1:-1]):
            raise ProbeError(f"{where}: unterminated string value")
        return REG_SZ, _unescape(rest[1:-1], where)
    lowered = rest.lower()
    if lowered.startswith("dword:"):
        digits = rest[6:].strip()
        if not re.fullmatch(r"[0-9a-fA-F]{1,8}", digits):
            raise ProbeError(f"{where}: dword needs 1 to 8 hex digits, found {digits!r}")
        return REG_DWORD, int(digits, 16)
    match = _HEX_TYPE.match(rest)
    if match is None:
        raise ProbeError(f"{where}: unknown value data {rest[:60]!r}")
    kind = int(match.group(1), 16) if match.group(1) else REG_BINARY
    raw = _hex_bytes(match.group(2), where)
    return kind, _typed(kind, raw, where, wide=wide)


def _ends_escaped(text: str) -> bool:
    backslashes = len(text) - len(text.rstrip("\\"))
    return backslashes % 2 == 1


def _hex_bytes(text: str, where: str) -> bytes:
    cleaned = text.replace(" ", "").replace("\t", "").strip(",")
    if not cleaned:
        return b""
    if _HEX_LIST.fullmatch(cleaned) is None:
        bad = next(p for p in cleaned.split(",") if not _HEX_BYTE.fullmatch(p))
        raise ProbeError(f"{where}: bad hex byte {bad!r}")
    return bytes.fromhex("".join(p.zfill(2) for p in cleaned.split(",")))


def _typed(kind: int, raw: bytes, where: str, *, wide: bool) -> RegData:
    if kind in (REG_SZ, REG_EXPAND_SZ, REG_LINK):
        return _text(raw, where, wide=wide).split("\0", 1)[0]
    if kind == REG_MULTI_SZ:
        items = _text(raw, where, wide=wide).split("\0")
        while items and items[-1] == "":
            items.pop()
        return tuple(items)
    if kind == REG_DWORD and len(raw) == 4:
        return int.from_bytes(raw, "little")
    if kind == REG_DWORD_BIG_ENDIAN and len(raw) == 4:
        return int.from_bytes(raw, "big")
    if kind == REG_QWORD and len(raw) == 8:
        return int.from_bytes(raw, "little")
    return raw


def _text(raw: bytes, where: str, *, wide: bool) -> str:
    if not wide:
        return raw.decode("cp1252", errors="replace")
    if len(raw) % 2:
        raise ProbeError(f"{where}: UTF-16 string data has an odd number of bytes")
    try:
        return raw.decode("utf-16-le")
    except UnicodeDecodeError:
        raise ProbeError(f"{where}: string data is not valid UTF-16") from None


def reader_for(export: Path | None) -> RegistryReader | None:
    """The registry to read: an export when one is given, else the live one on Windows, else
    none (a Linux host has no registry; evidence from the customer comes as a .reg file)."""
    if export is not None:
        return RegFile.load(export)
    if sys.platform == "win32":
        return LiveRegistry()
    return None
