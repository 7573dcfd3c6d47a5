"""The package layout holds: no import cycles, imports only point down the layers, subpackages
are reached through their public surface, no subcommand imports another, and building the
command line loads no subcommand's dependencies.

Every module under probe/ is parsed with `ast`; every import counts, including the ones inside
functions and `if TYPE_CHECKING:` blocks (a cycle hidden there is still a cycle).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "probe"

# Top to bottom; a unit (a subpackage or a top-level module) may import only from lower floors.
LAYERS = (
    ("__main__",),
    ("cli",),
    ("monitor",),
    ("pipeline",),
    ("reporting", "upgrade"),
    ("lab", "diagnosis"),
    ("delivery",),
    ("history",),
    ("ledger", "verdict", "domain"),
    ("host",),
    ("records", "correlation", "files", "masking", "logs", "errors"),
)
FLOOR = {unit: floor for floor, units in enumerate(LAYERS) for unit in units}
# The CLI is the top, not a library: its __init__ is the entry point, not a surface.
SUBPACKAGES = tuple(
    sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py") if p.parent.name != "cli")
)
HEAVY = ("aiosmtpd", "aiosmtplib", "psutil", "pefile", "prometheus_client", "structlog")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(encoding="utf-8")) for p in PACKAGE.rglob("*.py")}


def imports(name: str) -> list[tuple[str, tuple[str, ...]]]:
    """(imported module, names taken from it) for every import of `name` that stays in probe."""
    package = name if _is_package(name) else name.rpartition(".")[0]
    found: list[tuple[str, tuple[str, ...]]] = []
    for node in ast.walk(modules()[name]):
        if isinstance(node, ast.Import):
            found += [(alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            taken = tuple(alias.name for alias in node.names)
            submodules = tuple(n for n in taken if f"{base}.{n}" in modules())
            found += [(f"{base}.{n}", ()) for n in submodules]
            names = tuple(n for n in taken if n not in submodules)
            if names or not submodules:
                found.append((base, names))
    return [(target, taken) for target, taken in found if target.split(".")[0] == "probe"]


def _is_package(name: str) -> bool:
    return (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()


def graph() -> dict[str, set[str]]:
    return {name: {target for target, _ in imports(name)} for name in modules()}


def unit(name: str) -> str | None:
    """The layer unit of a module: its subpackage or top-level module; None for `probe` itself."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def cycle_in(edges: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        path.append(node)
        for target in sorted(edges.get(node, ())):
            found = visit(target)
            if found:
                return found
        path.pop()
        done.add(node)
        return None

    for node in sorted(edges):
        found = visit(node)
        if found:
            return found
    return None


def test_the_import_graph_sees_imports_inside_functions_and_type_checking_blocks() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from probe.records import Run\n"
        "def later():\n    from probe.verdict import classify\n"
    )
    modules()["probe.example"] = tree
    try:
        assert {t for t, _ in imports("probe.example")} == {"probe.records", "probe.verdict"}
    finally:
        del modules()["probe.example"]


def test_no_module_imports_itself_back_through_others() -> None:
    assert cycle_in(graph()) is None


def test_cycle_detection_finds_a_loop() -> None:
    assert cycle_in({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle_in({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_every_unit_has_a_floor() -> None:
    units = {u for name in modules() if (u := unit(name)) is not None}
    assert units <= set(FLOOR), f"place these in LAYERS: {sorted(units - set(FLOOR))}"


def test_imports_between_units_only_point_down() -> None:
    upward = [
        f"{name} -> {target}"
        for name, targets in graph().items()
        for target in targets
        if (source := unit(name))
        and (dest := unit(target))
        and source != dest
        and FLOOR[dest] <= FLOOR[source]
    ]
    assert upward == []


def test_no_subcommand_imports_another() -> None:
    from probe.cli import COMMANDS

    subcommands = {f"probe.cli.{name}" for name in COMMANDS}
    assert subcommands <= set(modules())
    crossing = [
        f"{name} -> {target}"
        for name in subcommands
        for target, _ in imports(name)
        if target in subcommands and target != name
    ]
    assert crossing == []


def surface(package: str) -> tuple[set[str], set[str]]:
    """What a subpackage's __init__ imports and what its __all__ lists."""
    imported: set[str] = set()
    listed: set[str] = set()
    for node in modules()[f"probe.{package}"].body:
        if isinstance(node, ast.ImportFrom):
            imported |= {alias.asname or alias.name for alias in node.names}
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.List):
            listed |= {ast.literal_eval(e) for e in node.value.elts}
    return imported, listed


def test_each_subpackage_init_is_a_docstring_re_exports_and_all() -> None:
    for package in SUBPACKAGES:
        body = modules()[f"probe.{package}"].body
        assert ast.get_docstring(modules()[f"probe.{package}"]), package
        for node in body[1:]:
            if isinstance(node, ast.ImportFrom):
                assert (node.module or "").startswith(f"probe.{package}."), ast.unparse(node)
            else:
                assert isinstance(node, ast.Assign), f"{package}: {ast.unparse(node)[:60]}"
                assert [t.id for t in node.targets if isinstance(t, ast.Name)] == ["__all__"]
        imported, listed = surface(package)
        assert imported == listed, package


def test_other_subpackages_import_only_the_public_surface() -> None:
    offside = []
    for name in modules():
        for target, taken in imports(name):
            parts = target.split(".")
            if len(parts) < 2 or parts[1] not in SUBPACKAGES or parts[1] == unit(name):
                continue
            _, public = surface(parts[1])
            if len(parts) > 2 or not set(taken) <= public:
                offside.append(f"{name} -> {target} {sorted(set(taken) - public)}")
    assert offside == []


def loaded_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"import sys; {code}; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return set(out.stdout.split())


@pytest.mark.real
def test_version_and_the_command_list_load_no_dependency() -> None:
    loaded = loaded_after("import probe.cli; probe.cli.build_parser(['--version'])")
    assert not {m.split(".")[0] for m in loaded} & set(HEAVY)
    assert not {m for m in loaded if m.startswith("probe.") and m.count(".") > 1}


@pytest.mark.real
def test_the_nagios_burst_loads_neither_the_watch_loop_nor_the_upgrade_checks() -> None:
    loaded = loaded_after(
        "import probe.cli; probe.cli.build_parser(['burst', '--format', 'nagios'])"
    )
    assert "probe.cli.burst" in loaded
    assert not {m for m in loaded if m.split(".")[:2] in (["probe", "monitor"], ["probe", "lab"])}
    assert not {m for m in loaded if m.startswith(("probe.upgrade", "prometheus_client"))}
    assert not {f"probe.cli.{c}" for c in ("watch", "sink", "evidence", "postflight")} & loaded


def test_reports_and_verdict_history_read_runs_never_the_delivery_machinery() -> None:
    """What judges a run again and what tells it read the run's records and its history, not
    the burst and the sink: a report renders a run however it was made."""
    leaks = sorted(
        f"{name} -> {target}"
        for name, targets in graph().items()
        if unit(name) in ("reporting", "history")
        for target in targets
        if unit(target) == "delivery"
    )
    assert leaks == []


@pytest.mark.real
def test_opening_a_ledger_loads_neither_psutil_nor_pefile() -> None:
    code = "import sys, probe.ledger; print(sorted({'psutil', 'pefile'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr
