"""A profile's fixed-choice values: read as one of their choices, refused by name otherwise."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from probe.errors import ProbeError
from probe.upgrade.profiles import load_profile

NAME = "msmail-relocated"
SHIPPED = resources.files("probe.upgrade.profiles").joinpath(f"{NAME}.toml").read_text("utf-8")


def _profile_dir(tmp_path: Path, text: str) -> Path:
    (tmp_path / f"{NAME}.toml").write_text(text, encoding="utf-8")
    return tmp_path


def test_shipped_choices_are_read_as_written_and_defaults_fill_the_rest() -> None:
    profile = load_profile(NAME)
    assert [leftover.severity for leftover in profile.leftovers] == ["warn"]
    assert {rule.points_at for rule in profile.registry} == {"relocated"}


def test_a_leftover_severity_outside_fail_and_warn_is_refused_by_name(tmp_path: Path) -> None:
    text = SHIPPED.replace('severity = "warn"', 'severity = "maybe"')
    with pytest.raises(ProbeError, match=r"'severity' must be one of fail, warn"):
        load_profile(NAME, _profile_dir(tmp_path, text))


def test_a_registry_rule_pointing_elsewhere_than_relocated_is_refused(tmp_path: Path) -> None:
    text = SHIPPED.replace('value = "ImagePath"', 'value = "ImagePath"\npoints_at = "default"')
    with pytest.raises(ProbeError, match=r"'points_at' must be one of relocated"):
        load_profile(NAME, _profile_dir(tmp_path, text))
