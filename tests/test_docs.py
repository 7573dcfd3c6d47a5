"""Docs that run: every command shown in README.md and docs/ is run as written, or listed here
with the reason it cannot run on one Linux host.

Each page's commands (shell code blocks, and `$ notifyprobe …` lines) run in order in one bash
session, as a reader would type them: from a fresh directory that holds only what a clone holds
(the Makefile, pyproject.toml, docs/ and the .venv `make` made), with no virtualenv activated,
a private data directory (so `--last` means this session's runs) and the placeholders of the
page replaced by what stands for them here: the gateway by a lab gateway the test starts,
`:2525` by a free port, `/tmp/…` by a private directory. A long-running command (a sink, a lab
gateway) is started in the background, as in a second terminal, and stopped with the page.

A command found on a page and not in `COMMANDS` fails the suite, and so does an entry of
`COMMANDS` that no page shows any more: a page cannot drift away from the program unnoticed.
Every `--option` a page names for a subcommand, run or not, must exist in its `--help`.
"""

from __future__ import annotations

import contextlib
import io
import mmap
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from probe.cli import main
from probe.lab import write_dll
from tests.ports import unused_port

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SHELL_LANGS = {"", "sh", "bash", "console", "shell"}
# The programs whose lines in a code block are commands; anything else there is output, a
# config file or a diagram.
PROGRAMS = {
    "notifyprobe",
    "make",
    "pip",
    "pipx",
    "python",
    "python3",
    ".",
    "source",
    "sudo",
    "journalctl",
    "systemctl",
    "nssm",
    "schtasks",
    "reg",
    "sha256sum",
    "unzip",
    "sleep",
    "postmap",
    "postfix",
    "cd",
    "curl",
    "export",
    "pyinstrument",
}
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.M | re.S,
)
PAGE_TIMEOUT_S = 60


@dataclass(frozen=True)
class Run:
    """Run it; it must exit with one of `exits` and, when given, print a line matching `says`."""

    exits: frozenset[int]
    says: str | None = None


@dataclass(frozen=True)
class Service:
    """Runs until stopped: started in the background, stopped with the page."""


@dataclass(frozen=True)
class Skip:
    """Not run here, for `reason`; its options are still checked against `--help`."""

    reason: str


def run(*exits: int, says: str | None = None) -> Run:
    return Run(frozenset(exits), says)


SYNOPSIS = Skip("a usage synopsis, not a command")
WINDOWS = Skip("Windows only (a Windows path, registry or service manager)")
SYSTEMD = Skip("installs a systemd service as root")
REAL_MTA = Skip("changes a real Postfix; tests/test_real_mta.py runs that set-up privately")
BENCH = Skip("a benchmark: `make bench`, never part of `make test`")
INSTALL = Skip("installs the package into an environment (needs the package index)")

