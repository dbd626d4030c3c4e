"""The shape of repmap_core: layers that import only downwards (LAYERS), short modules of one concept,
no import cycles (function-level imports included), and no streamlit. Read from the source with `ast`;
nothing is imported."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "repmap_core"
MAX_LINES = 400
APP = ("repmap_ui", "views", "app")  # above every layer of repmap_core: the pages and their helpers


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


def imported_names(tree: ast.AST, this: str, is_package: bool, type_checking: bool = False) -> set[str]:
    """Every dotted module name an import statement anywhere in `tree` may load, at module level or
    inside a function (those run too, only later); under `if TYPE_CHECKING:` only with `type_checking`
    (such an import never runs, so it makes no cycle, but it still says which layer a module leans on).
    For `from a.b import c` both `a.b` and `a.b.c` are given: the caller keeps those that are modules."""
    out: set[str] = set()
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node) and not type_checking:
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


def import_graph(type_checking: bool = False) -> dict[str, set[str]]:
    """`module -> the repmap_core modules it imports` (with those under `if TYPE_CHECKING:` when
    `type_checking`). A submodule import is an edge to the submodule only: its parent package runs
    first, but counting that edge would make every package that re-exports its submodules a cycle
    of its own. An import of the app (`repmap_ui`, `views`) is kept as an edge too."""
    modules = core_modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        names = imported_names(tree, name, path.name == "__init__.py", type_checking)
        graph[name] = {n for n in names if (n in modules and n != name) or n.split(".")[0] in APP}
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
        "if TYPE_CHECKING:\n    from repmap_core.capture.models import LoadedModel\n"
        "def f():\n    from repmap_core.capture.store import cache_root\n"
        "from repmap_core.data import load\n"
    )
    names = imported_names(tree, "repmap_core.x", False)
    assert "repmap_core.capture.store" in names and "repmap_core.data.load" in names
    assert "repmap_core.capture.models" not in names


def test_repmap_core_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 40  # the walk found the package
    cycles = find_cycles(graph)
    assert cycles == [], "import cycles in repmap_core (a lazy import that dodges one is code in the wrong module): " + \
        "; ".join(" <-> ".join(c) for c in cycles)


# The layers of repmap_core, low to high. A unit is a top-level module or a subpackage (`__init__` is the
# package's own __init__.py: __version__, RepmapError). A module may import its own unit and any unit on a
# lower layer, never one above it, nor a sibling on its own layer: capture | analysis, steering | finetune
# and results | catalog stay independent of each other, so each can be read, tested and changed alone.
# Every import counts: module-level, inside a function, and under `if TYPE_CHECKING:`. Code that needs a
# higher floor belongs on that floor (or what it needs belongs lower); a layer is never widened for it.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "jsonable", "progress", "pairs"),  # base: no repmap imports but each other's layer below
    ("__init__", "locations"),  # the package's face; where files are (cache root, embedded model)
    ("access",),  # what a served app may read and compute
    ("data",),  # rows: DATA SPEC -> TextDataset
    ("capture", "analysis"),  # models -> activations (cached); arrays in, numbers out
    ("steering", "finetune"),  # what runs a model with a purpose: steer it, train it
    ("results", "catalog"),  # each view's result, built by one function; what is usable offline
    ("share",),  # what leaves the app: figures, exports, bundles, reports
    ("papers",),  # what reproduces a paper: recipes, published numbers, presets, the tour
    ("cli",),  # the CLI's command groups
    ("__main__",),  # the CLI's entry point
]  # and above them all the app: app.py, views/, repmap_ui/ (APP)


def unit_of(module: str) -> str:
    """`repmap_core.capture.store` -> `capture`; `repmap_core` -> `__init__`; `views.home` -> `views`."""
    parts = module.split(".")
    if parts[0] != "repmap_core":
        return parts[0]
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(unit: str) -> int:
    if unit in APP:
        return len(LAYERS)
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def wrong_way_imports(graph: dict[str, set[str]]) -> list[str]:
    """Each import that runs up a layer or across to a sibling, as `module -> imported (unit L -> unit L')`."""
    out = []
    for module, imported in sorted(graph.items()):
        unit = unit_of(module)
        for other in sorted(imported):
            to = unit_of(other)
            if to != unit and layer_of(to) >= layer_of(unit):
                out.append(f"{module} -> {other} ({unit} on layer {layer_of(unit)} -> {to} on layer {layer_of(to)})")
    return out


def test_every_module_sits_on_one_layer():
    units = [u for layer in LAYERS for u in layer]
    assert len(units) == len(set(units))
    unplaced = sorted({unit_of(m) for m in core_modules()} - set(units))
    assert unplaced == [], f"place {unplaced} in LAYERS (by what it imports and what imports it)"


def test_the_layer_check_finds_planted_wrong_way_imports_and_passes_downward_ones():
    planted = {
        "repmap_core.data.text_dataset": {"repmap_core.analysis.splits", "repmap_core.errors"},  # up a layer
        "repmap_core.capture.model_memory": {"repmap_core.analysis.stats"},  # across to a sibling
        "repmap_core.share.bundle": {"repmap_core.share.exports", "repmap_core.results.view_fits", "repmap_core"},
        "repmap_core.access": {"repmap_core.locations"},
        "repmap_core.results.recent": {"repmap_ui.common"},  # the app is above every layer
    }
    assert wrong_way_imports(planted) == [
        "repmap_core.capture.model_memory -> repmap_core.analysis.stats (capture on layer 4 -> analysis on layer 4)",
        "repmap_core.data.text_dataset -> repmap_core.analysis.splits (data on layer 3 -> analysis on layer 4)",
        "repmap_core.results.recent -> repmap_ui.common (results on layer 6 -> repmap_ui on layer 11)",
    ]
    tree = ast.parse("from typing import TYPE_CHECKING\n"
                     "if TYPE_CHECKING:\n    from repmap_core.data.load import TextDataset\n")
    assert "repmap_core.data.load" in imported_names(tree, "repmap_core.analysis.splits", False, type_checking=True)


def test_no_import_runs_up_a_layer_or_across_to_a_sibling():
    """LAYERS above, checked on every import in repmap_core, TYPE_CHECKING ones included."""
    graph = import_graph(type_checking=True)
    assert len(graph) > 40
    wrong = wrong_way_imports(graph)
    assert wrong == [], "imports against the layer order (move the code to the layer it belongs on):\n" + "\n".join(wrong)


@pytest.mark.parametrize("name", sorted(core_modules()))
def test_no_core_module_is_over_the_line_budget(name):
    lines = core_modules()[name].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it by idea into modules of at most {MAX_LINES}"


def test_the_progress_callback_type_is_written_once():
    """`Progress` lives in progress.py; a module spelling the callback type out again (or defining its
    own alias) is a second mechanism for the same thing."""
    offenders = []
    for name, path in core_modules().items():
        if name == "repmap_core.progress":
            continue
        source = path.read_text(encoding="utf-8")
        if "Callable[[float, str], None]" in source or "\nProgress = " in source:
            offenders.append(name)
    assert offenders == []


# Modules without a test file of their own (tests/<package>/test_<name>.py, mirroring repmap_core), each
# with the test file that covers it by content and a phrase of that file that shows it.
# Decided by reading the tests; the phrase keeps the entry honest when tests move.
TESTED_IN = {
    "repmap_core.__main__": ("cli/test_contract.py", "from repmap_core.__main__ import main"),
    "repmap_core.analysis.affine": ("analysis/test_maps.py", "held_out_rows"),
    "repmap_core.analysis.cka": ("analysis/test_similarity.py", "cka._cka_features"),
    "repmap_core.analysis.gd_maps": ("analysis/test_maps.py", "GDMap"),
    "repmap_core.analysis.similarity_inputs": ("analysis/test_similarity.py", "similarity needs the same rows"),
    "repmap_core.analysis.similarity_null": ("analysis/test_similarity.py", "layer_cka_null"),
    "repmap_core.analysis.transfer": ("analysis/test_maps.py", "transfer_direction"),
    "repmap_core.capture.model_checks": ("cli/test_bad_inputs.py", "NaN or inf"),
    "repmap_core.steering.letters": ("steering/test_steering.py", "letter_logit_gaps"),
    "repmap_core.capture.model_config": ("capture/test_models.py", "model_info("),
    "repmap_core.capture.model_layout": ("capture/test_models.py", "find_blocks("),
    "repmap_core.capture.model_memory": ("capture/test_models.py", "model_memory"),
    "repmap_core.capture.stream_writer": ("data/test_streaming.py", "LayerStreamWriter("),
    "repmap_core.cli.activations": ("cli/test_cli.py", 'run_cli("extract"'),
    "repmap_core.cli.fits": ("cli/test_cli.py", 'run_cli("within"'),
    "repmap_core.cli.preset": ("papers/test_presets.py", 'run_cli("preset", "list"'),
    "repmap_core.cli.recipe": ("cli/test_cli.py", 'run_cli("recipe", "within"'),
    "repmap_core.cli.share": ("share/test_report.py", '"repmap_core", "report"'),
    "repmap_core.cli.vectors": ("cli/test_cli.py", 'run_cli("steering-vectors"'),
    "repmap_core.data.class_names": ("analysis/test_axes.py", "from repmap_core.data.class_names import class_names"),
    "repmap_core.data.data_spec": ("data/test_data.py", "parse_spec("),
    "repmap_core.data.load": ("data/test_data.py", "load_dataset("),
    "repmap_core.data.schemas": ("data/test_data.py", "adapt_frame("),
    "repmap_core.data.tables": ("data/test_data.py", "read_table("),
    "repmap_core.data.text_dataset": ("data/test_data.py", ".subsample("),
    "repmap_core.errors": ("cli/test_contract.py", "RepmapError"),
    "repmap_core.finetune.checkpoints": ("finetune/test_train.py", "weak_labels("),
    "repmap_core.finetune.classifier": ("finetune/test_train.py", "predict("),
    "repmap_core.papers.experiments": ("cli/test_cli.py", 'run_cli("recipe", "within"'),
    "repmap_core.papers.preset_needs": ("papers/test_presets.py", "memory_bytes("),
    "repmap_core.papers.preset_runs": ("papers/test_presets.py", "run("),
    "repmap_core.papers.preset_table": ("papers/test_presets.py", "PRESETS"),
    "repmap_core.share.arrays": ("cli/test_bad_inputs.py", "holds Python objects (pickle), which repmap never loads"),
    "repmap_core.share.figures_shift": ("share/test_figures.py", "figures_shift"),
    "repmap_core.share.report_sections": ("share/test_report.py", "build_sections(states, {}, ALL)"),
    "repmap_core.steering.apply": ("steering/test_steering.py", "propensity_sweep"),
    "repmap_core.steering.choices": ("steering/test_steering.py", "ab_prompts"),
    "repmap_core.steering.compare": ("steering/test_steering.py", "compute_vectors"),
    "repmap_core.steering.run": ("pages/test_steering_page.py", "steer.sweep_form"),
    "repmap_core.steering.sentiment": ("steering/test_steering.py", "sentiment_vector"),
    "repmap_core.steering.vectors": ("steering/test_steering.py", "caa_vector"),
}
TESTS = Path(__file__).resolve().parent


def own_test_file(name: str) -> Path:
    """tests/ mirrors repmap_core: `repmap_core.capture.store` -> tests/capture/test_store.py."""
    *package, module = name.split(".")[1:]
    return TESTS.joinpath(*package, f"test_{module}.py")


def covering_file(file: str) -> Path:
    """A test file named in TESTED_IN, as `folder/test_x.py` under tests/."""
    return TESTS / file


def test_tests_mirror_the_packages():
    """Each subpackage of repmap_core has its test folder of the same name, and every test folder is
    one of those or one of the two kept apart (pages: AppTest; browser: Chromium)."""
    packages = {p.parent.name for p in CORE.glob("*/__init__.py")}
    folders = {p.parent.name for p in TESTS.glob("*/__init__.py")}
    assert len(packages) >= 7
    assert folders == packages | {"pages", "browser"}


@pytest.mark.parametrize("name", sorted(n for n, p in core_modules().items() if p.name != "__init__.py"))
def test_every_core_module_has_tests(name):
    if own_test_file(name).exists():
        assert name not in TESTED_IN, f"{name} has {own_test_file(name).name}; drop its TESTED_IN entry"
        return
    assert name in TESTED_IN, f"{name} has no {own_test_file(name).name}; write one, or name the test file that covers it"
    file, phrase = TESTED_IN[name]
    assert phrase in covering_file(file).read_text(encoding="utf-8"), f"{file} no longer shows that it covers {name}"


def test_repmap_core_never_imports_streamlit():
    offenders = []
    for name, path in core_modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(n == "streamlit" or n.startswith("streamlit.") for n in imported_names(tree, name, False)):
            offenders.append(name)
    assert offenders == []


def readme_code_map() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text[text.index("## Code layout"):text.index("## Scaling out")]


def module_named_in(code_map: str, path: Path) -> bool:
    import re

    stem = path.stem if path.is_file() else path.name
    return re.search(rf"(^|[ ,(/]){re.escape(stem)}(\.py|/)", code_map, re.M) is not None


def test_the_readmes_code_map_names_every_module():
    """README's code layout is the newcomer's map: every module of the library and the app's helpers
    (and every subpackage) is named there, so the map cannot fall behind the tree unseen."""
    code_map = readme_code_map()
    paths = [p for folder in ("repmap_core", "repmap_ui") for p in (ROOT / folder).rglob("*")
             if (p.suffix == ".py" and p.name != "__init__.py") or (p.is_dir() and (p / "__init__.py").exists())]
    assert len(paths) > 50
    missing = sorted(str(p.relative_to(ROOT)) for p in paths if not module_named_in(code_map, p))
    assert missing == [], f"README's code layout does not name {missing}"
    assert not module_named_in(code_map, ROOT / "repmap_core" / "no_such_module.py")


PAGE_LINES = 250
PAGES = sorted((ROOT / "views").glob("*.py"))
# what a page must leave to repmap_core: fitting (an estimator's .fit), sweeping, splitting rows
ESTIMATOR_METHODS = ("fit", "fit_transform")
CORE_WORK = ("propensity_sweep", "validation_split", "train_test_split_groups", "split_pairs", "train_test_split",
             "held_out_rows")


def core_work_calls(source: str) -> list[str]:
    calls = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name in CORE_WORK or (isinstance(f, ast.Attribute) and name in ESTIMATOR_METHODS):
                calls.append(f"{name}() at line {node.lineno}")
    return calls


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_pages_only_draw(path):
    """A page stays a readable flow under 250 lines, and fits, sweeps and splits nothing itself."""
    source = path.read_text(encoding="utf-8")
    assert len(source.splitlines()) <= PAGE_LINES, f"{path.name} has {len(source.splitlines())} lines"
    assert core_work_calls(source) == [], f"{path.name} does core work: {core_work_calls(source)}"


def test_the_page_check_sees_fits_sweeps_and_splits():
    planted = "m = RidgeMap().fit(S, T)\nsweep = propensity_sweep(lm, p, 3, v, [1])\nvalidation_split(d, 0.1, 0)\n"
    assert [c.split("(")[0] for c in core_work_calls(planted)] == ["fit", "propensity_sweep", "validation_split"]
    assert core_work_calls("name.split('/')[-1]\nst.plotly_chart(fig)\nfit(result, req)\n") == []  # the page's own helper


def test_analysis_reads_arrays_and_never_models_data_or_the_cache():
    """analysis/ is arrays in, numbers out: whatever caches, loads or extracts sits above it (a page
    hands a projection its memo), so an analysis runs the same on any arrays, in any process."""
    graph = import_graph(type_checking=True)
    analysis = {m for m in graph if m.startswith("repmap_core.analysis.")}
    assert len(analysis) >= 10
    below = ("repmap_core.analysis", "repmap_core.errors", "repmap_core.progress", "repmap_core.jsonable",
             "repmap_core.pairs")
    reaching = {m: sorted(n for n in graph[m] if not n.startswith(below)) for m in analysis}
    assert {m: n for m, n in reaching.items() if n} == {}
