"""Host inspection: which processes hold which module, files in use, versions, registry, reboot.

`take_inventory` (loaded modules, stale copies) and `files_in_use` over a platform source
(`local_source`, `local_holders`, or a `RecordedWindows` inventory); `describe` reads a PE
version (host files are read with `probe.files.read_host_file`);
`collect_facts` the host facts a report carries, `interface_addresses` this host's own
addresses; registry readers and pending-reboot sources for the upgrade checks.
"""

from probe.host.facts import HostFacts, collect_facts, interface_addresses
from probe.host.inuse import InUse, files_in_use
from probe.host.inventory import (
    DEFAULT_MODULE,
    Inventory,
    ModuleHit,
    ModuleState,
    Sight,
    judge_sight,
    take_inventory,
    unreadable_note,
)
from probe.host.pe import ModuleVersion, describe
from probe.host.platform import NameMatcher, local_holders, local_source
from probe.host.platform.windows import RecordedWindows
from probe.host.reboot import RebootSource, linux_sources, unknown_names, windows_sources
from probe.host.regfile import reader_for
from probe.host.registry import RegistryReader

__all__ = [
    "DEFAULT_MODULE",
    "HostFacts",
    "InUse",
    "Inventory",
    "ModuleHit",
    "ModuleState",
    "ModuleVersion",
    "NameMatcher",
    "RebootSource",
    "RecordedWindows",
    "RegistryReader",
    "Sight",
    "collect_facts",
    "describe",
    "files_in_use",
    "interface_addresses",
    "judge_sight",
    "linux_sources",
    "local_holders",
    "local_source",
    "reader_for",
    "take_inventory",
    "unknown_names",
    "unreadable_note",
    "windows_sources",
]
