"""The default probe domain, which routes nowhere, and the lab gateway, for which that is fine.

`probe.invalid` is the default `--domain` so that a rehearsal needs no set-up: the lab gateway
relays whatever it accepts to the sink. A real gateway hands the notifications to a mail server
that looks the domain up, finds nothing (`.invalid` never resolves) and bounces or drops every
one; the probe then waits for mail that cannot come. So a run with the default domain through a
gateway that is not a lab gateway says so in its header, and a verdict of lost mail names the
domain as the first thing to check.

A run counts as a lab run only on proof that cannot come from a user's gateway by accident: the
run was made against a lab gateway the probe started itself (the demo: `ProbeSettings.lab`), or
the gateway is on loopback and greeted the probe with the lab gateway's own banner. Anything else
is a real gateway: at worst a lab run started by hand carries a needless warning, never a real
gateway a missing one.
"""

from __future__ import annotations

from probe.records import Endpoint, RunRecord, is_loopback

DEFAULT_DOMAIN = "probe.invalid"
LAB_HOSTNAME = "lab-gateway"  # the lab gateway's name in its banner and its EHLO
LAB_IDENT = "notifyprobe lab gateway"  # and the software it names in its banner
LAB_BANNER = f"{LAB_HOSTNAME} {LAB_IDENT}"  # the text of its 220 greeting


def default_domain_warning(domain: str) -> str:
    """What the header says of a run with the default domain through a real gateway."""
    return (
        f"the probe domain {domain} is the default and routes nowhere: a real gateway's mail "
        "server bounces or drops every notification; give --domain (watch: domain) a domain "
        "routed to the sink (docs/real-mail-setup.md)"
    )


def first_check(domain: str) -> str:
    """The first step of the advice when nothing arrived from such a run."""
    return (
        f"First check the probe domain: {domain} is the default and routes nowhere, so the "
        "gateway's mail server cannot deliver to the sink; give --domain (watch: domain) a domain "
        "routed to the sink (docs/real-mail-setup.md)."
    )


def may_be_lab(gateway: Endpoint) -> bool:
    """Before the run: could this gateway turn out to be a lab gateway? Only on loopback."""
    return is_loopback(gateway.host)


def is_lab_run(record: RunRecord) -> bool:
    """Was this run made through a lab gateway? (See the module for what counts as proof.)"""
    run = record.run
    if run.options.lab:
        return True
    try:
        gateway = Endpoint.parse(run.gateway)
    except ValueError:
        return False
    if not may_be_lab(gateway):
        return False
    return any(
        step.command.startswith("connect")
        and step.reply is not None
        and step.reply.code == 220
        and step.reply.text == LAB_BANNER
        for n in record.burst
        if n.submission is not None
        for step in n.submission.steps
    )


def unrouted_default_domain(record: RunRecord) -> bool:
    """The run used the default domain through a gateway that is not a lab gateway."""
    return record.run.domain == DEFAULT_DOMAIN and not is_lab_run(record)
