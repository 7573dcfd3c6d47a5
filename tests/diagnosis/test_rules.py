"""Diagnosis, signatures and restart correlation, on crafted verdicts, inventories and histories."""

from __future__ import annotations

from pathlib import Path

import pytest

from probe.diagnosis import Request, prepare, rediagnose
from probe.diagnosis.restarts import RunStarts, first_after_restart
from probe.diagnosis.rules import Confidence, RestartFacts, diagnose, next_hop_line, split
from probe.diagnosis.signatures import load_signatures, parse_signature
from probe.errors import ProbeError, UsageError
from probe.host.inventory import Copy, Inventory, ModuleHit, ModuleState
from probe.host.pe import ModuleVersion
from probe.host.platform import ProcessInfo
from probe.records import ProcessStart
from probe.verdict import NextHop, Pattern, Severity, Verdict

SIGNATURES = load_signatures()
PACKAGED = Path(__file__).resolve().parents[2] / "probe" / "diagnosis" / "signatures"


def verdict(
    pattern: Pattern, sink_verified: bool | None = True, bounced: int = 0, lost: int = 9
) -> Verdict:
    """`bounced` of the `lost` notifications refused by a next hop that sent a report back."""
    severity = Severity.OK if pattern is Pattern.HEALTHY else Severity.CRITICAL
    return Verdict(
        pattern,
        severity,
        f"{pattern.value} summary",
        sent=10,
        delivered=1,
        bounced=bounced,
        sink_verified=sink_verified,
        next_hop=NextHop(lost, bounced, "5.7.1", "next-hop.example", REFUSED) if bounced else None,
    )


REFUSED = "smtp; 550 5.7.1 Recipient address rejected"


def version(v: str) -> ModuleVersion:
    return ModuleVersion(sha256=v * 8, size=100, kind="pe", file_version=v, product_version=v)


def hit(
    state: ModuleState, path: str = r"D:\Latitude\MPNotifyPerf.dll", pid: int = 42
) -> ModuleHit:
    return ModuleHit(
        process=ProcessInfo(pid, "wmiprvse.exe", None, 1.0),
        mapped_path=path,
        module="MPNotifyPerf.dll",
        state=state,
        reason="crafted",
        loaded=Copy(path, version("4.3.0.12")),
        installed=Copy(path, version("5.0.0.41")),
    )


def inventory(*hits: ModuleHit, denied: int = 0) -> Inventory:
    return Inventory(
        ("MPNotifyPerf.dll",), (), "windows", hits, scanned=80, denied=denied, vanished=0
    )


def test_three_signatures_ship_and_validate() -> None:
    assert [s.id for s in SIGNATURES] == ["000", "001", "002"]
    assert all(s.remediation and s.reference and s.runbook for s in SIGNATURES)
    assert sorted(p.name for p in PACKAGED.glob("*.toml"))[0].startswith("000-")


def test_first_only_with_stale_module_is_000_with_high_confidence() -> None:
    d = diagnose(verdict(Pattern.FIRST_ONLY), inventory(hit(ModuleState.STALE)), SIGNATURES)
    assert d is not None
    assert (d.signature, d.confidence) == ("000", Confidence.HIGH)
    assert any("4.3.0.12" in line and "5.0.0.41" in line for line in d.because)
    assert any("sink" in line for line in d.because)
    steps = " ".join(d.remediation).lower()
    for word in (
        "templates",
        "uninstall",
        "reboot",
        "email-gateway",
        "notification gateway",
        "install the new version",
    ):
        assert word in steps
    assert d.to_dict()["confidence"] == "high"


def test_first_only_without_stale_module_says_so_with_low_confidence() -> None:
    d = diagnose(
        verdict(Pattern.FIRST_ONLY), inventory(hit(ModuleState.CURRENT), denied=2), SIGNATURES
    )
    assert d is not None and d.signature == "000"
    assert d.confidence is Confidence.LOW
    assert any("none of the 80 processes read has an old copy" in line for line in d.because)
    assert any("could not read 2 of 82 processes" in line for line in d.because)


def test_a_blind_scan_never_points_away_from_the_old_module() -> None:
    """A scan that could not read every process rules nothing out: no "points away"."""
    blind = diagnose(verdict(Pattern.FIRST_ONLY), inventory(denied=3), SIGNATURES)
    assert blind is not None and blind.confidence is Confidence.LOW
    assert "points away" not in blind.to_confirm
    assert "does not rule it out" in blind.to_confirm
    assert "could not read 3 of 83 processes" in blind.to_confirm
    seen = diagnose(verdict(Pattern.FIRST_ONLY), inventory(), SIGNATURES)
    assert seen is not None and "points away" in seen.to_confirm


