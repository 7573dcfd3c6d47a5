"""Upgrade checks: before and after an upgrade, relocated-install drift, and undoable fixes.

Each check is a `Check` with a `Status`; `report_dict`, `report_text`, `overall` and `exit_code`
turn a list of them into the commands' output. `flight` holds the pre/postflight checks, `drift`
the relocated-folder comparison, `fix` the journaled remediations, `profiles/` the procedures.
"""

from probe.upgrade.checks import (
    PART_ORDER,
    Check,
    Part,
    Status,
    exit_code,
    headline,
    overall,
    parts,
    report_dict,
    report_nagios,
    report_text,
)
from probe.upgrade.drift import Places, compare_trees, file_checks, registry_checks, share_check
from probe.upgrade.fix import (
    Plan,
    apply,
    default_journal,
    offered_for,
    plan_renames,
    plan_sync,
    undo,
)
from probe.upgrade.flight import (
    backup_check,
    burst_check,
    check_root,
    held_candidates,
    in_use_checks,
    installed_files,
    is_set_aside,
    leftover_checks,
    module_check,
    reboot_checks,
    version_check,
    version_table,
    version_table_lines,
)
from probe.upgrade.profiles import load_profile, profile_names, under_root

__all__ = [
    "PART_ORDER",
    "Check",
    "Part",
    "Places",
    "Plan",
    "Status",
    "apply",
    "backup_check",
    "burst_check",
    "check_root",
    "compare_trees",
    "default_journal",
    "exit_code",
    "file_checks",
    "headline",
    "held_candidates",
    "in_use_checks",
    "installed_files",
    "is_set_aside",
    "leftover_checks",
    "load_profile",
    "module_check",
    "offered_for",
    "overall",
    "parts",
    "plan_renames",
    "plan_sync",
    "profile_names",
    "reboot_checks",
    "registry_checks",
    "report_dict",
    "report_nagios",
    "report_text",
    "share_check",
    "under_root",
    "undo",
    "version_check",
    "version_table",
    "version_table_lines",
]
