"""The lock: one `watch` per ledger, held by the kernel so a crash releases it."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from probe.errors import ProbeError


@contextlib.contextmanager
def exclusive_use(ledger: Path, purpose: str) -> Iterator[None]:
    """Hold `<ledger>.lock` for `purpose` (one watch per ledger), or stop with who holds it.

    The lock is the kernel's (flock, or a byte-range lock on Windows): a process killed while
    holding it releases it with its last descriptor, so a crashed watch never blocks the next.
    """
    path = ledger.with_name(ledger.name + ".lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _NO_FOLLOW, 0o600)
    except OSError as exc:
        raise ProbeError(f"cannot lock {path}: {exc.strerror or exc}") from None
    try:
        try:
            _lock(fd)
        except OSError:
            os.lseek(fd, 0, os.SEEK_SET)
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            raise ProbeError(
                f"{ledger} is already in use ({holder}): one {purpose} per ledger"
            ) from None
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{purpose}, pid {os.getpid()}".encode())
        yield
    finally:
        os.close(fd)


def _lock(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)
