"""Redaction for anything that leaves the host: secrets always, names and addresses on request.

A support bundle is mailed, uploaded and attached to tickets, so what it must never hold is
decided here, in one place. Secrets (passwords, AUTH exchanges, `user:pass@`) are removed in
every form they could take (raw, JSON-, HTML- and URL-escaped, base64). Host names, IP addresses,
mail addresses and AUTH user names are replaced only when asked (`--redact hosts emails ips
users`), and consistently:
the same original gets the same placeholder in every file, so the evidence still reads as one
story. The mapping back to the originals is returned, to be written beside the bundle, never in it.

Host names are not guessed from text (module versions like 1.0.0.9 and file names like
report.json look like names and addresses): the caller registers the names and addresses it
knows (gateway, sink, probe domain, HELO names, banners, this host), and those are replaced
wherever they appear. IPv6 addresses, mail addresses and IPv4 addresses written with a port
(`10.1.2.3:25`) or in brackets are found by pattern as well. Loopback and unspecified addresses
reveal nothing and are kept.
"""

from __future__ import annotations

import base64
import html
import ipaddress
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus

from probe.masking import hide_secret

REDACTED = "[redacted]"
KINDS = ("hosts", "emails", "ips", "users")
KEPT_NAMES = frozenset({"localhost", "localhost.localdomain", "notifyprobe-sink"})

# Options whose value is a secret. `--password-env NAME` / `--password-file PATH` name where a
# secret lives, not the secret, and are kept: a support engineer needs to see how AUTH was set up.
_SECRET_OPTION_RE = re.compile(r"^--?[\w-]*(password|passwd|secret|token|credential)[\w-]*$", re.I)
_REFERENCE_OPTION_RE = re.compile(r"-(env|file)$", re.I)
_USERINFO_RE = re.compile(r"([A-Za-z][\w+.-]*://[^\s:/@]*):[^\s@/]*@")
_AUTH_RE = re.compile(r"\b(AUTH\s+[A-Za-z0-9_-]+)[ \t]+[^\s\"'<>]+", re.I)
_EMAIL_RE = re.compile(
    r"[A-Za-z0-9.!#$%&'*+?^_`{|}~-]+@"  # no "=" or "/": --from=a@b keeps its option
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_IPV6_CANDIDATE_RE = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f.]{0,15}){2,8}(?![\w:])")
_IPV4_WITH_PORT_RE = re.compile(r"(?<![\w.])(\d{1,3}(?:\.\d{1,3}){3})(?=:\d{1,5}\b|\])")


def is_secret_option(option: str) -> bool:
    """`--password`, `--smtp-secret`, `--api-token`…, but not `--password-env` or `--…-file`."""
    return bool(_SECRET_OPTION_RE.match(option)) and not _REFERENCE_OPTION_RE.search(option)