def test_first_only_without_inventory_asks_for_one() -> None:
    d = diagnose(verdict(Pattern.FIRST_ONLY), None, SIGNATURES)
    assert d is not None and d.confidence is Confidence.LOW
    assert any("--module MPNotifyPerf.dll" in line for line in d.because)


def test_unproven_sink_lowers_confidence_and_is_named() -> None:
    d = diagnose(
        verdict(Pattern.FIRST_ONLY, sink_verified=None),
        inventory(hit(ModuleState.STALE)),
        SIGNATURES,
    )
    assert d is not None and d.confidence is Confidence.MEDIUM
    assert any("not ruled out" in line for line in d.because)


@pytest.mark.parametrize(
    "pattern", [Pattern.FIRST_ONLY, Pattern.DEGRADED_AFTER_K, Pattern.INTERMITTENT]
)
def test_losses_all_refused_by_a_next_hop_offer_no_issue_that_loses_mail_in_the_gateway(
    pattern: Pattern,
) -> None:
    """The gateway accepted and relayed every lost notification: a stale module inside it, or a
    broken connector on its host, does not explain a refusal further on."""
    for taken in (None, inventory(), inventory(denied=3)):
        assert diagnose(verdict(pattern, bounced=9), taken, SIGNATURES) is None
    line = next_hop_line(verdict(pattern, bounced=9))
    assert "every lost notification (9) was accepted by the gateway" in line
    assert f"by next-hop.example (5.7.1: {REFUSED})" in line
    assert "policy and rate limits of next-hop.example" in line


def test_some_losses_at_the_gateway_keep_the_hint_and_say_how_many_were_bounces() -> None:
    mixed = verdict(Pattern.FIRST_ONLY, bounced=6)
    firm, possible = split(diagnose(mixed, inventory(), SIGNATURES))
    assert firm is None and [p.signature for p in possible] == ["000"]
    line = next_hop_line(mixed)
    assert line.startswith("6 of the 9 lost notifications were bounces")
    assert "the other 3 were lost at the gateway" in line


def test_an_old_copy_loaded_stays_confirmed_whatever_the_bounces_say_and_both_are_said() -> None:
    d = diagnose(
        verdict(Pattern.FIRST_ONLY, bounced=9), inventory(hit(ModuleState.STALE)), SIGNATURES
    )
    assert d is not None and (d.signature, d.confidence) == ("000", Confidence.HIGH)
    [both] = [line for line in d.because if "evidence of its own" in line]
    assert "every lost notification (9)" in both and "next-hop.example" in both
    assert any("4.3.0.12" in line for line in d.because)


def test_a_run_without_a_next_hop_refusal_has_no_next_hop_line() -> None:
    assert next_hop_line(verdict(Pattern.FIRST_ONLY)) == ""


def test_healthy_gateway_gets_no_diagnosis_even_with_a_stale_copy() -> None:
    assert diagnose(verdict(Pattern.HEALTHY), inventory(hit(ModuleState.STALE)), SIGNATURES) is None
    assert diagnose(verdict(Pattern.HEALTHY), None, SIGNATURES) is None


def test_exchange_perf_dlls_renamed_and_loaded_are_001_without_a_mail_symptom() -> None:
    renamed = hit(ModuleState.RENAMED, r"E:\Exchsrvr\BIN\Mtaperf.dll.old")
    d = diagnose(verdict(Pattern.HEALTHY), inventory(renamed), SIGNATURES)
    assert d is not None and d.signature == "001"
    assert any(".old" in step for step in d.remediation)


def test_stale_copy_in_relocated_msmcon_bin_with_no_delivery_is_002() -> None:
    relocated = hit(ModuleState.STALE, r"F:\Moved\Msmcon\Bin\connector.dll")
    d = diagnose(verdict(Pattern.NONE_DELIVERED), inventory(relocated), SIGNATURES)
    assert d is not None and d.signature == "002"
    assert any("Maildat$" in step for step in d.remediation)


def run(run_id: str, at: float, delivered: int, gen: float, sent: int = 10) -> RunStarts:
    starts = (ProcessStart("process", "gateway", 100 + int(gen), gen),)
    return RunStarts(run_id, at, sent, delivered, delivered >= 1, starts)


