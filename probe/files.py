"""Reading a file of the inspected host without being fooled by what sits at its path.

The probe runs as root beside processes that any local user starts, and the paths it reads come
from those processes (a mapped module's name) or from the host's folders. Whatever sits there, a
FIFO, a device, a symbolic link to /dev/zero, a sparse file of gigabytes, must cost one bounded
read and a one-line reason, never a hang or the machine's memory. So the file is opened without
blocking and without following a final symbolic link, checked to be a regular file before a byte
is read, and read up to a cap. The descriptor is closed at once: on Windows an open module is a
lock that would block the very uninstall the probe recommends.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

Opener = Callable[[str, int], int]

MODULE_BYTES_MAX = 64 * 2**20  # the largest DLL or shared object worth reading
_READ_CHUNK = 2**20
_NO_BLOCK = getattr(os, "O_NONBLOCK", 0)
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)
_BINARY = getattr(os, "O_BINARY", 0)


class UnsafeFileError(OSError):
    """The path holds something the probe will not read: `strerror` says what, in a few words."""

    def __init__(self, path: str, reason: str):
        super().__init__(errno.EINVAL, reason, path)


def read_host_file(
    path: str | os.PathLike[str],
    limit: int = MODULE_BYTES_MAX,
    *,
    follow_link: bool = False,
    opener: Opener = os.open,
) -> bytes:
    """The bytes of the regular file at `path`, at most `limit` of them.

    Raises UnsafeFileError for a symbolic link (unless `follow_link`: the magic links of
    /proc/PID/map_files are the only ones worth following), anything but a regular file, or a
    file larger than `limit`; other OSErrors (missing, permission) pass through unchanged.
    """
    name = os.fspath(path)
    flags = os.O_RDONLY | _NO_BLOCK | _BINARY | getattr(os, "O_CLOEXEC", 0)
    if not follow_link:
        flags |= _NO_FOLLOW
    try:
        fd = opener(name, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_link:
            raise UnsafeFileError(name, "a symbolic link, not read") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFileError(name, f"not a regular file ({_kind(st.st_mode)})")
        if st.st_size > limit:
            raise UnsafeFileError(name, f"too large ({st.st_size} bytes, at most {limit})")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(_READ_CHUNK, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise UnsafeFileError(name, f"too large (grew past {limit} bytes while read)")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    for test, label in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return label
    return "a special file"
