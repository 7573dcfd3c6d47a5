"""notifyprobe: does the notification gateway still deliver every notification?

The map, top to bottom (imports only point down; docs/architecture.md tells the whole story):

    cli/        the `notifyprobe` command: one module per subcommand, exit codes
    monitor/    `watch`: every gateway on an interval, its TOML config, Prometheus metrics
    pipeline    probe once: run -> explain -> keep -> report, for every command that probes
    reporting/  text, JSON, nagios and HTML reports, the evidence bundle, kept artifacts, redaction
    upgrade/    pre/postflight checks, relocated-install drift, undoable fixes, upgrade profiles
    lab/        a gateway with fault modes and stand-in DLLs, to rehearse on one host
    diagnosis/  verdict + loaded modules + known-issue signatures -> the likely cause
    delivery/   send the burst, receive it in the sink, wait until it settles
    history     a run judged again with late mail and bounces; corrections kept beside verdicts
    ledger/     the SQLite record of every run, notification, delivery, bounce and artifact
    verdict     the pure judgement of a run (healthy, first_only, degraded_after_k, ...)
    domain      what a run's probe domain says: the default routes nowhere, a lab run's proof
    host/       loaded modules, files in use, PE versions, host facts, registry, pending reboot
    records     the shared model (Run, Notification, Endpoint, ...)
    files       reading a host's file safely (no link followed, no device opened, bounded)
    masking     hiding a secret in text, raw or inside base64
    correlation the tokens that tie a delivered message to the notification that caused it
    logs        structured logging;  errors: ProbeError and UsageError (exit 3)
"""

__version__ = "0.1.0"
