"""Facts about the host the probe ran on, for a support engineer who cannot log in to it.

Collected when the run ends and kept in the ledger with it, so a bundle made later still
describes the host as it was. Names and addresses in here are redactable like everything else.
"""

from __future__ import annotations

import functools
import platform
import re
import socket
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import psutil

from probe import __version__

DISTRIBUTION = "notifyprobe"


@dataclass(frozen=True)
class HostFacts:
    hostname: str
    fqdn: str
    os: str
    python: str
    probe_version: str
    packages: tuple[tuple[str, str], ...]  # (distribution, version or "not installed")
    addresses: tuple[str, ...]  # this host's own interface addresses, loopback excluded
    boot_time: float | None
    collected_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "hostname": self.hostname,
            "fqdn": self.fqdn,
            "os": self.os,
            "python": self.python,
            "notifyprobe": self.probe_version,
            "packages": dict(self.packages),
            "addresses": list(self.addresses),
            "boot_time": self.boot_time,
            "collected_at": self.collected_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HostFacts:
        return cls(
            hostname=str(data.get("hostname", "")),
            fqdn=str(data.get("fqdn", "")),
            os=str(data.get("os", "")),
            python=str(data.get("python", "")),
            probe_version=str(data.get("notifyprobe", "")),
            packages=tuple((str(k), str(v)) for k, v in dict(data.get("packages", {})).items()),
            addresses=tuple(str(a) for a in data.get("addresses", [])),
            boot_time=data.get("boot_time"),
            collected_at=float(data.get("collected_at", 0.0)),
        )


def collect_facts() -> HostFacts:
    return HostFacts(
        hostname=socket.gethostname(),
        fqdn=socket.getfqdn(),
        os=platform.platform(),
        python=f"{platform.python_implementation()} {sys.version.split()[0]}",
        probe_version=__version__,
        packages=tuple(_versions()),
        addresses=tuple(_addresses()),
        boot_time=_boot_time(),
        collected_at=time.time(),
    )


@functools.cache
def _versions() -> tuple[tuple[str, str], ...]:
    """notifyprobe's own dependencies, as installed (the ones that shape SMTP and scanning);
    read once per process, which runs the versions it loaded (a watch asked every run)."""
    try:
        requires = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        requires = []
    found = []
    for requirement in sorted(r for r in requires if "extra ==" not in r):
        name = re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]
        try:
            found.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            if ";" not in requirement:  # a conditional one (tomli on 3.11+) is simply not needed
                found.append((name, "not installed"))
    return tuple(found)


def _addresses() -> list[str]:
    return [a for a in interface_addresses() if a not in ("127.0.0.1", "::1")]


def interface_addresses() -> list[str]:
    """This host's own IPv4 and IPv6 interface addresses, loopback included, without a scope
    (`fe80::1`, not `fe80::1%eth0`); none when the interfaces cannot be listed."""
    try:
        interfaces = psutil.net_if_addrs()
    except (OSError, psutil.Error):
        return []
    out = set()
    for addrs in interfaces.values():
        for a in addrs:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                out.add(a.address.split("%")[0])
    return sorted(out)


def _boot_time() -> float | None:
    try:
        return psutil.boot_time()
    except (OSError, psutil.Error):
        return None