# fmt: off
COMMANDS: dict[str, Run | Service | Skip] = {
    # README.md: the first-use path, in order
    "make demo": run(0),
    "make test": Skip("the suite this test is part of"),
    ".venv/bin/notifyprobe verdict --last": run(0, says=r"healthy"),
    ". .venv/bin/activate": run(0),
    # 1: a parallel demo's stand-in; 3: a process even root cannot read (a sandbox's init)
    "notifyprobe modules --name MPNotifyPerf.dll": run(0, 1, 3),
    "pip install .": INSTALL,
    "python3 -m venv /opt/notifyprobe": Skip("creates the service's install folder as root"),
    "systemctl daemon-reload && systemctl enable --now notifyprobe-watch": SYSTEMD,
    "pipx install .": INSTALL,
    "notifyprobe burst --gateway gateway.example.org:25 --sink 0.0.0.0:2525 --allow-remote "
    "--allow-client 192.0.2.25 --domain probe.example.org --count 20": run(0, says=r"healthy"),
    # docs/burst.md
    "notifyprobe burst --gateway HOST:PORT [--sink HOST:PORT | --no-sink] [--domain D] "
    "[--count N] [--concurrency C] [--per-session N] [--gap S] [--step-timeout S] "
    "[--breaker N] [--settle S] [--timeout S] [--grace S] [--slow-after S] [--no-control] "
    "[--json FILE|-] [--db PATH] [--log-json] [--log-level L]": SYNOPSIS,
    "notifyprobe lab gateway --listen 127.0.0.1:2526 --relay 127.0.0.1:2525 "
    "--mode batch:2 &": Service(),
    "notifyprobe burst --gateway 127.0.0.1:2526 --sink 127.0.0.1:2525 --count 20 "
    "--db /tmp/batch.sqlite3": run(0, says=r"healthy"),
    "sleep 2": run(0),
    "notifyprobe burst --gateway localhost:2525 --sink 127.0.0.1:2525 --format nagios": run(
        3, says=r"^NOTIFYPROBE UNKNOWN - gateway localhost:\d+ is the probe's own sink listener"
    ),
    "notifyprobe burst --gateway 127.0.0.1:2526 --sink 127.0.0.1:2525 --count 20 "
    "--db /tmp/batch.sqlite3 --settle 1": run(2, says=r"first_only"),
    # docs/verdict.md
    "notifyprobe runs [--target NAME] [--gateway HOST:PORT] [--limit N] [--json FILE|-] "
    "[--db PATH]": SYNOPSIS,
    # docs/drift.md
    "notifyprobe drift --default DIR --relocated DIR [--registry FILE.reg] "
    "[--default-as WINPATH --relocated-as WINPATH] [--service NAME ...] "
    "[--profile msmail-relocated] [--json FILE|-]": SYNOPSIS,
    'reg export "HKLM\\SYSTEM\\CurrentControlSet\\Services" services.reg': WINDOWS,
    # docs/evidence.md
    "notifyprobe evidence (RUN_ID | --last) --out FILE.zip [--redact hosts emails ips users | all] "
    "[--secret-env NAME]... [--secret-file PATH]... [--db PATH]": SYNOPSIS,
    "notifyprobe burst ... --evidence FILE.zip [--redact ...]": SYNOPSIS,
    "notifyprobe evidence --last --out evidence.zip": run(0),
    "sha256sum -c evidence.zip.sha256": run(0, says=r"evidence.zip: OK"),
    "unzip -q evidence.zip -d case && cd case": run(0),
    'python3 -c \'import json,hashlib; m=json.load(open("manifest.json")) for f in m["files"]: '
    'd=open(f["name"],"rb").read() assert hashlib.sha256(d).hexdigest()==f["sha256"] and '
    'len(d)==f["size"], f["name"] print("ok", len(m["files"]), "files")\'': run(0, says=r"^ok \d+"),
    # docs/fix.md
    "notifyprobe fix rename-in-use --profile NAME [--root DIR] [--apply] "
    "[--journal FILE]": SYNOPSIS,
    "notifyprobe fix sync-relocated --default DIR --relocated DIR [--backup-dir DIR] [--apply] "
    "[--journal FILE]": SYNOPSIS,
    "notifyprobe fix undo JOURNAL": SYNOPSIS,
    # docs/lab.md
    "notifyprobe lab gateway --listen HOST:PORT --relay HOST:PORT --mode MODE [--seed N] "
    "[--rewrite]": SYNOPSIS,
    "notifyprobe lab gateway --listen 127.0.0.1:2526 --relay 127.0.0.1:2525 "
    "--mode stall:end_of_data": Service(),
    "notifyprobe burst --gateway 127.0.0.1:2526 --sink 127.0.0.1:2525 --step-timeout 1": run(
        2, says=r"gateway_stalled"
    ),
    "notifyprobe lab gateway --listen 127.0.0.1:2527 --relay 127.0.0.1:2525 "
    "--mode hang-up:data": Service(),
    "notifyprobe burst --gateway 127.0.0.1:2527 --sink 127.0.0.1:2525": run(
        2, says=r"gateway_hung_up: the gateway hung up on all 2 notifications at DATA"
    ),
    # docs/modules.md
    "notifyprobe modules [--name NAME ...] [--installed PATH ...] [--process NAME ...] "
    "[--json FILE|-] [--recorded FILE]": SYNOPSIS,
    "python -m bench.module_scan --rounds 9": BENCH,
    "python -m bench.module_scan --rounds 9 --no-hit": BENCH,
    # docs/nagios.md: a healthy gateway here, so the line is OK (the page's example is CRITICAL)
    "notifyprobe burst --gateway gw.example.org:25 --sink 0.0.0.0:2525 --domain probe.example.org "
    "--allow-remote --allow-client 192.0.2.25 --format nagios --warning loss=5%,latency=2s "
    "--critical loss=20%,latency=10s": run(
        0,
        says=r"^NOTIFYPROBE OK - healthy: .* \| 'sent'=10;;;0 'accepted'=10;;;0;10 "
        r"'delivered'=10;;;0;10 'loss'=0%;5;20;0;100 'latency_max'=[\d.]+s;2;10;0",
    ),
    # docs/performance.md
    "make bench": Skip("installs Postfix and lsof with apt, then measures for minutes"),
    ".venv/bin/python -m bench.bench --only sink": BENCH,
    ".venv/bin/python -m bench.bench --messages 20000 --repeats 5": BENCH,
    ".venv/bin/python -m bench.bench --only start": BENCH,
    ".venv/bin/python -X importtime -c \"import probe.cli; probe.cli.build_parser(['burst'])\" "
    "2>&1 | sort -t'|' -k2 -n | tail": run(0, says=r"\|\s+probe\.cli\.\w+$"),
    # docs/postflight.md, docs/preflight.md
    "notifyprobe postflight --profile NAME [--root DIR] [--expect-version A.B.C.D] "
    "[--registry FILE.reg] [--ignore-reboot-source NAME ...] "
    "[--gateway HOST:PORT [burst options]] [--format text|json|nagios] "
    "[--json FILE|-] [--db PATH]": SYNOPSIS,
    "notifyprobe preflight --profile NAME [--root DIR] [--backup DIR] [--registry FILE.reg] "
    "[--ignore-reboot-source NAME ...] [--format text|json|nagios] [--json FILE|-]": SYNOPSIS,
    "notifyprobe preflight --profile exchange-sp4 --root /srv/case-4711/E": run(
        2,
        says=r"^  FAIL +in use: Exchsrvr/BIN/Mdbperf\.dll: held by pid \d+ .*\(loaded\).*; "
        "the installer cannot replace it",
    ),
    # docs/real-mail-setup.md
    "postmap /etc/postfix/transport && postfix reload": REAL_MTA,
    "notifyprobe sink --listen 0.0.0.0:2525 --allow-remote --allow-client 192.0.2.25 "
    "--domain probe.example.org --db /var/lib/notifyprobe/ledger.sqlite3": Service(),
    "notifyprobe burst --no-sink --gateway gateway.example.org:25 --sink sink.example.org:2525 "
    "--domain probe.example.org --db /var/lib/notifyprobe/ledger.sqlite3 --json report.json": run(
        0, says=r"healthy"
    ),
    # docs/sink.md, docs/verdict.md
    "notifyprobe sink --listen HOST:PORT --domain D --db PATH": SYNOPSIS,
    "notifyprobe verdict RUN_ID [--json FILE|-] [--db PATH]": SYNOPSIS,
    "notifyprobe verdict --last [--json FILE|-] [--db PATH]": SYNOPSIS,
    # docs/watch.md
    "notifyprobe watch --config /etc/notifyprobe/watch.toml [--metrics HOST:PORT] [--db PATH] "
    "[--once] [--seed N] [--check] [--log-level LEVEL] [--log-json]": SYNOPSIS,
    "notifyprobe watch --config docs/examples/watch.toml --check": run(0, says=r"is valid"),
    "sudo useradd --system --home /var/lib/notifyprobe --shell /usr/sbin/nologin "
    "notifyprobe": SYSTEMD,
    "sudo install -m 0644 notifyprobe-watch.service /etc/systemd/system/": SYSTEMD,
    "sudo systemctl daemon-reload && sudo systemctl enable --now notifyprobe-watch": SYSTEMD,
    "journalctl -u notifyprobe-watch -f": SYSTEMD,
    'nssm install notifyprobe-watch "C:\\notifyprobe\\venv\\Scripts\\notifyprobe.exe" ^ watch '
    "--config C:\\ProgramData\\notifyprobe\\watch.toml": WINDOWS,
    "nssm set notifyprobe-watch AppDirectory C:\\ProgramData\\notifyprobe": WINDOWS,
    "nssm set notifyprobe-watch AppStdout C:\\ProgramData\\notifyprobe\\watch.log": WINDOWS,
    "nssm set notifyprobe-watch AppStderr C:\\ProgramData\\notifyprobe\\watch.log": WINDOWS,
    "nssm set notifyprobe-watch AppStopMethodConsole 15000": WINDOWS,
    'nssm set notifyprobe-watch ObjectName ".\\notifyprobe" '
    '"<password of the service account>"': WINDOWS,
    "nssm start notifyprobe-watch": WINDOWS,
    'schtasks /Create /TN "notifyprobe watch" /SC MINUTE /MO 5 /RU notifyprobe /RP * ^ /TR '
    '"C:\\notifyprobe\\venv\\Scripts\\notifyprobe.exe watch --once --config '
    'C:\\ProgramData\\notifyprobe\\watch.toml"': WINDOWS,
    # docs/signatures/
    "notifyprobe burst --gateway GATEWAY:25 --sink 0.0.0.0:2525 --allow-remote --allow-client "
    "GATEWAY-IP --domain probe.example.org --module MPNotifyPerf.dll --installed "
    "'D:\\path\\of\\the\\new\\MPNotifyPerf.dll' --service 'SMTP service name' "
    "--service 'Notification service name'": WINDOWS,
    "notifyprobe modules --name Mdbperf.dll --name Msefperf.dll --name Mtaperf.dll "
    "--name Perfdsa.dll": run(0, 1, 3),  # 1: a parallel test's stand-in; 3: see README's
    "notifyprobe modules --name '*.dll' --name '*.exe' --installed "
    "'C:\\exchsrvr\\Msmcon\\Bin\\<file>' ...": SYNOPSIS,
}
# fmt: on


