"""The evidence options, shared by `evidence` and `burst --evidence FILE.zip`: redaction, the
secrets an invocation knows, writing the bundle, and what `burst` keeps with every run so that
a bundle made later (`evidence RUN_ID`) holds the same inventory, diagnosis, log and host facts.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from probe.ledger import Ledger
from probe.reporting import KINDS, BundleResult, clean_argv, make_bundle, secret_values_in_argv

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SECRET_WORDS = ("PASSWORD", "PASSWD", "SECRET", "TOKEN")
SECRET_KEYS = ("password", "passwd", "secret", "token")
MAX_SECRET_FILE_BYTES = 4096


def add_redaction_options(p: argparse._ActionsContainer) -> None:
    p.add_argument(
        "--redact",
        nargs="+",
        action="extend",
        default=[],
        choices=[*KINDS, "all"],
        metavar="KIND",
        help="also replace these consistently: hosts, emails, ips (or all); the mapping is "
        "written beside the bundle as FILE.zip.redaction-map.json (default: none; secrets are "
        "always removed)",
    )


def add_evidence_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("evidence")
    g.add_argument(
        "--evidence",
        type=Path,
        metavar="FILE.zip",
        help="after the run, write its evidence bundle (default: none)",
    )
    add_redaction_options(g)


def write_bundle(args: argparse.Namespace, ledger: Ledger, run_id: str) -> BundleResult:
    """Make the bundle for `run_id` as the options say, and tell the operator where it is."""
    out: Path = args.evidence if getattr(args, "evidence", None) else args.out
    kinds = list(KINDS) if "all" in args.redact else args.redact
    argv = _argv(args)
    result = make_bundle(
        ledger,
        run_id,
        out,
        kinds=kinds,
        secrets=sorted(secrets_from(args)),
        command_line=clean_argv(argv),
    )
    print(
        f"evidence: {result.path} (manifest.json and the {result.listed} files it lists, "
        f"sha256 {result.sha256})",
        file=sys.stderr,
    )
    if result.mapping_path is not None:
        print(
            f"evidence: redaction map (keep private, do not send): {result.mapping_path}",
            file=sys.stderr,
        )
    return result


def kept_with_run(args: argparse.Namespace) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What `burst` keeps with every run for a bundle made later: the command line, and every
    secret it knows (never kept, in any encoding)."""
    return tuple(_argv(args)), tuple(sorted(secrets_from(args)))


def secrets_from(args: argparse.Namespace) -> set[str]:
    """Every secret this invocation knows: option values, env vars and files they name, config
    files' password entries, and NOTIFYPROBE_* variables whose name says secret."""
    found = set(secret_values_in_argv(_argv(args)))
    for name, value in os.environ.items():
        if name.upper().startswith("NOTIFYPROBE_") and any(w in name.upper() for w in SECRET_WORDS):
            found.add(value)
    for attr in ("password_env", "secret_env"):
        for variable in _many(getattr(args, attr, None)):
            if os.environ.get(str(variable)):
                found.add(os.environ[str(variable)])
    for attr in ("password_file", "secret_file"):
        for path in _many(getattr(args, attr, None)):
            found |= _file_secret(Path(str(path)))
    password = getattr(args, "password", None)
    if isinstance(password, str):
        found.add(password)
    elif password is not None and hasattr(password, "reveal"):
        found.add(password.reveal())
    for path in _many(getattr(args, "config", None)):
        found |= config_secrets(Path(str(path)))
    return {s for s in found if s}


def config_secrets(path: Path) -> set[str]:
    """Passwords in a TOML config: literal values and what `*_env` / `*_file` keys point to."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return set()
    found: set[str] = set()
    for key, value in _walk(data):
        if not isinstance(value, str) or not any(w in key.lower() for w in SECRET_KEYS):
            continue
        if key.lower().endswith("_env"):
            found.add(os.environ.get(value, ""))
        elif key.lower().endswith("_file"):
            found |= _file_secret(Path(value))
        else:
            found.add(value)
    return {s for s in found if s}


def _walk(data: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield str(key), value
            yield from _walk(value)
    elif isinstance(data, list):
        for item in data:
            yield from _walk(item)


def _file_secret(path: Path) -> set[str]:
    try:
        with path.open("rb") as handle:
            text = handle.read(MAX_SECRET_FILE_BYTES).decode("utf-8", "replace")
    except OSError:
        return set()
    lines = text.splitlines()
    return {lines[0], text.strip()} if lines else set()


def _many(value: object) -> Iterable[object]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return value
    return (value,)


def _argv(args: argparse.Namespace) -> list[str]:
    argv = getattr(args, "argv", None)
    return list(argv) if argv is not None else sys.argv[1:]
