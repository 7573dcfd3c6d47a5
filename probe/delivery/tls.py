"""Transport security: how the burst talks to the gateway, and what the sink offers.

Certificates are verified by default (system store, or a given CA file). Turning verification
off is possible only through an explicit `insecure` flag, which every report then shows.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from probe.delivery.credentials import Secret
from probe.errors import UsageError
from probe.records import RunSecurity

TlsMode = Literal["none", "starttls", "implicit"]
TLS_MODES: tuple[TlsMode, ...] = get_args(TlsMode)


def tls_mode(text: str) -> TlsMode:
    """`text` (an option or config value) as a TLS mode; UsageError names the valid ones."""
    for mode in TLS_MODES:
        if text == mode:
            return mode
    raise UsageError(f"TLS mode must be one of {', '.join(TLS_MODES)}, not {text!r}")


@dataclass(frozen=True)
class ClientSecurity:
    """TLS and AUTH for the submission side. `password` never prints (see `Secret`)."""

    tls: TlsMode = "none"
    ca_file: Path | None = None
    insecure: bool = False
    user: str | None = None
    password: Secret | None = None

    def __post_init__(self) -> None:
        tls_mode(self.tls)  # the type says it; a caller that skipped the check learns it here
        if (self.ca_file is not None or self.insecure) and self.tls == "none":
            raise UsageError("--ca-file and --insecure need --tls starttls or --tls implicit")
        if self.ca_file is not None and self.insecure:
            raise UsageError("--ca-file and --insecure contradict each other: pick one")
        if (self.user is None) != (self.password is None):
            raise UsageError("AUTH needs both --user and a password (--password-env/-file)")
        self.context()  # a missing or broken CA file stops the probe before anything is sent

    def context(self) -> ssl.SSLContext | None:
        """The client TLS context, or None for plain SMTP."""
        if self.tls == "none":
            return None
        if self.insecure:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        try:
            return ssl.create_default_context(
                cafile=str(self.ca_file) if self.ca_file is not None else None
            )
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"cannot load CA file {self.ca_file}: {exc}") from None

    def describe(self) -> RunSecurity:
        """What the reports and the ledger keep: modes and names, never the password."""
        ca_file = str(self.ca_file) if self.ca_file else None
        return RunSecurity(self.tls, ca_file, self.insecure, self.user)


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The sink's STARTTLS context from a certificate chain and its key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load TLS certificate {cert} / key {key}: {exc}") from None
    return context
