"""The `burst` options that turn a verdict into a diagnosis (`diagnosis.gather` does the work)."""

from __future__ import annotations

import argparse

from probe.diagnosis import Request


def add_diagnosis_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("diagnosis")
    g.add_argument(
        "--module",
        dest="module_names",
        action="append",
        default=[],
        metavar="NAME",
        help="after the run, find processes with this module loaded (repeatable, "
        "globs allowed), e.g. MPNotifyPerf.dll (default: no module scan)",
    )
    g.add_argument(
        "--installed",
        action="append",
        default=[],
        metavar="PATH",
        help="the installed copy of a --module (repeatable; default: the mapped path)",
    )
    g.add_argument(
        "--process",
        dest="gateway_processes",
        action="append",
        default=[],
        metavar="NAME",
        help="gateway process: record its start time (repeatable; default: none)",
    )
    g.add_argument(
        "--service",
        dest="gateway_services",
        action="append",
        default=[],
        metavar="NAME",
        help="gateway service: record its start time (repeatable; default: none)",
    )


def request_from(args: argparse.Namespace) -> Request:
    return Request(
        module_names=tuple(args.module_names),
        installed=tuple(args.installed),
        processes=tuple(args.gateway_processes),
        services=tuple(args.gateway_services),
    )
