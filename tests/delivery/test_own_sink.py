"""A gateway that is the probe's own sink: the decision, on crafted names and host addresses."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from probe.delivery.own_sink import is_own_sink, own_sink_message, refuse_own_sink, resolve
from probe.errors import UsageError
from probe.records import Endpoint

NAMES = {
    "localhost": ("127.0.0.1", "::1"),
    "me.example.org": ("192.0.2.7",),
    "sink.example.org": ("198.51.100.9",),
    "sink-alias.example.org": ("198.51.100.9",),
    "gw.example.org": ("203.0.113.5",),
}
HERE = ("127.0.0.1", "::1", "192.0.2.7", "fe80::1")


def resolver(host: str) -> Iterable[str]:
    return NAMES.get(host, (host,) if host[:1].isdigit() or ":" in host else ())


def here() -> Iterable[str]:
    return HERE


def own(gateway: str, sink: str) -> bool:
    return is_own_sink(Endpoint.parse(gateway), Endpoint.parse(sink), resolver=resolver, local=here)


@pytest.mark.parametrize(
    ("gateway", "sink"),
    [
        ("127.0.0.1:2525", "127.0.0.1:2525"),  # the default sink, given as the gateway
        ("localhost:2600", "127.0.0.1:2600"),  # a name for the same loopback listener
        ("[::1]:2600", "[::1]:2600"),
        ("[::ffff:127.0.0.1]:2600", "127.0.0.1:2600"),  # IPv4-mapped
        ("127.0.0.2:2600", "127.0.0.1:2600"),  # this host's loopback either way
        ("192.0.2.7:2600", "0.0.0.0:2600"),  # a wildcard sink listens on every local address
        ("me.example.org:2600", "[::]:2600"),
        ("localhost:2600", "0.0.0.0:2600"),
        ("[fe80::1]:2600", "[::]:2600"),  # a link-local address of this host
        ("sink-alias.example.org:2525", "sink.example.org:2525"),  # --no-sink: remote, same
    ],
)
def test_the_sinks_own_listener_is_refused(gateway: str, sink: str) -> None:
    assert own(gateway, sink)
    with pytest.raises(UsageError) as refused:
        refuse_own_sink(
            Endpoint.parse(gateway), Endpoint.parse(sink), resolver=resolver, local=here
        )
    assert str(refused.value) == own_sink_message(Endpoint.parse(gateway), Endpoint.parse(sink))
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("gateway", "sink"),
    [
        ("127.0.0.1:2526", "127.0.0.1:2525"),  # another port: the lab gateway of the docs
        ("gw.example.org:2525", "0.0.0.0:2525"),  # a remote gateway, whatever the sink
        ("gw.example.org:2525", "127.0.0.1:2525"),
        ("203.0.113.5:2525", "[::]:2525"),
        ("nowhere.invalid:2525", "127.0.0.1:2525"),  # unresolved: the burst reports the name
        ("sink.example.org:2525", "127.0.0.1:2525"),  # a remote host at the sink's port
    ],
)
def test_another_listener_is_not_the_sink(gateway: str, sink: str) -> None:
    assert not own(gateway, sink)


def test_a_different_port_decides_without_resolving_anything() -> None:
    def no_lookups(host: str) -> Iterable[str]:
        raise AssertionError(f"resolved {host}")

    def no_interfaces() -> Iterable[str]:
        raise AssertionError("listed the interfaces")

    gateway, sink = Endpoint("gw.example.org", 25), Endpoint("0.0.0.0", 2525)
    assert not is_own_sink(gateway, sink, resolver=no_lookups, local=no_interfaces)


def test_resolution_is_bounded_and_an_unknown_name_resolves_to_nothing() -> None:
    assert resolve("127.0.0.1") == ("127.0.0.1",)
    assert "127.0.0.1" in resolve("localhost")
    assert resolve("no-such-host.invalid", timeout_s=2.0) == ()
