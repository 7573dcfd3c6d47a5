"""Helpers for the upgrade-check tests: run the real CLI, hash whole trees."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.cli import run_cli

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = ROOT / "fixtures" / "registry"


def probe(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=ROOT, timeout=timeout)


def probe_json(*args: str, codes: tuple[int, ...] = (0, 1, 2)) -> tuple[int, dict[str, Any]]:
    proc = probe(*args, "--json", "-")
    assert proc.returncode in codes, (proc.returncode, proc.stderr)
    return proc.returncode, json.loads(proc.stdout)


def passes_as_far_as_it_could_see(code: int, report: dict[str, Any]) -> bool:
    """Exit 0, or exit 1 where every warning is a process scan that could not read every
    process (a host where some process stays unreadable even to root: a sandbox's init, a
    protected process) — never a warning or failure of anything else."""
    warned = [c for c in report["checks"] if c["status"] not in ("pass", "not_run")]
    if code == 0:
        return not warned
    return code == 1 and all(
        c["status"] == "warn" and "could not read" in c["reason"] for c in warned
    )


def check(report: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in report["checks"] if c["name"] == name]
    assert len(found) == 1, [c["name"] for c in report["checks"]]
    return found[0]


def tree_hash(root: Path) -> dict[str, str]:
    """Every file and folder under `root` with its content hash (folders: "dir")."""
    result = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs:
            result[os.path.relpath(os.path.join(directory, name), root)] = "dir"
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as handle:
                result[os.path.relpath(path, root)] = hashlib.sha256(handle.read()).hexdigest()
    return result


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 3, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("notifyprobe: error:"), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
