"""Delivery: send the burst through the gateway, receive it in the sink, wait until it settles.

`run_probe` is the entry point: one burst with `ProbeSettings`, judged into a `ProbeOutcome`.
`Sink` records what arrives; `SharedSink` serves several runs (watch); TLS, AUTH and the sink's
limits and access rules are configured here too; `refuse_own_sink` stops a run whose gateway
is the sink itself before anything is sent; `unrouted_default_domain` tells a run whose default
probe domain routes nowhere.
"""

from probe.delivery.burst import Sender
from probe.delivery.credentials import Secret, password_from_env, password_from_file
from probe.delivery.own_sink import is_own_sink, own_sink_message, refuse_own_sink
from probe.delivery.run import (
    DeliveryHub,
    ProbeOutcome,
    ProbeSettings,
    Progress,
    ProgressCallback,
    SharedSink,
    judge_cut_run,
    run_probe,
)
from probe.delivery.settings import (
    DEFAULT_MAX_RATE,
    GAP_FLAG,
    GAP_KEY,
    MAX_COUNT,
    MAX_RATE_CAP,
    OLD_GAP_SPELLINGS,
    BurstSettings,
)
from probe.delivery.settle import (
    DEFAULT_WINDOW_S,
    HISTORY_FACTOR,
    MIN_HEALTHY_RUNS,
    Patience,
)
from probe.delivery.sink import Sink
from probe.delivery.sink_limits import Access, SinkLimits, client_network
from probe.delivery.tls import (
    TLS_MODES,
    ClientSecurity,
    TlsMode,
    server_context,
    tls_mode,
)

__all__ = [
    "DEFAULT_MAX_RATE",
    "DEFAULT_WINDOW_S",
    "GAP_FLAG",
    "GAP_KEY",
    "HISTORY_FACTOR",
    "MAX_COUNT",
    "MAX_RATE_CAP",
    "MIN_HEALTHY_RUNS",
    "OLD_GAP_SPELLINGS",
    "TLS_MODES",
    "Access",
    "BurstSettings",
    "ClientSecurity",
    "DeliveryHub",
    "Patience",
    "ProbeOutcome",
    "ProbeSettings",
    "Progress",
    "ProgressCallback",
    "Secret",
    "Sender",
    "SharedSink",
    "Sink",
    "SinkLimits",
    "TlsMode",
    "client_network",
    "is_own_sink",
    "judge_cut_run",
    "own_sink_message",
    "password_from_env",
    "password_from_file",
    "refuse_own_sink",
    "run_probe",
    "server_context",
    "tls_mode",
]
