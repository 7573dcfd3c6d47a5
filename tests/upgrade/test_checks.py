"""Many checks add up to one status and exit code; a check that could not run counts for nothing."""

from __future__ import annotations

from probe.upgrade.checks import Check, Status, exit_code, overall, report_dict, report_text

PASSED = Check("backup", Status.PASS, "3 file(s) in /backup")
WARNED = Check("reboot: kernel", Status.WARN, "newer kernel installed", fix="reboot first")
FAILED = Check(
    "in use: BIN/Mtaperf.dll",
    Status.FAIL,
    "held by pid 42",
    fix="stop pid 42",
    evidence=("pid 42 wmiprvse.exe (loaded)",),
)
SKIPPED = Check("burst", Status.NOT_RUN, "no --gateway given", fix="rerun with --gateway")


def test_the_worst_status_wins() -> None:
    assert overall([PASSED, WARNED]) is Status.WARN
    assert overall([WARNED, FAILED, PASSED]) is Status.FAIL
    assert overall([PASSED, PASSED]) is Status.PASS


def test_a_check_that_did_not_run_is_neither_a_pass_nor_a_failure() -> None:
    assert overall([SKIPPED]) is Status.NOT_RUN
    assert overall([SKIPPED, WARNED]) is Status.WARN


def test_no_checks_at_all_is_not_run_never_a_pass() -> None:
    assert overall([]) is Status.NOT_RUN


def test_exit_codes_follow_the_monitoring_plugin_convention() -> None:
    assert [exit_code(s) for s in (Status.PASS, Status.WARN, Status.FAIL)] == [0, 1, 2]
    assert exit_code(Status.NOT_RUN) == 3  # nothing could be checked: unknown


def test_the_json_report_carries_status_exit_code_extras_and_every_check() -> None:
    report = report_dict("preflight", [PASSED, FAILED], profile="exchange-sp4", root="/")
    assert (report["command"], report["status"], report["exit_code"]) == ("preflight", "fail", 2)
    assert (report["profile"], report["root"]) == ("exchange-sp4", "/")
    assert [c["name"] for c in report["checks"]] == ["backup", "in use: BIN/Mtaperf.dll"]
    assert report["checks"][0]["fix"] is None
    assert report["checks"][1]["evidence"] == ["pid 42 wmiprvse.exe (loaded)"]


def test_the_text_counts_each_status_and_shows_fixes_only_where_something_is_wrong() -> None:
    text = report_text("preflight exchange-sp4", [PASSED, WARNED, FAILED, SKIPPED])
    first, *rest = text.splitlines()
    assert first == "notifyprobe preflight exchange-sp4: FAIL · 1 pass, 1 warn, 1 fail, 1 not run"
    assert "           fix: reboot first" in rest and "           fix: stop pid 42" in rest
    assert "           pid 42 wmiprvse.exe (loaded)" in rest
    assert not any("rerun with --gateway" in line for line in rest)  # not run: no fix to do
