"""The layers hold: ``pipeline`` is the bottom (it imports neither ``stages`` nor ``rmpipe``),
``stages`` sit on it (never importing ``rmpipe``), the ``rmpipe`` CLI sits on top. Read from the
source with ``ast``, lazy imports inside functions included, so an arrow that runs up fails here
rather than as an import cycle in some later change."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# package -> the project packages it must not import
FORBIDDEN = {"pipeline": ("stages", "rmpipe"), "stages": ("rmpipe",)}


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, name) of every absolute import in ``path``, at any depth: ``from a import b``
    gives ``a.b`` (``b`` may be a module or a name in ``a``)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return out


def upward_imports(package: str) -> list[str]:
    bad = []
    for path in sorted((REPO / package).rglob("*.py")):
        for line, module in imports(path):
            if module.split(".")[0] in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_runs_up_a_layer(package):
    assert not upward_imports(package)


def test_the_check_sees_a_lazy_import_inside_a_function(tmp_path):
    """The rule would pass vacuously if the parser missed imports inside functions."""
    path = tmp_path / "mod.py"
    path.write_text("import numpy\n\ndef f():\n    from stages.fit.core import fit_arrays\n"
                    "    import rmpipe.cli\n")
    assert imports(path) == [(1, "numpy"), (4, "stages.fit.core.fit_arrays"), (5, "rmpipe.cli")]


def module_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports (lazy ones included)."""
    names = {".".join(p.relative_to(REPO).with_suffix("").parts): p
             for pkg in ("pipeline", "stages", "rmpipe") for p in (REPO / pkg).rglob("*.py")
             if p.name != "__init__.py"}
    graph = {}
    for name, path in names.items():
        graph[name] = set()
        for _, module in imports(path):
            parts = module.split(".")
            # `from pipeline import store` names a module: take the longest prefix that is one
            for k in range(len(parts), 0, -1):
                if ".".join(parts[:k]) in names:
                    graph[name].add(".".join(parts[:k]))
                    break
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each module that can reach itself (depth-first search)."""
    found, done = [], set()

    def visit(node, path):
        for nxt in sorted(graph[node]):
            if nxt in path:
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in done:
                visit(nxt, path + [nxt])
        done.add(node)

    for start in sorted(graph):
        if start not in done:
            visit(start, [start])
    return found


def test_no_two_modules_import_each_other():
    assert not cycles(module_graph())


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]
