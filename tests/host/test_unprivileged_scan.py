"""A real scan by a user who cannot read every process: root holds a stale copy of a module,
`notifyprobe modules` runs as `nobody` and must say UNKNOWN (exit 3) with how many processes
it could not read and what would let it see — and with the capabilities the shipped unit
grants (docs/examples/notifyprobe-watch.service) the same user must see the stale copy.

Runs only where the suite runs as root on Linux with setpriv (this machine and CI): the holder
must be a process `nobody` may not read.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.hold_module import held
from fixtures.make_pe import build_dll, write_dll

ROOT = Path(__file__).resolve().parents[2]
NOBODY = ("--reuid=65534", "--regid=65534", "--clear-groups")
UNIT = ROOT / "docs" / "examples" / "notifyprobe-watch.service"


def unit_capabilities() -> str:
    """What the shipped unit grants (its uncommented AmbientCapabilities= lines), as setpriv
    spells it: the test below proves the unit's claim, not a copy of it."""
    granted = re.findall(r"^AmbientCapabilities=(.+)$", UNIT.read_text(), re.MULTILINE)
    caps = [c.strip().lower().removeprefix("cap_") for line in granted for c in line.split()]
    assert caps, "the unit grants no capability"
    return ",".join(f"+{c}" for c in caps)


UNIT_CAPS = unit_capabilities()

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(
        not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("setpriv"),
        reason="needs Linux, root (to start a holder nobody may read) and setpriv",
    ),
]


@pytest.fixture
def stale_module() -> Iterator[tuple[Path, int]]:
    """A uniquely named DLL that a root process maps, then replaced on disk: (path, holder pid).
    The folder is world-readable (pytest's tmp_path is not), so `nobody` can stat the file."""
    folder = Path(tempfile.mkdtemp(prefix="notifyprobe-blind-"))
    try:
        folder.chmod(0o755)
        path = write_dll(folder / f"NPBlind{uuid.uuid4().hex[:10]}.dll", "1.0.0.9")
        path.chmod(0o644)
        with held(path) as holder:
            new = path.with_name(path.name + ".setup-tmp")
            new.write_bytes(build_dll("2.0.0.4", name=path.name))
            new.chmod(0o644)
            os.replace(new, path)
            yield path, holder.pid
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def modules_as_nobody(
    module: Path, *extra: str, caps: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`notifyprobe modules` as a real subprocess under uid/gid 65534, optionally with `caps`
    inheritable and ambient (what systemd's AmbientCapabilities= does)."""
    granted = (f"--inh-caps={caps}", f"--ambient-caps={caps}") if caps else ()
    return subprocess.run(
        [
            "setpriv",
            *NOBODY,
            *granted,
            sys.executable,
            "-m",
            "probe",
            "modules",
            "--name",
            module.name,
            "--installed",
            str(module),
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_scan_that_cannot_read_the_holder_is_unknown_and_says_what_would_let_it_see(
    stale_module: tuple[Path, int],
) -> None:
    module, holder = stale_module
    proc = modules_as_nobody(module)
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert f"pid {holder} " not in proc.stdout  # it did not see the holder...
    (line,) = [ln for ln in proc.stdout.splitlines() if "UNKNOWN" in ln]
    counted = re.search(r"could not read (\d+) of (\d+) processes", line)
    assert counted and 1 <= int(counted[1]) < int(counted[2]), line
    assert "run as root" in line and "CAP_SYS_PTRACE" in line  # ...and says what would
    assert "CAP_DAC_READ_SEARCH" in line
    as_json = modules_as_nobody(module, "--json", "-")
    assert as_json.returncode == 3
    report = json.loads(as_json.stdout)
    assert report["sight"] == "partial" and report["unreadable"] >= 1
    assert "CAP_SYS_PTRACE" in report["unreadable_advice"]
    assert "could not read" in as_json.stderr  # --json - still says it, on stderr


def test_with_the_units_capabilities_the_same_user_sees_the_stale_copy(
    stale_module: tuple[Path, int],
) -> None:
    assert UNIT_CAPS == "+sys_ptrace,+dac_read_search"
    module, holder = stale_module
    proc = modules_as_nobody(module, "--json", "-", caps=UNIT_CAPS)
    if proc.returncode not in (0, 1) and "Operation not permitted" in proc.stderr:
        pytest.skip(f"this host does not let root grant {UNIT_CAPS}: {proc.stderr.strip()}")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    report = json.loads(proc.stdout)
    (hit,) = [h for h in report["hits"] if h["pid"] == holder]
    assert hit["state"] == "stale"
    assert hit["installed_version"] == "2.0.0.4"
    # The old copy's bytes need more (map_files): the version is missing, with the reason.
    assert hit["loaded_version"] in (None, "1.0.0.9")
    if hit["loaded_version"] is None:
        assert "CAP_CHECKPOINT_RESTORE" in hit["loaded_error"]


def test_reading_maps_needs_ptrace_not_dac_read_search(stale_module: tuple[Path, int]) -> None:
    """Which capability does what the advice says: without CAP_SYS_PTRACE the holder's maps
    stay unreadable whatever else is granted."""
    module, holder = stale_module
    without_ptrace = modules_as_nobody(module, caps="+dac_read_search")
    assert without_ptrace.returncode == 3, without_ptrace.stdout
    assert f"pid {holder} " not in without_ptrace.stdout
    only_ptrace = modules_as_nobody(module, "--json", "-", caps="+sys_ptrace")
    assert only_ptrace.returncode == 1, only_ptrace.stderr
    assert [h["state"] for h in json.loads(only_ptrace.stdout)["hits"] if h["pid"] == holder] == [
        "stale"
    ]


def test_a_scan_scoped_to_a_process_counts_only_unreadable_processes_of_that_name(
    stale_module: tuple[Path, int],
) -> None:
    """`--process` decides by name (readable by anyone): other users' processes of other names
    are left out, not unreadable. The root-owned holder is in scope and still unreadable."""
    module, _ = stale_module
    nobody_has = modules_as_nobody(module, "--process", "no-such-process-name", "--json", "-")
    assert nobody_has.returncode == 3  # nothing in scope: nothing was scanned, not "clean"
    report = json.loads(nobody_has.stdout)
    assert (report["scanned"], report["unreadable"], report["sight"]) == (0, 0, "empty")
    assert report["out_of_scope"] > 0
    scoped = modules_as_nobody(module, "--process", "python*", "--json", "-")  # the holder's
    report = json.loads(scoped.stdout)
    assert scoped.returncode == 3 and report["unreadable"] >= 1
    assert report["out_of_scope"] > 0 and report["processes"] == ["python*"]
