"""`notifyprobe watch`: probe every configured gateway on an interval, serve Prometheus metrics."""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from prometheus_client import disable_created_metrics

from probe.cli.common import common_parent, endpoint, open_ledger, stop_on_signals
from probe.ledger import exclusive_use
from probe.logs import configure
from probe.monitor import Metrics, WatchConfig, Watcher, load_config


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    p = subparsers.add_parser(
        "watch",
        # The log level's default is the config's log_level, itself "info" by default.
        parents=[common_parent(level_default="info, or the config's log_level")],
        help="keep probing the configured gateways; serve Prometheus metrics",
        description="Run a burst per target on an interval (with jitter) through one shared "
        "sink, keep history in the ledger, expose Prometheus metrics and run a command when a "
        "verdict changes. Every option below also has a config key (docs/watch.md).",
    )
    p.add_argument("--config", type=Path, required=True, metavar="FILE", help="TOML config")
    p.add_argument(
        "--metrics",
        type=endpoint,
        default=None,
        metavar="HOST:PORT",
        help="serve /metrics here (config: metrics)",
    )
    p.add_argument("--db", type=Path, default=None, metavar="PATH", help="ledger (config: ledger)")
    p.add_argument(
        "--once",
        action="store_true",
        default=None,
        help="one run per target, then exit with the worst state (config: once)",
    )
    p.add_argument("--seed", type=int, default=None, help="jitter seed (config: seed)")
    p.add_argument(
        "--check",
        action="store_true",
        help="validate the config, print a summary and exit (0 when valid, 3 when not)",
    )
    # Unset log options fall back to the config's log_level / log_json.
    p.set_defaults(handler=run, log_level=None, log_json=None)


def load(args: argparse.Namespace) -> WatchConfig:
    cfg = load_config(args.config)
    overrides: dict[str, Any] = {}  # argparse values: checked by the parser, typed as Any
    if args.metrics is not None:
        overrides["metrics"] = args.metrics
    if args.db is not None:
        overrides["ledger"] = args.db
    if args.once is not None:
        overrides["once"] = args.once
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.log_level is not None:
        overrides["log_level"] = args.log_level
    if args.log_json is not None:
        overrides["log_json"] = args.log_json
    return replace(cfg, **overrides)


def announce(line: str) -> None:
    print(f"notifyprobe watch: {line}", file=sys.stderr, flush=True)


async def serve(cfg: WatchConfig) -> int:
    # Windows has no asyncio signal handlers: Ctrl-C cancels the run, the finally blocks
    # still judge and record everything.
    stop = stop_on_signals()
    disable_created_metrics()  # no `_created` twin of every counter: this process is the probe
    metrics = Metrics()
    with open_ledger(cfg.ledger) as ledger, exclusive_use(ledger.path, "watch"):
        watcher = Watcher(cfg, ledger, metrics, announce)
        watcher.prepare()  # every series and the restored state, before the first scrape
        if cfg.metrics is not None:
            bound = metrics.serve(cfg.metrics, watcher.probe_endpoint)
            announce(f"metrics listening on {bound}")
        try:
            worst = await watcher.run(stop)
        finally:
            metrics.close()
    return int(worst) if cfg.once else 0


def run(args: argparse.Namespace) -> int:
    cfg = load(args)
    configure(json_lines=cfg.log_json, level=cfg.log_level)
    if args.check:
        names = ", ".join(
            f"{t.name} ({t.gateway}, {t.burst.count} every {t.burst_interval_s:g} s)"
            for t in cfg.targets
        )
        print(f"config {cfg.source} is valid: {len(cfg.targets)} target(s): {names}")
        return 0
    return asyncio.run(serve(cfg))
