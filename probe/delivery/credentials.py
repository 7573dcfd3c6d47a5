"""Secrets for SMTP AUTH: read from an environment variable or a file, never from argv.

A command line is visible to every user of the host (`ps`) and lands in shell history and
evidence bundles, so there is no `--password`. The value is wrapped in `Secret`, whose repr and
str are redacted, so a stray log call or f-string cannot leak it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

from probe.errors import UsageError
from probe.files import read_host_file
from probe.masking import REDACTED

MAX_PASSWORD_FILE_BYTES = 4096


class Secret:
    """A string that does not print itself. Use `reveal()` only where it is sent.

    `source` says where it came from ("env:NAME", "file:PATH"): safe to log and to show.
    """

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str = ""):
        self._value = value
        self.source = source

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED}{', from ' + self.source if self.source else ''})"

    def __str__(self) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> NoReturn:  # no pickling a secret into an archive by accident
        raise TypeError("a Secret cannot be pickled")


def password_from_env(name: str, environ: Mapping[str, str] | None = None) -> Secret:
    value = (os.environ if environ is None else environ).get(name)
    if value is None:
        raise UsageError(f"environment variable {name} (from --password-env) is not set")
    if not value:
        raise UsageError(f"environment variable {name} (from --password-env) is empty")
    return Secret(value, source=f"env:{name}")


def password_from_file(path: Path) -> Secret:
    """The first line of `path`, without its line ending."""
    try:  # a link is followed (secret stores mount them); a FIFO or a device is refused
        data = read_host_file(path, MAX_PASSWORD_FILE_BYTES, follow_link=True)
    except OSError as exc:
        raise UsageError(f"cannot read password file {path}: {exc.strerror}") from None
    lines = data.decode("utf-8", "replace").splitlines()
    if not lines or not lines[0]:
        raise UsageError(f"password file {path} is empty")
    return Secret(lines[0], source=f"file:{path}")
