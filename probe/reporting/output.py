"""Writing an output file (a bundle, its checksum, its redaction map) without trusting its path.

The probe often runs as root, and the folder it writes to may be shared. A file planted at the
target or at a temporary name beside it (a symbolic link to /etc/shadow, a device node) must
never be written through or replaced: the data goes to a fresh, exclusively created file beside
the target, which is then renamed over a target that is absent or a regular file. A reader
never sees half a file.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from probe.errors import ProbeError


def write_output(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write `data` to `path` atomically, with exactly `mode` whatever was there before."""
    if not path.name or path.name in (".", ".."):
        raise ProbeError(f"cannot write {str(path)!r}: not a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _refuse_non_regular(path)
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise ProbeError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        _refuse_non_regular(path)
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise ProbeError(f"cannot write {path}: {exc.strerror or exc}") from None
    except ProbeError:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _refuse_non_regular(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise ProbeError(f"refusing to write {path}: it is a symbolic link")
    if not stat.S_ISREG(st.st_mode):
        raise ProbeError(f"refusing to write {path}: it is not a regular file")
