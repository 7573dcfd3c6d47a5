"""The `watch` configuration: one TOML file → frozen, validated dataclasses.

Every mistake is a `UsageError` naming the file, the place and the key, so a service that will not
start says why in one line. The caps that keep the probe from becoming a mail bomb are checked
here, before a single notification is sent: count per burst, interval between bursts and the
average rate per target, each with a hard ceiling that no configuration can lift; and no target
may be the shared sink's own listener (it would prove nothing about a gateway). A target's
burst keys build the same `BurstSettings` as `notifyprobe burst`'s options, with its defaults.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probe.correlation import probe_domain
from probe.delivery import (
    GAP_KEY,
    MAX_COUNT,
    OLD_GAP_SPELLINGS,
    Access,
    BurstSettings,
    ClientSecurity,
    Patience,
    Secret,
    TlsMode,
    client_network,
    is_own_sink,
    own_sink_message,
    password_from_env,
    password_from_file,
    tls_mode,
)
from probe.errors import UsageError
from probe.files import read_host_file
from probe.logs import LOG_LEVELS
from probe.records import Endpoint
from probe.verdict import Thresholds

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

HARD_MIN_INTERVAL_S = 5.0  # no configuration may burst a gateway more often than this
HARD_MAX_PER_MINUTE = 6_000.0  # nor send it more notifications per minute on average

MAX_NUMBER = 1e12  # far above any real setting, far below where floats lose whole numbers
MAX_DURATION_S = 7 * 86400.0  # no wait, interval or timeout of a watch is longer than a week
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
RUN_BUDGET_SHARE = 0.9  # a run takes at most this share of the shortest interval jitter can draw
DEFAULT_STOP_DRAIN_S = 10.0  # on stop, the longest the sink waits for mail already accepted
MAX_STOP_DRAIN_S = 300.0


@dataclass(frozen=True)
class Caps:
    """Per-target caps; each may be lowered in `[limits]` but never raised past the hard ones."""

    max_count: int = 100
    min_interval_s: float = 60.0
    max_per_minute: float = 120.0


@dataclass(frozen=True)
class Target:
    """One gateway to watch: a burst every `burst_interval_s`, sent as `notifyprobe burst` does."""

    name: str
    gateway: Endpoint
    burst_interval_s: float = 300.0  # key `interval`: start to start of two bursts
    jitter: float = 0.1  # fraction of the interval, spreads bursts of many probes and targets
    burst: BurstSettings = field(default_factory=BurstSettings)
    patience: Patience = field(default_factory=Patience)
    thresholds: Thresholds = field(default_factory=Thresholds)
    security: ClientSecurity = field(default_factory=ClientSecurity)
    modules: tuple[str, ...] = ()  # after each run, count stale copies of these on this host
    installed: tuple[str, ...] = ()  # the installed copies to compare them with
    processes: tuple[str, ...] = ()  # the gateway's processes: their start times, every run
    services: tuple[str, ...] = ()  # the gateway's services: the same

    @property
    def run_budget_s(self) -> float:
        """The longest one run may take, burst and wait for late mail together, so that a
        failing gateway (hung, or losing mail the settle window waits for) keeps the schedule:
        90 % of the shortest interval the jitter can draw."""
        return self.burst_interval_s * (1.0 - self.jitter) * RUN_BUDGET_SHARE

    @property
    def per_minute(self) -> float:
        """Average notifications per minute this target receives (control mail skips it)."""
        return self.burst.count * 60.0 / self.burst_interval_s


@dataclass(frozen=True)
class OnChange:
    """The command run when a target's verdict changes: argv, never a shell string."""

    command: tuple[str, ...] = ()  # empty: only write evidence
    timeout_s: float = 30.0
    evidence_dir: Path | None = None


@dataclass(frozen=True)
class WatchConfig:
    targets: tuple[Target, ...]
    domain: str = "probe.invalid"
    sink: Endpoint = field(default_factory=lambda: Endpoint("127.0.0.1", 2525))
    sink_access: Access = field(default_factory=Access)  # who may deliver to a non-loopback sink
    ledger: Path | None = None  # None: the platform's default ledger
    metrics: Endpoint | None = None
    retention_days: float = 30.0
    seed: int = 0
    once: bool = False
    log_level: str = "info"
    log_json: bool = False
    stop_drain_s: float = DEFAULT_STOP_DRAIN_S  # key `stop_drain`: see Watcher.drain
    caps: Caps = field(default_factory=Caps)
    on_change: OnChange | None = None
    source: str = "<config>"


