"""Monitoring: `watch` on an interval, its TOML config, Prometheus metrics.

`load_config` reads the watch TOML into a `WatchConfig`; a `Watcher` runs every target on its
interval through one shared sink, records into the ledger and updates the `Metrics`.
"""

from probe.monitor.config import WatchConfig, load_config
from probe.monitor.metrics import Metrics
from probe.monitor.watch import Watcher

__all__ = [
    "Metrics",
    "WatchConfig",
    "Watcher",
    "load_config",
]
