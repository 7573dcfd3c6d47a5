"""The lab: a gateway with fault modes and stand-in DLLs, to rehearse the probe on one host.

`LabGateway` relays to a sink with a `FaultMode` (healthy, first-only, ...); `build_dll` and
`write_dll` make a minimal PE file with a version resource.
"""

from probe.lab.dll import build_dll, write_dll
from probe.lab.gateway import FaultMode, LabGateway, free_port

__all__ = [
    "FaultMode",
    "LabGateway",
    "build_dll",
    "free_port",
    "write_dll",
]