def clean_argv(argv: Sequence[str]) -> list[str]:
    """The command line as it may be shown: secret option values and `user:pass@` removed."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        option, eq, _ = arg.partition("=")
        if arg.startswith("-") and is_secret_option(option):
            if eq:
                out.append(f"{option}={REDACTED}")
            else:
                out.append(arg)
                hide_next = True
            continue
        out.append(_USERINFO_RE.sub(rf"\1:{REDACTED}@", arg))
    return out


def secret_values_in_argv(argv: Sequence[str]) -> set[str]:
    """The values of secret options on a command line, so they can be removed everywhere else."""
    found: set[str] = set()
    for i, arg in enumerate(argv):
        option, eq, value = arg.partition("=")
        if arg.startswith("-") and is_secret_option(option):
            if eq and value:
                found.add(value)
            elif not eq and i + 1 < len(argv) and argv[i + 1]:
                found.add(argv[i + 1])
        for match in re.finditer(r"://[^\s:/@]*:([^\s@/]+)@", arg):
            found.add(match.group(1))
    return found


def secret_forms(secret: str) -> set[str]:
    """Every way a secret can be written into a JSON, HTML, URL or base64 text."""
    forms = {
        secret,
        html.escape(secret),
        html.escape(secret, quote=False),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        quote(secret, safe=""),
        quote_plus(secret),
    }
    raw = secret.encode("utf-8")
    forms.add(base64.b64encode(raw).decode("ascii"))
    forms.add(base64.b64encode(raw).decode("ascii").rstrip("="))
    return {f for f in forms if f}


@dataclass(frozen=True)
class RedactionMap:
    """Originals → placeholders, per kind. Written beside the bundle, never inside it."""

    kinds: tuple[str, ...]
    hosts: dict[str, str]
    emails: dict[str, str]
    ips: dict[str, str]
    secrets_removed: int
    users: dict[str, str] = field(default_factory=dict)

    def originals(self) -> list[str]:
        return [*self.hosts, *self.emails, *self.ips, *self.users]

    def to_dict(self) -> dict[str, Any]:
        return {
            "note": "keep this file private: it maps the placeholders in the bundle back to the "
            "real names. Secrets are not listed: they were removed, not replaced.",
            "kinds": list(self.kinds),
            "hosts": self.hosts,
            "emails": self.emails,
            "ips": self.ips,
            "users": self.users,
            "secrets_removed": self.secrets_removed,
        }


class Redactor:
    """Removes secrets from text and replaces registered names consistently across calls."""

    def __init__(self, secrets: Iterable[str] = (), kinds: Iterable[str] = ()):
        secrets = tuple(secrets)
        self.kinds = tuple(k for k in KINDS if k in set(kinds))
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown redaction kind(s): {', '.join(sorted(unknown))}")
        forms: set[str] = set()
        for secret in secrets:
            if secret:
                forms |= secret_forms(secret)
        self._secret_forms = sorted(forms, key=lambda f: (-len(f), f))
        self._secrets = tuple(s for s in secrets if s)
        self._hosts: dict[str, str] = {}
        self._emails: dict[str, str] = {}
        self._ips: dict[str, str] = {}
        self._users: dict[str, str] = {}
        self._user_re: re.Pattern[str] | None = None
        self._host_re: re.Pattern[str] | None = None
        self._ipv4_re: re.Pattern[str] | None = None
        self.secrets_removed = 0

    # -- registering what is known --------------------------------------------------------

    def add_host(self, name: str) -> None:
        """A host or domain name to replace wherever it appears (with `hosts`)."""
        name = name.strip().strip("[]").rstrip(".").lower()
        if not name or name in KEPT_NAMES or len(name) < 2:
            return
        if _as_ip(name) is not None:
            self.add_ip(name)
            return
        if not re.fullmatch(r"[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?", name):
            return
        self._name_placeholder(name)

    def add_user(self, name: str) -> None:
        """An AUTH user name to replace wherever it appears as a whole name (with `users`)."""
        name = name.strip().lower()
        if len(name) >= 2 and name not in self._users:
            self._users[name] = f"account-{len(self._users) + 1}"
            self._user_re = None

    def add_ip(self, text: str) -> None:
        """An address to replace wherever it appears (with `ips`)."""
        address = _as_ip(text.strip().strip("[]").split("%")[0])
        if address is not None and _worth_hiding(address):
            self._ip_placeholder(address)

    # -- replacing -------------------------------------------------------------------------

    def redact(self, text: str) -> str:
        if not text:
            return text
        for form in self._secret_forms:
            if form in text:
                self.secrets_removed += text.count(form)
                text = text.replace(form, REDACTED)
        for secret in self._secrets:
            text, found = hide_secret(text, secret)
            self.secrets_removed += found
        text = _USERINFO_RE.sub(rf"\1:{REDACTED}@", text)
        text = _AUTH_RE.sub(rf"\1 {REDACTED}", text)
        if "users" in self.kinds and self._users:
            if self._user_re is None:
                names = sorted(self._users, key=lambda n: (-len(n), n))
                self._user_re = re.compile(
                    r"(?<![\w.@-])(" + "|".join(map(re.escape, names)) + r")(?![\w-])", re.I
                )
            text = self._user_re.sub(lambda m: self._users[m.group(1).lower()], text)
        if "emails" in self.kinds:
            text = _EMAIL_RE.sub(lambda m: self._email_placeholder(m.group(0)), text)
        if "ips" in self.kinds:
            text = _IPV6_CANDIDATE_RE.sub(self._ipv6, text)
            text = _IPV4_WITH_PORT_RE.sub(self._ipv4, text)
            if self._ipv4_re is None and self._ips:
                v4 = sorted((a for a in self._ips if ":" not in a), key=lambda a: (-len(a), a))
                self._ipv4_re = (
                    re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, v4)) + r")(?![\w]|\.\d)")
                    if v4
                    else re.compile(r"(?!x)x")
                )
            if self._ipv4_re is not None:
                text = self._ipv4_re.sub(lambda m: self._ips[m.group(1)], text)
        if "hosts" in self.kinds and self._hosts:
            if self._host_re is None:
                names = sorted(self._hosts, key=lambda n: (-len(n), n))
                self._host_re = re.compile(
                    r"(?:(?<![\w-])|(?<=\b\d{3}-))("  # `250-gw01.example`: an EHLO reply line
                    + "|".join(map(re.escape, names))
                    + r")(?!\.?[\w-])",
                    re.I,
                )
            text = self._host_re.sub(lambda m: self._hosts[m.group(1).lower()], text)
        return text

    def redact_data(self, value: Any) -> Any:
        """The same, through JSON-like data: every string value and key."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {self.redact(str(k)): self.redact_data(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.redact_data(v) for v in value]
        return value

    def mapping(self) -> RedactionMap:
        return RedactionMap(
            kinds=self.kinds,
            hosts=dict(self._hosts) if ("hosts" in self.kinds or "emails" in self.kinds) else {},
            emails=dict(self._emails),
            ips=dict(self._ips),
            secrets_removed=self.secrets_removed,
            users=dict(self._users) if "users" in self.kinds else {},
        )

    # -- placeholders ----------------------------------------------------------------------

    def _name_placeholder(self, name: str) -> str:
        if name not in self._hosts:
            self._hosts[name] = f"host-{len(self._hosts) + 1}"
            self._host_re = None
        return self._hosts[name]

    def _email_placeholder(self, address: str) -> str:
        key = address.lower()
        if key not in self._emails:
            _, _, domain = key.rpartition("@")
            self._emails[key] = f"user-{len(self._emails) + 1}@{self._name_placeholder(domain)}"
        return self._emails[key]

    def _ip_placeholder(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
        key = str(address)
        if key not in self._ips:
            self._ips[key] = f"ip-{len(self._ips) + 1}"
            self._ipv4_re = None
        return self._ips[key]

    def _ipv6(self, match: re.Match[str]) -> str:
        text = match.group(0)
        address = _as_ip(text)
        if not isinstance(address, ipaddress.IPv6Address) or not _worth_hiding(address):
            return text
        return self._ip_placeholder(address)

    def _ipv4(self, match: re.Match[str]) -> str:
        text = match.group(1)
        address = _as_ip(text)
        if address is None or not _worth_hiding(address):
            return text
        return self._ip_placeholder(address)


def _as_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _worth_hiding(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not (address.is_loopback or address.is_unspecified)