# -- keys: what each table accepts, and how to read it ----------------------------------------

_TOP_KEYS = {
    "domain",
    "sink",
    "sink_allow_clients",
    "ledger",
    "metrics",
    "retention_days",
    "seed",
    "once",
    "log_level",
    "log_json",
    "stop_drain",
    "limits",
    "defaults",
    "on_change",
    "target",
}
_LIMIT_KEYS = {"max_count", "min_interval", "max_per_minute"}
_TARGET_KEYS = {
    "tls",
    "ca_file",
    "insecure",
    "modules",
    "installed",
    "processes",
    "services",
    "interval",
    "jitter",
    "count",
    "concurrency",
    "per_session",
    "reuse",
    GAP_KEY,
    *(old for old, new in OLD_GAP_SPELLINGS.items() if new == GAP_KEY),
    "step_timeout",
    "timeout",
    "settle",
    "grace",
    "slow_after",
    "control",
    "helo",
    "username",
    "password_env",
    "password_file",
}
_ON_CHANGE_KEYS = {"command", "timeout", "evidence_dir"}

MAX_CONFIG_BYTES = 2**20  # a watch config is a few kilobytes


def load_config(path: Path | str, environ: Mapping[str, str] | None = None) -> WatchConfig:
    """Read and validate a config file. Secrets are resolved now, so a missing one fails early."""
    path = Path(path)
    try:
        text = read_host_file(path, MAX_CONFIG_BYTES, follow_link=True).decode("utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read config {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"cannot read config {path}: not UTF-8 text") from None
    return parse(text, source=str(path), base=path.parent.resolve(), environ=environ)


def parse(
    text: str,
    *,
    source: str = "<config>",
    base: Path = Path("."),
    environ: Mapping[str, str] | None = None,
) -> WatchConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config {source}: not valid TOML: {exc}") from None
    except RecursionError:
        raise UsageError(f"config {source}: arrays or tables nested too deeply") from None
    reader = _Reader(source, base, os.environ if environ is None else environ)
    return reader.config(data)


class _Reader:
    def __init__(self, source: str, base: Path, environ: Mapping[str, str]):
        self.source = source
        self.base = base
        self.environ = environ

    def fail(self, where: str, message: str) -> UsageError:
        place = f" {where}:" if where else ""
        return UsageError(f"config {self.source}:{place} {message}")

    def config(self, data: dict[str, Any]) -> WatchConfig:
        self.only(data, _TOP_KEYS, "")
        caps = self.caps(self.table(data, "limits"))
        defaults = self.table(data, "defaults")
        self.only(defaults, _TARGET_KEYS, "[defaults]")
        raw_targets = data.get("target", [])
        if not isinstance(raw_targets, list) or not all(isinstance(t, dict) for t in raw_targets):
            raise self.fail("", "targets are [[target]] tables")
        if not raw_targets:
            raise self.fail("", "no [[target]]: name at least one gateway to watch")
        targets = tuple(self.target(i, t, defaults, caps) for i, t in enumerate(raw_targets))
        names = [t.name for t in targets]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise self.fail("", f"target names must be unique: {', '.join(duplicates)}")
        total = sum(t.per_minute for t in targets)
        if total > caps.max_per_minute:
            raise self.fail(
                "",
                f"all targets together send {total:.1f} notifications per minute, above the cap "
                f"of {caps.max_per_minute:g} ([limits] max_per_minute counts every target)",
            )
        on_change = self.table(data, "on_change")
        level = self.string(data, "log_level", "", "info")
        if level not in LOG_LEVELS:
            raise self.fail("", f"log_level must be one of {', '.join(LOG_LEVELS)}")
        retention = self.number(data, "retention_days", "", 30.0)
        if retention <= 0:
            raise self.fail("", "retention_days must be above 0")
        stop_drain = self.duration(data, "stop_drain", "", DEFAULT_STOP_DRAIN_S)
        if stop_drain > MAX_STOP_DRAIN_S:
            raise self.fail("", f"stop_drain must be at most {MAX_STOP_DRAIN_S:g} s")
        ledger = data.get("ledger")
        metrics = data.get("metrics")
        sink = self.endpoint(data.get("sink", "127.0.0.1:2525"), "sink")
        for target in targets:  # the shared sink's own listener is no gateway to watch
            if is_own_sink(target.gateway, sink):
                raise self.fail(f"target {target.name!r}", own_sink_message(target.gateway, sink))
        return WatchConfig(
            targets=targets,
            domain=self.domain(data),
            sink=sink,
            sink_access=self.sink_access(data, sink),
            ledger=self.path(self.string(data, "ledger", "", "")) if ledger is not None else None,
            metrics=self.endpoint(metrics, "metrics") if metrics is not None else None,
            retention_days=retention,
            seed=int(self.number(data, "seed", "", 0, integer=True)),
            once=self.boolean(data, "once", "", False),
            log_level=level,
            log_json=self.boolean(data, "log_json", "", False),
            stop_drain_s=stop_drain,
            caps=caps,
            on_change=self.on_change(on_change) if on_change else None,
            source=self.source,
        )

    def sink_access(self, data: dict[str, Any], sink: Endpoint) -> Access:
        """A sink beyond loopback needs the list of gateways that may deliver to it."""
        raw = data.get("sink_allow_clients", [])
        if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
            raise self.fail("", "sink_allow_clients is a list of addresses or CIDR networks")
        try:
            nets = tuple(client_network(c) for c in raw)
            access = Access(allow_remote=bool(nets), allowed_clients=nets)
            access.check_bind(sink.host)
        except UsageError:
            raise self.fail(
                "",
                f"sink {sink} is not loopback: list the gateways that may deliver to it in "
                'sink_allow_clients = ["CIDR", ...]',
            ) from None
        return access

    # -- tables --------------------------------------------------------------------------

    def caps(self, raw: dict[str, Any]) -> Caps:
        self.only(raw, _LIMIT_KEYS, "[limits]")
        where = "[limits]"
        caps = Caps(
            max_count=int(self.number(raw, "max_count", where, Caps.max_count, integer=True)),
            min_interval_s=self.duration(raw, "min_interval", where, Caps.min_interval_s),
            max_per_minute=self.number(raw, "max_per_minute", where, Caps.max_per_minute),
        )
        if not 1 <= caps.max_count <= MAX_COUNT:
            raise self.fail(where, f"max_count must be 1..{MAX_COUNT}")
        if caps.min_interval_s < HARD_MIN_INTERVAL_S:
            raise self.fail(where, f"min_interval cannot be below {HARD_MIN_INTERVAL_S:g} s")
        if not 0 < caps.max_per_minute <= HARD_MAX_PER_MINUTE:
            raise self.fail(
                where, f"max_per_minute must be above 0 and at most {HARD_MAX_PER_MINUTE:g}"
            )
        return caps

    def target(
        self, index: int, raw: dict[str, Any], defaults: dict[str, Any], caps: Caps
    ) -> Target:
        where = f"[[target]] #{index + 1}"
        if isinstance(raw.get("name"), str):
            where = f"target {raw['name']!r}"
        extra = set(raw) - _TARGET_KEYS - {"name", "gateway"}
        if "domain" in extra or "sink" in extra:
            raise self.fail(
                where,
                "domain and sink are global: every target shares the one "
                "sink, which accepts only the probe domain",
            )
        self.only(raw, _TARGET_KEYS | {"name", "gateway"}, where)
        name = raw.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise self.fail(where, "name is required: letters, digits and _ . : - (max 64)")
        if "gateway" not in raw:
            raise self.fail(where, 'gateway = "HOST:PORT" is required')
        merged = {**defaults, **raw}
        d, thresholds = BurstSettings(), Thresholds()
        count = int(self.number(merged, "count", where, d.count, integer=True))
        concurrency = int(self.number(merged, "concurrency", where, d.concurrency, integer=True))
        if count < 1 or concurrency < 1:
            raise self.fail(where, "count and concurrency must be at least 1")
        if count > caps.max_count:
            raise self.fail(
                where, f"count {count} is above the cap of {caps.max_count} ([limits] max_count)"
            )
        password = self.secret(merged, where)
        username = self.string(merged, "username", where, "") or None
        if password is not None and username is None:
            raise self.fail(where, "a password needs a username")
        try:
            burst = BurstSettings(
                count=count,
                concurrency=concurrency,
                per_session=self.per_session(merged, where, d.per_session),
                notification_gap_s=self.duration(
                    merged, self.gap_key(merged, where), where, d.notification_gap_s
                ),
                step_timeout_s=self.duration(merged, "step_timeout", where, d.step_timeout_s),
                control=self.boolean(merged, "control", where, d.control),
                helo=self.string(merged, "helo", where, "") or None,
            )
            security = ClientSecurity(
                tls=self.tls(merged, where),
                ca_file=self.path(merged["ca_file"]) if merged.get("ca_file") else None,
                insecure=self.boolean(merged, "insecure", where, False),
                user=username,
                password=password,
            )
        except UsageError as exc:
            raise self.fail(where, str(exc)) from None
        target = Target(
            name=name,
            gateway=self.endpoint(raw["gateway"], f"{where} gateway"),
            burst_interval_s=self.duration(merged, "interval", where, Target.burst_interval_s),
            jitter=self.number(merged, "jitter", where, Target.jitter),
            burst=burst,
            patience=self.patience(merged, where),
            thresholds=Thresholds(
                slow_after_s=self.duration(merged, "slow_after", where, thresholds.slow_after_s)
            ),
            security=security,
            modules=self.strings(merged, "modules", where),
            installed=self.strings(merged, "installed", where),
            processes=self.strings(merged, "processes", where),
            services=self.strings(merged, "services", where),
        )
        self.check_target(target, where, caps)
        return target

    def check_target(self, t: Target, where: str, caps: Caps) -> None:
        """The caps of a target as a whole: how often, how much per minute, no overlap."""
        if t.burst_interval_s < caps.min_interval_s:
            raise self.fail(
                where,
                f"interval {t.burst_interval_s:g} s is below the minimum of "
                f"{caps.min_interval_s:g} s ([limits] min_interval)",
            )
        if t.per_minute > caps.max_per_minute:
            raise self.fail(
                where,
                f"{t.burst.count} notifications every {t.burst_interval_s:g} s is "
                f"{t.per_minute:.1f} per minute, above the cap of "
                f"{caps.max_per_minute:g} ([limits] max_per_minute)",
            )
        if not 0.0 <= t.jitter <= 0.5:
            raise self.fail(where, "jitter is a fraction of the interval: 0 to 0.5")
        if t.patience.timeout_s <= 0:
            raise self.fail(where, "timeout must be above 0")
        overlap = t.burst.notification_gap_s * t.burst.count
        if overlap > t.burst_interval_s:
            raise self.fail(
                where,
                f"{GAP_KEY} × count ({overlap:g} s) is longer than the interval: "
                "bursts would overlap",
            )

    def gap_key(self, raw: dict[str, Any], where: str) -> str:
        """`gap`, or an older spelling of it (`pacing`); never both."""
        given = [key for key, new in OLD_GAP_SPELLINGS.items() if new == GAP_KEY and key in raw]
        if given and GAP_KEY in raw:
            raise self.fail(where, f"give {GAP_KEY}, not both {GAP_KEY} and {given[0]}")
        return given[0] if given else GAP_KEY

    def per_session(self, raw: dict[str, Any], where: str, default: int) -> int:
        """`per_session = N`; the older `reuse = false` means 1, `reuse = true` the default."""
        if "per_session" in raw:
            return int(self.number(raw, "per_session", where, default, integer=True))
        return default if self.boolean(raw, "reuse", where, True) else 1

    def patience(self, merged: dict[str, Any], where: str) -> Patience:
        default = Patience()
        timeout = self.duration(merged, "timeout", where, default.timeout_s)
        settle = self.duration(merged, "settle", where, 0.0) if "settle" in merged else None
        if settle is not None and settle > timeout:
            raise self.fail(where, "settle (the settle window) must be at most timeout")
        grace = self.duration(merged, "grace", where, default.grace_s)
        return Patience(settle_s=settle, grace_s=grace, timeout_s=timeout)

    def on_change(self, raw: dict[str, Any]) -> OnChange:
        where = "[on_change]"
        self.only(raw, _ON_CHANGE_KEYS, where)
        command = raw.get("command", [])
        if not isinstance(command, list) or not all(isinstance(a, str) and a for a in command):
            raise self.fail(
                where,
                'command is a list of arguments, e.g. ["/usr/local/bin/page", '
                '"--team", "mail"]; it is never run through a shell',
            )
        timeout = self.duration(raw, "timeout", where, 30.0)
        if not 0 < timeout <= 600:
            raise self.fail(where, "timeout must be above 0 and at most 600 s")
        evidence = self.string(raw, "evidence_dir", where, "")
        if not command and not evidence:
            raise self.fail(where, "give a command, an evidence_dir, or both")
        return OnChange(
            command=tuple(command),
            timeout_s=timeout,
            evidence_dir=self.path(evidence) if evidence else None,
        )

    # -- values --------------------------------------------------------------------------

    def only(self, raw: dict[str, Any], known: set[str], where: str) -> None:
        unknown = sorted(set(raw) - known)
        if unknown:
            raise self.fail(
                where, f"unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})"
            )

    def table(self, data: dict[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise self.fail("", f"[{key}] must be a table")
        return value

    def string(self, raw: dict[str, Any], key: str, where: str, default: str) -> str:
        value = raw.get(key, default)
        if not isinstance(value, str):
            raise self.fail(where, f"{key} must be a string")
        return value

    def tls(self, raw: dict[str, Any], where: str) -> TlsMode:
        try:
            return tls_mode(self.string(raw, "tls", where, "none"))
        except UsageError as exc:
            raise self.fail(where, str(exc)) from None

    def strings(self, raw: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(where, f"{key} must be a list of non-empty strings")
        return tuple(value)

    def boolean(self, raw: dict[str, Any], key: str, where: str, default: bool) -> bool:
        value = raw.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(where, f"{key} must be true or false")
        return value

    def number(
        self, raw: dict[str, Any], key: str, where: str, default: float, *, integer: bool = False
    ) -> float:
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(where, f"{key} must be a number")
        if abs(value) > MAX_NUMBER or not math.isfinite(value):
            raise self.fail(where, f"{key} must be a finite number of at most {MAX_NUMBER:g}")
        if integer and not float(value).is_integer():
            raise self.fail(where, f"{key} must be a whole number")
        if value < 0:
            raise self.fail(where, f"{key} cannot be negative")
        return float(value)

    def duration(self, raw: dict[str, Any], key: str, where: str, default: float) -> float:
        """Seconds as a number, or a string with a unit: "250ms", "30s", "5m", "1h", "1d"."""
        value = raw.get(key, default)
        if isinstance(value, str):
            match = _DURATION_RE.match(value)
            if not match:
                raise self.fail(
                    where, f'{key} {value!r} is not a duration (e.g. 30, "30s", "5m", "1h")'
                )
            seconds = float(match.group(1)) * _UNIT_S[match.group(2) or "s"]
        else:
            seconds = self.number(raw, key, where, default)
        if not math.isfinite(seconds) or seconds > MAX_DURATION_S:
            raise self.fail(where, f"{key} must be at most {MAX_DURATION_S / 86400:g} days")
        return seconds

    def endpoint(self, value: object, where: str) -> Endpoint:
        try:
            return Endpoint.parse(value) if isinstance(value, str) else Endpoint.parse("")
        except ValueError:
            raise self.fail("", f'{where} must be "HOST:PORT", got {value!r}') from None

    def domain(self, data: dict[str, Any]) -> str:
        value = self.string(data, "domain", "", "probe.invalid")
        try:
            return probe_domain(value)
        except ValueError:
            raise self.fail("", f"domain {value.strip().lower()!r} is not a domain name") from None

    def path(self, text: str) -> Path:
        path = Path(text).expanduser()
        return path if path.is_absolute() else self.base / path

    def secret(self, raw: dict[str, Any], where: str) -> Secret | None:
        """Read exactly as `burst --password-env/--password-file` does (`delivery.credentials`)."""
        env = self.string(raw, "password_env", where, "")
        file = self.string(raw, "password_file", where, "")
        if env and file:
            raise self.fail(where, "give password_env or password_file, not both")
        try:
            if env:
                return password_from_env(env, self.environ)
            if file:
                return password_from_file(self.path(file))
        except UsageError as exc:
            raise self.fail(where, str(exc).replace("--password-env", "password_env")) from None
        return None
