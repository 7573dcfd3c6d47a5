"""A gateway that is the probe's own sink: refused before anything is sent.

`burst --gateway 127.0.0.1:2525` (the default sink address) mails the sink straight away: every
notification arrives, and the run says healthy about a gateway it never reached. `is_own_sink`
decides whether a gateway address reaches the sink's listener; `refuse_own_sink` turns that into
the one usage error every command gives (`burst`, `postflight`, `watch` and its config).

The rule, on resolved addresses: the same port, and either the very same address, or both on
this host (a loopback address or one of this host's interface addresses), or a sink listening
on a wildcard address (0.0.0.0, ::) and a gateway on this host. A gateway name that does not
resolve (in time) is not this error: the burst then says what it says of any unresolvable name.
Name resolution and this host's addresses are parameters, so the decision is tested without a
resolver or a network.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Iterable

from probe.errors import UsageError
from probe.records import Endpoint

RESOLVE_TIMEOUT_S = 2.0  # the longest a name lookup may hold up a command before it sends

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], Iterable[str]]  # a host name → its addresses; none when it fails
LocalAddresses = Callable[[], Iterable[str]]  # this host's own interface addresses


def own_sink_message(gateway: Endpoint, sink: Endpoint) -> str:
    """The one error, whichever command refuses."""
    return (
        f"gateway {gateway} is the probe's own sink listener (sink {sink}): the notifications "
        "would go straight to the sink and prove nothing about a gateway; give the gateway's "
        "SMTP listener, or put the sink on another port"
    )


def resolve(host: str, timeout_s: float = RESOLVE_TIMEOUT_S) -> tuple[str, ...]:
    """The addresses `host` names: an address as is, a name through getaddrinfo, bounded by
    `timeout_s` (a resolver that hangs is left behind in a daemon thread); none when it does
    not resolve in time."""
    if _address(host) is not None:
        return (host,)
    found: list[tuple[str, ...]] = []

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return
        found.append(tuple(str(info[4][0]) for info in infos))

    worker = threading.Thread(target=lookup, name=f"resolve {host}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    return found[0] if found else ()


def local_addresses() -> tuple[str, ...]:
    """This host's interface addresses (loopback included)."""
    from probe.host import interface_addresses  # psutil: only when a port matches

    return tuple(interface_addresses())


def is_own_sink(
    gateway: Endpoint,
    sink: Endpoint,
    *,
    resolver: Resolver = resolve,
    local: LocalAddresses = local_addresses,
) -> bool:
    """Does a connection to `gateway` reach the sink listening at `sink`? (See the module.)"""
    if gateway.port != sink.port:
        return False  # the common case decides without resolving anything
    gateway_ips = _addresses(resolver(gateway.host))
    if not gateway_ips:
        return False  # not resolved: the burst reports the name as it does any other
    here = _addresses(local())

    def on_this_host(ips: Iterable[IPAddress]) -> bool:
        return any(ip.is_loopback or ip in here for ip in ips)

    sink_ip = _address(sink.host)
    if sink_ip is not None and sink_ip.is_unspecified:
        return on_this_host(gateway_ips)
    sink_ips = _addresses(resolver(sink.host))
    if gateway_ips & sink_ips:
        return True
    return on_this_host(gateway_ips) and on_this_host(sink_ips)


def refuse_own_sink(
    gateway: Endpoint,
    sink: Endpoint,
    *,
    resolver: Resolver = resolve,
    local: LocalAddresses = local_addresses,
) -> None:
    """A usage error (exit 3, nothing sent) when `gateway` is the sink's own listener."""
    if is_own_sink(gateway, sink, resolver=resolver, local=local):
        raise UsageError(own_sink_message(gateway, sink))


def _address(text: str) -> IPAddress | None:
    """`text` as an address (a scope such as %eth0 dropped, IPv4-mapped IPv6 as IPv4)."""
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _addresses(texts: Iterable[str]) -> frozenset[IPAddress]:
    return frozenset(ip for t in texts if (ip := _address(t)) is not None)