@dataclass(frozen=True)
class Command:
    page: str
    text: str  # as the page writes it, continuation lines included

    @property
    def key(self) -> str:
        """The command on one line, without its comment: what `COMMANDS` is keyed by."""
        return " ".join(_without_comment(self.text).replace("\\\n", " ").split())

    @property
    def background(self) -> bool:
        return isinstance(COMMANDS.get(self.key), Service)


def _without_comment(text: str) -> str:
    quote = ""
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip()
    return text


def _complete(text: str) -> bool:
    if text.endswith(("\\", "^")):
        return False
    try:
        shlex.split(text)
    except ValueError:  # a quote spans lines: python3 -c '…'
        return False
    return True


def commands_of(page: Path) -> list[Command]:
    found: list[Command] = []
    name = str(page.relative_to(ROOT))
    for block in FENCE.finditer(page.read_text(encoding="utf-8")):
        if block["lang"] not in SHELL_LANGS:
            continue
        lines = [line.removeprefix(block["indent"]) for line in block["body"].splitlines()]
        prompted = any(line.startswith("$ ") for line in lines)
        pending: list[str] = []
        continues = False  # an indented line right after a command goes on with it (synopses)
        for line in lines:
            if not pending and continues and line[:1] in (" ", "\t") and line.strip():
                last = found.pop()
                found.append(Command(name, f"{last.text}\n{line}"))
                continue
            continues = False
            if not pending:
                if prompted and not line.startswith("$ "):
                    continue
                line = line.removeprefix("$ ")
                words = line.split()
                if not words or line[0].isspace():
                    continue
                if words[0] not in PROGRAMS and not words[0].startswith(".venv/"):
                    continue
            pending.append(line)
            text = "\n".join(pending)
            if _complete(_without_comment(text)):
                found.append(Command(name, text))
                pending, continues = [], True
    return found


