"""Pending reboot: is the machine still waiting for a reboot an earlier change asked for?

Installing over a machine with a pending reboot is how a locked file survives an upgrade
(document 000 asks for a manual reboot the uninstaller does not request). No single flag says
"reboot pending": Windows keeps several (servicing, Windows Update, file renames scheduled for
boot, a computer rename, a domain join), Linux has the packagers' `reboot-required` file and a
running kernel older than the installed one. Each source is reported on its own, because some
are noisy (antivirus and browsers write PendingFileRenameOperations all the time) and the
operator must be able to ignore one without losing the others.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probe.host.registry import RegistryReader

HKLM = "HKEY_LOCAL_MACHINE"
SESSION_MANAGER = HKLM + r"\SYSTEM\CurrentControlSet\Control\Session Manager"
CBS = HKLM + r"\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing"
WU = HKLM + r"\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update"
COMPUTER_NAME = HKLM + r"\SYSTEM\CurrentControlSet\Control\ComputerName"
NETLOGON = HKLM + r"\SYSTEM\CurrentControlSet\Services\Netlogon"
UPDATES = HKLM + r"\SOFTWARE\Microsoft\Updates"

WINDOWS_SOURCES = (
    "pending-file-rename",
    "cbs-reboot-pending",
    "cbs-reboot-in-progress",
    "cbs-packages-pending",
    "windows-update",
    "windows-update-post-reboot",
    "update-exe-volatile",
    "computer-rename",
    "domain-join",
)
LINUX_SOURCES = ("reboot-required", "kernel")
ALL_SOURCES = WINDOWS_SOURCES + LINUX_SOURCES


@dataclass(frozen=True)
class FileRename:
    """One PendingFileRenameOperations pair: `target` "" means delete at boot."""

    source: str
    target: str


@dataclass(frozen=True)
class RebootSource:
    name: str  # what --ignore-reboot-source takes
    pending: bool
    detail: str
    where: str  # registry key or file that says so
    noisy: bool = False  # routinely set by unrelated software
    renames: tuple[FileRename, ...] = ()
    checked: bool = True  # False: nothing could be read, so "not pending" means "not known"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pending": self.pending,
            "detail": self.detail,
            "where": self.where,
            "noisy": self.noisy,
            "checked": self.checked,
            "renames": [{"source": r.source, "target": r.target} for r in self.renames],
        }


def windows_sources(reader: RegistryReader) -> tuple[RebootSource, ...]:
    """Every Windows source, from the live registry or an export (`reader.source` says which)."""
    renames = tuple(
        rename
        for name in ("PendingFileRenameOperations", "PendingFileRenameOperations2")
        for rename in file_renames(_strings(reader, SESSION_MANAGER, name))
    )
    active = _text(reader, COMPUTER_NAME + r"\ActiveComputerName", "ComputerName")
    wanted = _text(reader, COMPUTER_NAME + r"\ComputerName", "ComputerName")
    renamed = bool(active and wanted and active.lower() != wanted.lower())
    netlogon = [v.name for v in reader.values(NETLOGON) if v.name in ("JoinDomain", "AvoidSpnSet")]
    volatile = reader.value(UPDATES, "UpdateExeVolatile")
    volatile_set = volatile is not None and volatile.data not in (0, b"", "0")
    return (
        RebootSource(
            "pending-file-rename",
            bool(renames),
            f"{len(renames)} file operation(s) scheduled for the next boot"
            if renames
            else "no file operation scheduled for the next boot",
            SESSION_MANAGER + r"\PendingFileRenameOperations",
            noisy=True,
            renames=renames,
        ),
        _key_source(
            reader,
            "cbs-reboot-pending",
            CBS + r"\RebootPending",
            "component servicing finished an update that needs a reboot",
        ),
        _key_source(
            reader,
            "cbs-reboot-in-progress",
            CBS + r"\RebootInProgress",
            "component servicing is in the middle of a reboot cycle",
        ),
        _key_source(
            reader,
            "cbs-packages-pending",
            CBS + r"\PackagesPending",
            "component servicing has packages waiting for a reboot",
        ),
        _key_source(
            reader,
            "windows-update",
            WU + r"\RebootRequired",
            "Windows Update installed updates that need a reboot",
        ),
        _key_source(
            reader,
            "windows-update-post-reboot",
            WU + r"\PostRebootReporting",
            "Windows Update waits for a reboot to report results",
        ),
        RebootSource(
            "update-exe-volatile",
            volatile_set,
            "an update installer left UpdateExeVolatile set"
            if volatile_set
            else "UpdateExeVolatile is not set",
            UPDATES + r"\UpdateExeVolatile",
        ),
        RebootSource(
            "computer-rename",
            renamed,
            f"the computer is being renamed from {active} to {wanted}"
            if renamed
            else "no computer rename pending",
            COMPUTER_NAME,
        ),
        RebootSource(
            "domain-join",
            bool(netlogon),
            f"a domain join waits for a reboot ({', '.join(netlogon)})"
            if netlogon
            else "no domain join pending",
            NETLOGON,
        ),
    )


def file_renames(items: Sequence[str]) -> tuple[FileRename, ...]:
    """Pairs of (source, target) with the `\\??\\` prefix and the `!` replace flag removed."""
    pairs = list(items) + ([""] if len(items) % 2 else [])
    return tuple(
        FileRename(_plain(pairs[i]), _plain(pairs[i + 1]))
        for i in range(0, len(pairs), 2)
        if pairs[i]
    )


def _plain(path: str) -> str:
    path = path.removeprefix("!")
    for prefix in ("\\??\\", "\\\\?\\"):
        path = path.removeprefix(prefix)
    return path


def _strings(reader: RegistryReader, key: str, name: str) -> tuple[str, ...]:
    value = reader.value(key, name)
    return value.strings if value is not None else ()


def _text(reader: RegistryReader, key: str, name: str) -> str | None:
    value = reader.value(key, name)
    return value.text if value is not None else None


def _key_source(reader: RegistryReader, name: str, key: str, meaning: str) -> RebootSource:
    present = reader.key_exists(key)
    detail = meaning if present else f"not set ({key.rsplit(chr(92), 1)[-1]} absent)"
    return RebootSource(name, present, detail, key)


def linux_sources(root: Path = Path("/"), running: str | None = None) -> tuple[RebootSource, ...]:
    """The packagers' reboot-required flag and a running kernel older than the newest one
    installed. `root` and `running` (the running kernel release) let tests use a temp tree."""
    running = running or os.uname().release
    flags = [root / "run" / "reboot-required", root / "var" / "run" / "reboot-required"]
    flag = next((f for f in flags if f.is_file()), None)
    if flag is not None:
        packages = _lines(flag.with_name(flag.name + ".pkgs"))
        detail = "the package manager asks for a reboot" + (
            f" (for {', '.join(packages)})" if packages else ""
        )
        required = RebootSource("reboot-required", True, detail, str(flag))
    else:
        required = RebootSource("reboot-required", False, "no reboot-required flag", str(flags[0]))
    installed = installed_kernels(root)
    newest = max(installed, key=release_key) if installed else None
    if newest is None:
        kernel = RebootSource(
            "kernel", False, "no installed kernel found", str(root / "boot"), checked=False
        )
    elif release_key(newest) > release_key(running):
        kernel = RebootSource(
            "kernel",
            True,
            f"running kernel {running} is older than installed {newest}",
            str(root / "lib" / "modules" / newest),
        )
    else:
        kernel = RebootSource(
            "kernel",
            False,
            f"running kernel {running} is the newest installed",
            str(root / "lib" / "modules"),
        )
    return (required, kernel)


def installed_kernels(root: Path) -> set[str]:
    found: set[str] = set()
    modules = root / "lib" / "modules"
    if modules.is_dir():
        found.update(
            p.name
            for p in modules.iterdir()
            if (p / "modules.dep").exists() or (p / "kernel").is_dir()
        )
    boot = root / "boot"
    if boot.is_dir():
        found.update(p.name.removeprefix("vmlinuz-") for p in boot.glob("vmlinuz-*"))
    return found


def release_key(release: str) -> tuple[tuple[int, int | str], ...]:
    """`5.15.0-101-generic` sorts after `5.15.0-91-generic`: numbers compare as numbers."""
    parts = re.findall(r"\d+|[A-Za-z]+", release)
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)


def _lines(path: Path) -> list[str]:
    try:
        return sorted({line.strip() for line in path.read_text().splitlines() if line.strip()})
    except OSError:
        return []


def unknown_names(names: Iterable[str]) -> list[str]:
    return [n for n in names if n not in ALL_SOURCES]
