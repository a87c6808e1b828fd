"""dvc.yaml's code deps name what each stage really runs: every project module a stage imports
(found by reading the imports, lazy ones included) is a dep, and no dep is something the stage
never imports. A module added to a stage's imports without a dep here would never re-run it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages", "rmpipe")
# stage -> the modules `rmpipe <command>` runs for it (rmpipe/cli.py only dispatches to these)
ENTRIES = {
    "prepare": ["stages.prepare.command"],
    "embed": ["stages.embed.command"],
    "fit": ["stages.fit.command"],
    "evaluate": ["stages.evaluate.command:evaluate", "stages.evaluate.run"],
    "report": ["stages.evaluate.command:report", "stages.evaluate.report"],
}


def module_file(name: str) -> Path | None:
    path = REPO.joinpath(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.exists():
            return candidate
    return None


def imported(path: Path, function: str | None = None) -> set[str]:
    """Project modules ``path`` imports (anywhere in it; with ``function``, at its top level and
    inside that function only: the other functions of a command module are other commands)."""
    body = ast.parse(path.read_text()).body
    if function is not None:
        body = [n for n in body if not isinstance(n, ast.FunctionDef) or n.name == function]
    names = set()
    for node in (n for top in body for n in ast.walk(top)):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in names if n.split(".")[0] in PACKAGES and module_file(n)}


def closure(entries: list[str]) -> set[str]:
    """Files (relative to the repo) of the entries and everything they import, transitively."""
    seen, todo = set(), []
    for entry in entries:
        name, _, function = entry.partition(":")
        seen.add(name)
        todo += imported(module_file(name), function or None)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += imported(module_file(name))
    files = {str(module_file(n).relative_to(REPO)) for n in seen}
    return {f for f in files if not f.endswith("__init__.py")}


def code_deps(stage: str) -> list[str]:
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    deps = spec.get("do", spec)["deps"]
    return [d for d in deps if d.split("/")[0] in PACKAGES]


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", sorted(ENTRIES))
def test_every_module_a_stage_imports_is_a_dep(stage):
    deps = code_deps(stage)
    missing = sorted(f for f in closure(ENTRIES[stage]) if not covered(f, deps))
    assert not missing, f"dvc.yaml stage {stage}: add deps {missing}"


@pytest.mark.parametrize("stage", sorted(ENTRIES))
def test_no_dep_is_code_the_stage_never_runs(stage):
    runs = closure(ENTRIES[stage])
    extra = [d for d in code_deps(stage) if not (REPO / d).exists()
             or not any(f == d or f.startswith(d.rstrip("/") + "/") for f in runs)]
    assert not extra, f"dvc.yaml stage {stage}: deps {extra} are not imported by it"


def test_fit_depends_on_the_store_reader():
    """The issue that started this: a change to how the store is read must re-run fit."""
    assert "pipeline/store.py" in code_deps("fit")
