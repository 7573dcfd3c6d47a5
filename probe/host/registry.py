"""Reading Windows registry values, from the live registry or from an export a customer sent.

Pending-reboot sources, service image paths, event-log message files and shares are all registry
values. The checks only need three questions answered — does this key exist, what is this value,
which values does this key hold — so they run unchanged against the live registry (winreg, on
Windows) and against a `.reg` export (`probe.host.regfile`, everywhere). Key paths are compared
case-insensitively, and `HKLM` and `HKEY_LOCAL_MACHINE` are the same hive.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

from probe.errors import ProbeError

HIVES = {
    "hklm": "HKEY_LOCAL_MACHINE",
    "hkey_local_machine": "HKEY_LOCAL_MACHINE",
    "hkcu": "HKEY_CURRENT_USER",
    "hkey_current_user": "HKEY_CURRENT_USER",
    "hkcr": "HKEY_CLASSES_ROOT",
    "hkey_classes_root": "HKEY_CLASSES_ROOT",
    "hku": "HKEY_USERS",
    "hkey_users": "HKEY_USERS",
    "hkcc": "HKEY_CURRENT_CONFIG",
    "hkey_current_config": "HKEY_CURRENT_CONFIG",
}

# winreg type numbers, also the N of `hex(N):` in an export.
REG_NONE, REG_SZ, REG_EXPAND_SZ, REG_BINARY, REG_DWORD = 0, 1, 2, 3, 4
REG_DWORD_BIG_ENDIAN, REG_LINK, REG_MULTI_SZ, REG_QWORD = 5, 6, 7, 11
TYPE_NAMES = {
    REG_NONE: "REG_NONE",
    REG_SZ: "REG_SZ",
    REG_EXPAND_SZ: "REG_EXPAND_SZ",
    REG_BINARY: "REG_BINARY",
    REG_DWORD: "REG_DWORD",
    REG_DWORD_BIG_ENDIAN: "REG_DWORD_BIG_ENDIAN",
    REG_LINK: "REG_LINK",
    REG_MULTI_SZ: "REG_MULTI_SZ",
    REG_QWORD: "REG_QWORD",
}

RegData = str | int | bytes | tuple[str, ...]


@dataclass(frozen=True)
class RegValue:
    """One value: `name` "" is the key's default value (`@` in an export)."""

    name: str
    type: int
    data: RegData

    @property
    def type_name(self) -> str:
        return TYPE_NAMES.get(self.type, f"REG_TYPE_{self.type}")

    @property
    def text(self) -> str | None:
        """The value as one string when it is a string type, else None."""
        return self.data if isinstance(self.data, str) else None

    @property
    def strings(self) -> tuple[str, ...]:
        """REG_MULTI_SZ items, or a string value as one item."""
        if isinstance(self.data, tuple):
            return self.data
        return (self.data,) if isinstance(self.data, str) else ()


def normalize_key(path: str) -> str:
    """Canonical form of a key path: full hive name, backslashes, no empty parts."""
    parts = [p for p in path.replace("/", "\\").split("\\") if p]
    if not parts:
        raise ProbeError(f"empty registry key path {path!r}")
    hive = HIVES.get(parts[0].lower())
    if hive is None:
        raise ProbeError(f"registry key {path!r} does not start with a known hive (HKLM, …)")
    return "\\".join([hive, *parts[1:]])


def key_id(path: str) -> str:
    return normalize_key(path).lower()


class RegistryReader(Protocol):
    """What the checks ask of a registry. `source` says where the answers come from."""

    source: str

    def key_exists(self, path: str) -> bool: ...

    def value(self, path: str, name: str) -> RegValue | None: ...

    def values(self, path: str) -> Sequence[RegValue]: ...


class LiveRegistry:
    """The registry of the machine the probe runs on (Windows only), read with winreg, 64-bit
    view, read access only."""

    source = "live registry"

    def __init__(self) -> None:
        if sys.platform != "win32":
            raise ProbeError("the live registry exists on Windows only; pass --registry FILE.reg")
        import winreg

        self._winreg: ModuleType = winreg
        self._hives: dict[str, int] = {
            "HKEY_LOCAL_MACHINE": winreg.HKEY_LOCAL_MACHINE,
            "HKEY_CURRENT_USER": winreg.HKEY_CURRENT_USER,
            "HKEY_CLASSES_ROOT": winreg.HKEY_CLASSES_ROOT,
            "HKEY_USERS": winreg.HKEY_USERS,
            "HKEY_CURRENT_CONFIG": winreg.HKEY_CURRENT_CONFIG,
        }

    def _open(self, path: str) -> Any:  # a winreg.HKEYType: winreg exists on Windows only
        hive, _, sub = normalize_key(path).partition("\\")
        access = self._winreg.KEY_READ | self._winreg.KEY_WOW64_64KEY
        try:
            return self._winreg.OpenKey(self._hives[hive], sub, 0, access)
        except FileNotFoundError:
            return None
        except PermissionError as exc:
            raise ProbeError(f"cannot read registry key {path}: access denied") from exc

    def key_exists(self, path: str) -> bool:
        handle = self._open(path)
        if handle is None:
            return False
        handle.Close()
        return True

    def value(self, path: str, name: str) -> RegValue | None:
        handle = self._open(path)
        if handle is None:
            return None
        with handle:
            try:
                data, kind = self._winreg.QueryValueEx(handle, name)
            except FileNotFoundError:
                return None
        return RegValue(name, kind, _live_data(kind, data))

    def values(self, path: str) -> Sequence[RegValue]:
        handle = self._open(path)
        if handle is None:
            return ()
        found = []
        with handle:
            index = 0
            while True:
                try:
                    name, data, kind = self._winreg.EnumValue(handle, index)
                except OSError:
                    break
                found.append(RegValue(name, kind, _live_data(kind, data)))
                index += 1
        return tuple(found)


def _live_data(kind: int, data: object) -> RegData:
    if isinstance(data, list):
        return tuple(str(item) for item in data)
    if isinstance(data, (str, int, bytes)):
        return data
    return b"" if data is None else str(data)