def test_each_restart_bringing_back_one_delivery_is_recognised() -> None:
    history = [
        run("a", 10, 1, 5),
        run("b", 20, 0, 5),
        run("c", 30, 1, 25),
        run("d", 40, 0, 25),
        run("e", 50, 1, 45),
    ]
    finding = first_after_restart(history)
    assert finding is not None and finding.matches
    assert (finding.after_restart, finding.without_restart) == (2, 2)
    assert "exactly one delivery" in finding.lines[0]


def test_restart_pattern_rejects_runs_that_break_it() -> None:
    healthy_after_restart = [run("a", 10, 1, 5), run("b", 20, 10, 15)]
    finding = first_after_restart(healthy_after_restart)
    assert finding is not None and not finding.matches
    no_restart = [run("a", 10, 1, 5), run("b", 20, 0, 5)]
    finding = first_after_restart(no_restart)
    assert finding is not None and not finding.matches
    assert first_after_restart([run("a", 10, 1, 5)]) is None


def test_restart_history_raises_confidence_of_000() -> None:
    history = first_after_restart([run("a", 10, 1, 5), run("b", 20, 0, 5), run("c", 30, 1, 25)])
    facts = RestartFacts(
        starts=(ProcessStart("process", "gateway", 125, 25.0),),
        run_started_at=30.0,
        history=history,
    )
    d = diagnose(verdict(Pattern.FIRST_ONLY), inventory(), SIGNATURES, facts)
    assert d is not None and d.confidence is Confidence.MEDIUM
    assert any("started 5 s before this run" in line for line in d.because)
    assert any("each of 1 gateway restart(s)" in line for line in d.because)


GOOD = PACKAGED.joinpath("000-meetingplace-mpnotifyperf.toml").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (GOOD.replace('id = "000"', ""), "missing field 'id'"),
        (GOOD.replace('patterns = ["first_only"]', 'patterns = ["first_one"]'), "first_one"),
        (GOOD.replace('"stale", "deleted"', '"old", "deleted"'), "'old'"),
        (
            GOOD.replace("first_after_restart = true", 'first_after_restart = "yes"'),
            "true or false",
        ),
        (GOOD + "\n[[[", "not valid TOML"),
        (GOOD.replace("fix_actions = []", 'fix_actions = ["reboot-now"]'), "'reboot-now'"),
        (GOOD.replace("remedy =", "remedies ="), "missing field 'remedy'"),
        (GOOD.replace('lost_at = ["gateway"]', 'lost_at = ["queue"]'), "'queue'"),
        (GOOD.replace('lost_at = ["gateway"]', "lost_at = []"), "patterns need lost_at"),
    ],
)
def test_a_broken_signature_is_rejected_with_a_clear_message(broken: str, message: str) -> None:
    with pytest.raises(ProbeError, match=r"signature x\.toml") as err:
        parse_signature("x.toml", broken)
    assert message in str(err.value)


def test_duplicate_signature_ids_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(GOOD, encoding="utf-8")
    (tmp_path / "b.toml").write_text(GOOD, encoding="utf-8")
    with pytest.raises(ProbeError, match="used twice"):
        load_signatures(tmp_path)


def test_a_kept_inventory_diagnoses_again_as_the_scan_did() -> None:
    scanned = inventory(hit(ModuleState.STALE), hit(ModuleState.CURRENT, pid=7), denied=1)
    kept = Inventory.from_dict(scanned.to_dict())
    assert [h.to_dict() for h in kept.hits] == [h.to_dict() for h in scanned.hits]
    for pattern in (Pattern.FIRST_ONLY, Pattern.NONE_DELIVERED, Pattern.SLOW):
        assert rediagnose(verdict(pattern), kept) == split(
            diagnose(verdict(pattern), scanned, SIGNATURES)
        )


def test_a_first_only_corrected_to_slow_points_to_no_known_issue() -> None:
    current = inventory(hit(ModuleState.CURRENT))  # no old copy: 000 is only possible
    firm, possible = rediagnose(verdict(Pattern.FIRST_ONLY), current)
    assert firm is None and [p.signature for p in possible] == ["000"]
    assert rediagnose(verdict(Pattern.SLOW), current) == (None, ())


def test_a_burst_refuses_a_service_that_names_nothing_a_watch_run_goes_on_without_it():
    with pytest.raises(UsageError, match="unknown --service no-such-gateway-svc"):
        prepare(Request(services=("no-such-gateway-svc",)))
    prepared = prepare(Request(services=("no-such-gateway-svc",), services_must_exist=False))
    assert prepared.watching and prepared.starts == ()
