"""Diagnosis: join a verdict with the host inventory and the known-issue signatures into a cause.

`prepare` (before the run: signatures loaded, names checked) and `explain` (after it: inventory,
gateway restarts, rules) turn a `Request` into an `Explanation`; `rediagnose` diagnoses a run
again for a corrected verdict, from what the run kept; `rules` is the pure part. Known issues
are TOML files in `signatures/`, read with `load_signatures`.
"""

from probe.diagnosis.gather import Explanation, Request, explain, prepare, rediagnose
from probe.diagnosis.rules import Confidence, Diagnosis, PossibleIssue, next_hop_line, split
from probe.diagnosis.signatures import (
    FIX_ACTIONS,
    FixAction,
    Signature,
    TomlFields,
    load_signatures,
)

__all__ = [
    "FIX_ACTIONS",
    "Confidence",
    "Diagnosis",
    "Explanation",
    "FixAction",
    "PossibleIssue",
    "Request",
    "Signature",
    "TomlFields",
    "explain",
    "load_signatures",
    "next_hop_line",
    "prepare",
    "rediagnose",
    "split",
]
