"""The shape of repmap_core: short modules of one concept, no import cycles (function-level
imports included), and no streamlit. Read from the source with `ast`; nothing is imported."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "repmap_core"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def core_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(CORE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(tree: ast.AST, this: str, is_package: bool) -> set[str]:
    """Every dotted module name an import statement anywhere in `tree` may load, at module level or
    inside a function (those run too, only later), except under `if TYPE_CHECKING:`. For
    `from a.b import c` both `a.b` and `a.b.c` are given: the caller keeps those that are modules."""
    out: set[str] = set()
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skipped.update(id(n) for n in ast.walk(node))
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                package = this.split(".") if is_package else this.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def import_graph() -> dict[str, set[str]]:
    """`module -> the repmap_core modules it imports`. A submodule import is an edge to the
    submodule only: its parent package runs first, but counting that edge would make every
    package that re-exports its submodules a cycle of its own."""
    modules = core_modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        names = imported_names(tree, name, path.name == "__init__.py")
        graph[name] = {n for n in names if n in modules and n != name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_cycle_finder_finds_a_planted_cycle_and_passes_a_chain():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_imports_inside_functions_count_and_type_checking_ones_do_not():
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from repmap_core.models import LoadedModel\n"
        "def f():\n    from repmap_core.store import cache_root\n"
        "from repmap_core import data\n"
    )
    names = imported_names(tree, "repmap_core.x", False)
    assert "repmap_core.store" in names and "repmap_core.data" in names
    assert "repmap_core.models" not in names


def test_repmap_core_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 40  # the walk found the package
    cycles = find_cycles(graph)
    assert cycles == [], "import cycles in repmap_core (a lazy import that dodges one is code in the wrong module): " + \
        "; ".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("name", sorted(core_modules()))
def test_no_core_module_is_over_the_line_budget(name):
    lines = core_modules()[name].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it by idea into modules of at most {MAX_LINES}"


def test_repmap_core_never_imports_streamlit():
    offenders = []
    for name, path in core_modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(n == "streamlit" or n.startswith("streamlit.") for n in imported_names(tree, name, False)):
            offenders.append(name)
    assert offenders == []