ALL = [c for page in PAGES for c in commands_of(page)]


def test_every_command_on_a_page_is_run_or_listed_with_its_reason():
    unlisted = [f"{c.page}: {c.key!r}" for c in ALL if c.key not in COMMANDS]
    assert not unlisted, "commands on a page that the test neither runs nor lists:\n" + "\n".join(
        unlisted
    )


def test_every_listed_command_is_still_on_a_page():
    shown = {c.key for c in ALL}
    assert [key for key in COMMANDS if key not in shown] == []


def _subcommand(words: list[str]) -> list[str]:
    path = []
    for word in words[1:]:
        if not re.fullmatch(r"[a-z][a-z-]*", word):
            break
        path.append(word)
    return path


def help_of(subcommand: tuple[str, ...]) -> str:
    """`notifyprobe SUBCOMMAND --help`, in this process."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit) as done:
        main([*subcommand, "--help"])
    assert done.value.code == 0, f"notifyprobe {' '.join(subcommand)} --help"
    return printed.getvalue()


def test_every_option_a_page_names_exists_in_the_commands_help():
    helps: dict[tuple[str, ...], str] = {}
    missing = []
    for c in ALL:
        words = c.key.split()
        if words[0] != "notifyprobe":
            continue
        sub = tuple(_subcommand(words))
        if sub not in helps:
            helps[sub] = help_of(sub)
        options = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", helps[sub]))
        missing += [
            f"{c.page}: {opt} ({c.key})"
            for opt in re.findall(r"(?<![\w-])--[a-z][a-z-]*", c.key)
            if opt not in options
        ]
    assert missing == [], "options a page shows that the command does not take"


# -- running the pages ---------------------------------------------------------------------------


def runnable(page: Path) -> bool:
    return any(isinstance(COMMANDS.get(c.key), Run | Service) for c in commands_of(page))


@pytest.fixture
def held_case_root(tmp_path: Path) -> Iterator[Path]:
    """preflight.md's `/srv/case-4711/E`: a copy of an Exchange drive whose Mdbperf.dll a process
    (this one) has loaded, as a performance-counter reader would."""
    root = tmp_path / "case-4711" / "E"
    (root / "Exchsrvr" / "BIN").mkdir(parents=True)
    for name in ("Mdbperf.dll", "Msefperf.dll", "Mtaperf.dll", "Perfdsa.dll"):
        write_dll(root / "Exchsrvr" / "BIN" / name, "5.5.2653.0")
    with open(root / "Exchsrvr" / "BIN" / "Mdbperf.dll", "rb") as handle:
        view = mmap.mmap(handle.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
    yield root
    view.close()


def clone(tmp_path: Path) -> Path:
    """What a reader who just cloned and ran `make` has: the repository's top-level files, the
    docs, and .venv (linked: the one `make test` made)."""
    stamp, project = ROOT / ".venv" / ".installed", ROOT / "pyproject.toml"
    # `make` in the clone would reinstall from a copy that has no package, into the real .venv
    assert stamp.exists() and stamp.stat().st_mtime >= project.stat().st_mtime, (
        "pyproject.toml is newer than .venv: run `make .venv/.installed` first"
    )
    here = tmp_path / "notifyprobe"
    here.mkdir()
    for name in ("Makefile", "pyproject.toml", "docs", ".venv"):
        (here / name).symlink_to(ROOT / name)
    return here


def session_env(private: Path, *, notifyprobe_on_path: bool) -> dict[str, str]:
    """A reader's shell: no virtualenv activated (README.md gets there itself; the other pages
    assume notifyprobe installed), a data directory of its own."""
    path = os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if Path(p).resolve() != VENV_BIN.resolve()
    )
    if notifyprobe_on_path:
        path = f"{VENV_BIN}{os.pathsep}{path}"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return env | {
        "PATH": path,
        "XDG_DATA_HOME": str(private / "data"),
        "PYTHONUNBUFFERED": "1",
        "NOTIFYPROBE_LYON_PASSWORD": "the password watch.toml names",
    }


def _listen_port(command: str) -> int:
    match = re.search(r"--listen \S+:(\d+)", command)
    assert match, f"a background command without --listen: {command}"
    return int(match[1])


def background(command: str, port: int, log: Path) -> list[str]:
    """Start `command` as in a second terminal, and wait until it listens on `port`."""
    return [
        f"{command} >{log} 2>&1 &",
        f"for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && break; "
        "sleep 0.1; done",
    ]


def script(commands: list[Command], subs: dict[str, str], out: Path) -> list[str]:
    """The page as one bash session; each command's output and exit code kept by its index."""
    lines = []
    for i, c in enumerate(commands):
        text = c.text.removesuffix("&").rstrip() if c.background else c.text
        text = re.sub("|".join(map(re.escape, subs)), lambda m: subs[m[0]], text)
        if c.background:
            lines += background(text, _listen_port(text), out / f"{i}.err")
        else:
            lines += [
                f"{{ {text}\n}} >{out}/{i}.out 2>{out}/{i}.err </dev/null",
                f'echo "{i} $?" >>{out}/exits',
            ]
    return lines


