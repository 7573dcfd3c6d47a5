"""The watch configuration: every key read, every mistake a one-line error, the caps enforced."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from probe.delivery.credentials import Secret
from probe.delivery.settings import BurstSettings
from probe.errors import UsageError
from probe.monitor.config import Caps, load_config, parse
from probe.records import Endpoint

FULL = """
domain = "Probe.Example.org."
sink = "0.0.0.0:2525"
sink_allow_clients = ["192.0.2.0/24", "2001:db8::/32"]
ledger = "data/ledger.sqlite3"
metrics = "127.0.0.1:9478"
retention_days = 7
seed = 42
once = false
log_level = "debug"
log_json = true

[limits]
max_count = 50
min_interval = "30s"
max_per_minute = 60

[defaults]
interval = "5m"
jitter = 0.2
count = 20
gap = "100ms"

[on_change]
command = ["/usr/local/bin/page", "--team", "mail"]
timeout = "10s"
evidence_dir = "/var/lib/notifyprobe/evidence"

[[target]]
name = "gw-paris"
gateway = "gw1.example.org:25"
username = "probe"
password_env = "GW_PASSWORD"

[[target]]
name = "gw-lyon"
gateway = "[2001:db8::1]:2525"
interval = 60
count = 5
concurrency = 2
reuse = false
step_timeout = 5
timeout = "1m"
grace = 2.5
slow_after = 3
control = false
helo = "probe.example.org"
processes = ["MPNotify*.exe", "smtpsvc"]
services = ["MPNotifyGateway"]
"""

MINIMAL = """
[[target]]
name = "gw"
gateway = "127.0.0.1:25"
"""


def test_every_key_is_read(tmp_path):
    cfg = parse(FULL, source="cfg.toml", base=tmp_path, environ={"GW_PASSWORD": "s3cret"})
    assert cfg.domain == "probe.example.org"
    assert cfg.sink == Endpoint("0.0.0.0", 2525)
    assert [str(n) for n in cfg.sink_access.allowed_clients] == ["192.0.2.0/24", "2001:db8::/32"]
    assert cfg.ledger == tmp_path / "data/ledger.sqlite3"  # relative to the config file
    assert cfg.metrics == Endpoint("127.0.0.1", 9478)
    assert (cfg.retention_days, cfg.seed, cfg.once, cfg.log_level, cfg.log_json) == (
        7,
        42,
        False,
        "debug",
        True,
    )
    assert cfg.caps == Caps(max_count=50, min_interval_s=30.0, max_per_minute=60.0)
    assert cfg.on_change is not None
    assert cfg.on_change.command == ("/usr/local/bin/page", "--team", "mail")
    assert cfg.on_change.timeout_s == 10.0
    assert cfg.on_change.evidence_dir == Path("/var/lib/notifyprobe/evidence")
    paris, lyon = cfg.targets
    assert (paris.burst_interval_s, paris.jitter) == (300, 0.2)
    assert (paris.burst.count, paris.burst.notification_gap_s) == (20, 0.1)
    assert paris.security.user == "probe" and paris.security.password == Secret("s3cret")
    assert paris.security.password.source == "env:GW_PASSWORD"
    assert lyon.gateway == Endpoint("2001:db8::1", 2525)
    assert lyon.burst_interval_s == 60
    assert (lyon.burst.count, lyon.burst.concurrency, lyon.burst.per_session) == (5, 2, 1)
    assert (lyon.burst.step_timeout_s, lyon.patience.timeout_s) == (5, 60)
    assert (lyon.patience.grace_s, lyon.thresholds.slow_after_s) == (2.5, 3)
    assert (lyon.burst.control, lyon.burst.helo) == (False, "probe.example.org")
    assert lyon.processes == ("MPNotify*.exe", "smtpsvc")
    assert lyon.services == ("MPNotifyGateway",)
    assert (paris.processes, paris.services) == ((), ())


def test_minimal_config_takes_safe_defaults():
    cfg = parse(MINIMAL)
    (target,) = cfg.targets
    assert cfg.domain == "probe.invalid" and cfg.metrics is None and cfg.on_change is None
    assert (target.burst_interval_s, target.jitter) == (300.0, 0.1)
    assert target.burst == BurstSettings()  # the defaults of `notifyprobe burst`


@pytest.mark.parametrize(
    ("keys", "per_session"),
    [
        ("", 5),
        ("per_session = 20\n", 20),
        ("reuse = false\n", 1),
        ("reuse = true\n", 5),
        ("reuse = false\nper_session = 3\n", 3),
    ],
)
def test_per_session_key_and_the_older_reuse_key_shape_the_burst(keys, per_session):
    assert parse(MINIMAL + keys).targets[0].burst.per_session == per_session


def test_settle_is_unset_by_default_read_when_given_and_never_above_timeout():
    assert (
        parse(MINIMAL).targets[0].patience.settle_s is None
    )  # learned per gateway, or the default
    assert parse(MINIMAL + 'settle = "2s"\n').targets[0].patience.settle_s == 2.0
    with pytest.raises(UsageError, match="must be at most timeout"):
        parse(MINIMAL + 'settle = "40s"\ntimeout = "30s"\n')


def test_secrets_never_show_in_repr_or_str(tmp_path):
    secret_file = tmp_path / "pw"
    secret_file.write_text("hunter2\n")
    text = MINIMAL + f'username = "u"\npassword_file = "{secret_file}"\n'
    cfg = parse(text)
    password = cfg.targets[0].security.password
    assert password is not None and password.reveal() == "hunter2"
    assert "hunter2" not in repr(cfg) and "hunter2" not in str(password)


def test_password_file_is_read_like_burst_reads_it_first_line_only(tmp_path):
    secret_file = tmp_path / "pw"
    secret_file.write_text("hunter2\nsecond line is not part of it\n")
    cfg = parse(MINIMAL + f'username = "u"\npassword_file = "{secret_file}"\n')
    password = cfg.targets[0].security.password
    assert password is not None and password.reveal() == "hunter2"
    (tmp_path / "empty").write_text("")
    with pytest.raises(UsageError, match="is empty"):
        parse(MINIMAL + f'username = "u"\npassword_file = "{tmp_path / "empty"}"\n')


def test_target_tls_and_auth_reach_the_burst_settings(tmp_path):
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    secret_file = tmp_path / "pw"
    secret_file.write_text("hunter2\n")
    text = MINIMAL + (
        f'username = "u"\npassword_file = "{secret_file}"\ntls = "starttls"\n'
        f'ca_file = "{tmp_path / "ca.pem"}"\n'
    )
    target = parse(text).targets[0]
    security = target.security
    assert (security.tls, security.user, security.ca_file) == ("starttls", "u", tmp_path / "ca.pem")
    assert security.password is not None and security.password.reveal() == "hunter2"
    assert "hunter2" not in repr(security)


def test_load_reads_a_file_and_names_it_in_errors(tmp_path):
    path = tmp_path / "watch.toml"
    path.write_text(MINIMAL)
    assert load_config(path).targets[0].name == "gw"
    with pytest.raises(UsageError, match=r"cannot read config .*missing.toml"):
        load_config(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("this is = = not toml", "not valid TOML"),
        ("", r"no \[\[target\]\]"),
        (MINIMAL + "cuont = 3\n", "unknown key 'cuont'"),
        ("colour = 1\n" + MINIMAL, "unknown key 'colour'"),
        (MINIMAL + 'domain = "other.example"\n', "domain and sink are global"),
        (MINIMAL + "count = 101\n", r"count 101 is above the cap of 100 \(\[limits\] max_count\)"),
        (MINIMAL + "interval = 10\n", "interval 10 s is below the minimum of 60 s"),
        (
            "[limits]\nmax_per_minute = 50\n" + MINIMAL + 'interval = "1m"\ncount = 60\n',
            r"60 notifications every 60 s is 60.0 per minute, above the cap of 50",
        ),
        (MINIMAL + "count = 2.5\n", "count must be a whole number"),
        (MINIMAL + 'count = "ten"\n', "count must be a number"),
        (MINIMAL + "reuse = 1\n", "reuse must be true or false"),
        (MINIMAL + 'services = "MPNotifyGateway"\n', "services must be a list"),
        (MINIMAL + 'processes = [""]\n', "processes must be a list of non-empty strings"),
        (MINIMAL + 'interval = "soon"\n', "'soon' is not a duration"),
        (MINIMAL + "jitter = 0.9\n", "jitter is a fraction"),
        (MINIMAL + "interval = nan\n", "interval must be a finite number"),
        ("[limits]\nmin_interval = inf\n" + MINIMAL, "min_interval must be a finite number"),
        (MINIMAL + 'gap = "10s"\ncount = 40\n', "bursts would overlap"),
        (
            MINIMAL + 'password_env = "NOPE_NOT_SET"\nusername = "u"\n',
            r"NOPE_NOT_SET \(from password_env\) is not set",
        ),
        (MINIMAL + 'password_env = "HOME"\n', "a password needs a username"),
        (MINIMAL + 'tls = "maybe"\n', "TLS mode must be one of"),
        (MINIMAL + "insecure = true\n", "need --tls starttls or --tls implicit"),
        (MINIMAL + MINIMAL, "target names must be unique: gw"),
        ('[[target]]\nname = "gw"\n', "gateway"),
        ('[[target]]\nname = "no spaces"\ngateway = "h:25"\n', "name is required"),
        ('[[target]]\nname = "gw"\ngateway = "nonsense"\n', 'must be "HOST:PORT"'),
        ('domain = "not a domain"\n' + MINIMAL, "is not a domain name"),
        ('log_level = "loud"\n' + MINIMAL, "log_level must be one of"),
        ("[limits]\nmin_interval = 1\n" + MINIMAL, "min_interval cannot be below 5 s"),
        ("[limits]\nmax_count = 20000\n" + MINIMAL, "max_count must be 1..10000"),
        ("[limits]\nmax_per_minute = 99999\n" + MINIMAL, "max_per_minute must be above 0"),
        ('[on_change]\ncommand = "page me"\n' + MINIMAL, "never run through a shell"),
    ],
)
def test_mistakes_are_one_line_errors_naming_the_key(text, message):
    with pytest.raises(UsageError, match=message) as caught:
        parse(text, source="cfg.toml", environ={"HOME": "/root"})
    assert "\n" not in str(caught.value).strip()
    assert str(caught.value).startswith("config cfg.toml")


def test_caps_can_be_lowered_and_raised_up_to_the_hard_ceiling():
    text = "[limits]\nmax_count = 1000\nmin_interval = 5\nmax_per_minute = 6000\n" + MINIMAL
    cfg = parse(text + "count = 500\ninterval = 5\n")
    assert (cfg.targets[0].burst.count, cfg.targets[0].burst_interval_s) == (500, 5.0)


def test_the_documented_example_config_is_valid():
    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "watch.toml"
    cfg = load_config(example, environ={"NOTIFYPROBE_LYON_PASSWORD": "x"})
    assert [t.name for t in cfg.targets] == ["meetingplace-paris", "meetingplace-lyon"]
    assert cfg.targets[1].burst_interval_s == 600.0


@pytest.mark.parametrize(
    "line",
    [
        f'step_timeout = "{"9" * 400}s"',  # a string duration that is infinite as a float
        f'interval = "{"9" * 20}d"',
        f"timeout = 1{'0' * 400}",  # a TOML integer above 1e308
        "count = 10000000000000000000000",
    ],
)
def test_numbers_and_durations_beyond_any_bound_are_one_line_errors(line: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse(MINIMAL + line + "\n")
    assert "\n" not in str(caught.value) and "must be" in str(caught.value)


def test_deeply_nested_arrays_are_a_clear_error() -> None:
    with pytest.raises(UsageError, match="nested too deeply"):
        parse(MINIMAL + "seed = " + "[" * 5000 + "]" * 5000 + "\n")


def test_the_per_minute_cap_counts_every_target_together() -> None:
    targets = "".join(
        f'[[target]]\nname = "gw{i}"\ngateway = "127.0.0.1:25"\ncount = 500\ninterval = "5s"\n'
        for i in range(50)
    )
    with pytest.raises(UsageError, match=r"all targets together send 300000\.0 notifications"):
        parse('[limits]\nmax_count = 500\nmin_interval = "5s"\nmax_per_minute = 6000\n' + targets)


def test_the_notification_gap_is_gap_and_its_older_spelling_pacing_still_reads():
    assert parse(MINIMAL + 'gap = "250ms"\n').targets[0].burst.notification_gap_s == 0.25
    assert parse(MINIMAL + 'pacing = "250ms"\n').targets[0].burst.notification_gap_s == 0.25
    with pytest.raises(UsageError, match="give gap, not both gap and pacing"):
        parse(MINIMAL + 'gap = "1s"\npacing = "2s"\n')
