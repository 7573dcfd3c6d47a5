"""Output files are written beside the target and renamed over it: planted links and device
nodes are refused, never written through, and a file's mode is what the probe says it is."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from probe.errors import ProbeError
from probe.ledger import Ledger
from probe.records import Run
from probe.reporting.output import write_output
from tests.cli import run_cli

ROOT = Path(__file__).resolve().parents[2]


def test_a_new_file_is_written_whole_with_the_mode_asked(tmp_path: Path) -> None:
    target = tmp_path / "case.zip.redaction-map.json"
    target.write_text("old")
    target.chmod(0o644)
    write_output(target, b"{}", mode=0o600)
    assert target.read_bytes() == b"{}"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_a_symbolic_link_at_the_target_is_refused_and_its_target_untouched(
    tmp_path: Path,
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    link = tmp_path / "case.zip.sha256"
    link.symlink_to(victim)
    with pytest.raises(ProbeError, match="symbolic link"):
        write_output(link, b"digest")
    assert victim.read_text() == "precious" and link.is_symlink()


def test_a_link_planted_at_the_old_temporary_name_is_never_written(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "case.zip.part").symlink_to(victim)
    write_output(tmp_path / "case.zip", b"zip")
    assert victim.read_text() == "precious"
    assert (tmp_path / "case.zip").read_bytes() == b"zip"


def test_a_device_node_or_fifo_at_the_target_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.zip"
    os.mkfifo(fifo)
    with pytest.raises(ProbeError, match="not a regular file"):
        write_output(fifo, b"zip")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    if os.geteuid() == 0:  # a copy of /dev/null's node: what `--out /dev/null` met as root
        node = tmp_path / "null"
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        with pytest.raises(ProbeError, match="not a regular file"):
            write_output(node, b"zip")
        assert stat.S_ISCHR(os.lstat(node).st_mode)


@pytest.mark.real
@pytest.mark.parametrize("out", ["", ".", str(Path("/tmp"))])
def test_evidence_out_that_is_no_file_name_is_a_one_line_error(tmp_path: Path, out: str) -> None:
    db = tmp_path / "ledger.sqlite3"
    with Ledger(db) as ledger:
        ledger.create_run(Run("abcdef0123", "gw:25", "probe.invalid", 1, 1.0))
    proc = run_cli("evidence", "--last", "--db", str(db), "--out", out, cwd=tmp_path, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