@pytest.mark.parametrize(
    "page", [p for p in PAGES if runnable(p)], ids=lambda p: str(p.relative_to(ROOT))
)
@pytest.mark.real
def test_page_commands_run_as_written(page: Path, tmp_path: Path, held_case_root: Path):
    commands = [c for c in commands_of(page) if not isinstance(COMMANDS[c.key], Skip)]
    here, out, private = clone(tmp_path), tmp_path / "out", tmp_path / "private"
    out.mkdir()
    private.mkdir()
    lab_gateway, sink = unused_port(), unused_port()
    subs = {
        "gateway.example.org:25": f"127.0.0.1:{lab_gateway}",
        "gw.example.org:25": f"127.0.0.1:{lab_gateway}",
        "127.0.0.1:2526": f"127.0.0.1:{unused_port()}",
        "127.0.0.1:2527": f"127.0.0.1:{unused_port()}",
        ":2525": f":{sink}",
        "sink.example.org": "127.0.0.1",
        "/var/lib/notifyprobe/": f"{private}/",
        "/tmp/": f"{private}/",
        "/srv/case-4711/E": str(held_case_root),
    }
    env = session_env(private, notifyprobe_on_path=page.name != "README.md")
    lines = ["set -u"]
    if page.name == "evidence.md" or any("example.org:25" in c.text for c in commands):
        lab = f"{VENV_BIN}/notifyprobe lab gateway --listen 127.0.0.1:{lab_gateway} --relay "
        lines += background(f"{lab}127.0.0.1:{sink} --mode healthy", lab_gateway, out / "lab.err")
    if page.name == "evidence.md":  # `--last` needs a run in this session's ledger
        lines.append(
            f"{VENV_BIN}/notifyprobe burst --gateway 127.0.0.1:{lab_gateway} "
            f"--sink 127.0.0.1:{sink} --count 3 >/dev/null"
        )
    body = "\n".join(lines + script(commands, subs, out)) + "\n"
    session = subprocess.Popen(
        ["bash", "-c", body],
        cwd=here,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        shell_output, _ = session.communicate(timeout=PAGE_TIMEOUT_S)
    finally:
        if session.poll() is None:
            session.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(session.pid, signal.SIGTERM)  # the page's services, and the lab gateway
    ran = (out / "exits").read_text().splitlines() if (out / "exits").exists() else []
    exits = dict(line.split() for line in ran)
    failures = []
    for i, c in enumerate(commands):
        expected = COMMANDS[c.key]
        if not isinstance(expected, Run):
            continue
        said = (out / f"{i}.out").read_text(errors="replace")
        why = (out / f"{i}.err").read_text(errors="replace")
        code = int(exits.get(str(i), "-1"))
        if code not in expected.exits:
            failures.append(
                f"{c.key}\n  exit {code}, the page means {sorted(expected.exits)}"
                f"\n  stdout: {said[-1500:]}\n  stderr: {why[-1500:]}"
            )
        elif expected.says and not re.search(expected.says, said, re.M):
            failures.append(f"{c.key}\n  stdout lacks /{expected.says}/:\n{said[-3000:]}")
    assert not failures, f"{page.name}:\n" + "\n".join(failures) + f"\nshell: {shell_output}"


@pytest.mark.real
def test_the_demos_next_steps_run_as_printed_from_where_the_user_stands(tmp_path: Path):
    here = clone(tmp_path)
    env = session_env(tmp_path, notifyprobe_on_path=False)
    demo = subprocess.run(
        [".venv/bin/notifyprobe", "demo", "--count", "3"],
        cwd=here,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    printed = demo.stdout[demo.stdout.index("Next steps:") :]
    steps = re.findall(r"^  (\.venv/bin/notifyprobe (?:.*\\\n)*.*)$", printed, re.M)
    assert [step.split()[1] for step in steps] == ["verdict", "evidence", "burst"]
    verdict, evidence, burst = steps

    def shell(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", command], cwd=here, env=env, capture_output=True, text=True, timeout=60
        )

    judged = shell(verdict)
    assert judged.returncode == 2 and "first_only" in judged.stdout, judged.stderr
    assert shell(evidence).returncode == 0 and (here / "case.zip").is_file()
    gateway, sink = unused_port(), unused_port()
    lab = subprocess.Popen(
        [
            str(VENV_BIN / "notifyprobe"),
            "lab",
            "gateway",
            "--listen",
            f"127.0.0.1:{gateway}",
            "--relay",
            f"127.0.0.1:{sink}",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "listening" in (lab.stderr.readline() if lab.stderr else "")
        real = shell(
            burst.replace("GATEWAY:25", f"127.0.0.1:{gateway}")
            .replace("GATEWAY-IP", "127.0.0.1")
            .replace(":2525", f":{sink}")
        )
    finally:
        lab.terminate()
        lab.wait(timeout=10)
    assert real.returncode == 0 and "healthy" in real.stdout, real.stdout + real.stderr
