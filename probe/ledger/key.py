"""The token key beside the ledger (`<ledger>.key`, 0600): the secret that signs tokens."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path

from probe.correlation import TokenKey
from probe.errors import ProbeError
from probe.files import read_host_file


def key_path(ledger: Path) -> Path:
    return ledger.with_name(ledger.name + ".key")


def load_key(path: Path) -> TokenKey:
    """The token key at `path`; made when there is none (0600, written whole before it appears
    under its name, so a sink and a burst starting together agree on one key)."""
    with contextlib.suppress(FileNotFoundError):
        return _read_key(path)
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise ProbeError(f"cannot create the token key {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_bytes(KEY_BYTES).hex() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temp, path)
    except OSError as exc:
        raise ProbeError(f"cannot create the token key {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)
    return _read_key(path)


def _read_key(path: Path) -> TokenKey:
    try:
        data = read_host_file(path, KEY_BYTES * 4)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ProbeError(f"cannot read the token key {path}: {exc.strerror or exc}") from None
    try:
        return TokenKey(bytes.fromhex(data.decode("ascii").strip()))
    except (UnicodeDecodeError, ValueError):
        raise ProbeError(f"token key {path} is not what notifyprobe writes") from None


KEY_BYTES = 32
