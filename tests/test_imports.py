"""The shape of the package: imports run one way through the stages, no import cycles, only
``__main__`` imports the CLI, no two modules share a name, every module has ``__all__``.

The module graph is read with ``ast`` (nothing is imported), from absolute and relative
imports anywhere in a module, inside functions too: a lazy import that closes a cycle still
ties two modules together. Imports under ``if TYPE_CHECKING:`` never run: the runtime graph
leaves them out, and a second check counts them (a type-only cycle still ties two modules).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "workbench"


def _modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package at ``root``."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _runtime_nodes(tree: ast.AST, type_checking: bool = False) -> list[ast.AST]:
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (kept with ``type_checking``)."""
    nodes, stack = [], [tree]
    while stack:
        node = stack.pop()
        if not type_checking and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        nodes.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return nodes


def _targets(node: ast.Import | ast.ImportFrom, name: str, is_package: bool) -> list[str]:
    """The dotted names an import statement in module ``name`` may load."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = name if is_package else name.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    return [base] + [f"{base}.{alias.name}" for alias in node.names]  # `from pkg import submodule`


def import_graph(root: Path, type_checking: bool = False) -> dict[str, set[str]]:
    """Module -> the package's modules it imports; an import of an enclosing package is no edge (it ran first).

    With ``type_checking`` the imports under ``if TYPE_CHECKING:`` count too."""
    modules = _modules(root)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        edges = set()
        for node in _runtime_nodes(ast.parse(path.read_text(), str(path)), type_checking):
            if isinstance(node, ast.Import | ast.ImportFrom):
                edges.update(t for t in _targets(node, name, is_package) if t in modules)
        graph[name] = {t for t in edges if t != name and not name.startswith(t + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None if it is acyclic (depth-first, three colours)."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in on_path:
                return path[path.index(nxt):] + [nxt]
            if nxt not in done and (cycle := visit(nxt)):
                return cycle
        on_path.discard(path.pop())
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done and (cycle := visit(start)):
            return cycle
    return None


# Stages in import order: a module imports only from its own stage or earlier ones. Top-level
# modules are the base stage; a subpackage is the stage of its name; the face may import anything.
STAGES = ("base", "data", "training", "evaluation", "analysis", "notebook", "report")
FACE = {"workbench", "workbench.__main__", "workbench.cli", "workbench.demo"}
# Known imports against the stage order, each with its reason; the test fails when one disappears.
ALLOWED_UPWARD = {
    ("workbench.builtin", "workbench.training.checkpoint"):
        "resolve_pretrained maps a pretraining run folder to its newest checkpoint (a lazy import)",
    ("workbench.evaluation.results", "workbench.notebook.plots"):
        "a result object draws itself (figure()) with the notebook's plots (a lazy import)",
}


def stage(module: str) -> str | None:
    """The stage of a dotted module name (None for the face)."""
    if module in FACE:
        return None
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES[1:] else "base"


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Every (importer, imported) edge against the stage order; importing the face counts as upward."""
    rank = {name: i for i, name in enumerate(STAGES)}
    bad = []
    for name, edges in sorted(graph.items()):
        if stage(name) is None:
            continue
        for target in sorted(edges):
            if stage(target) is None or rank[stage(target)] > rank[stage(name)]:
                bad.append((name, target))
    return bad


# ----------------------------------------------------------------------------- the checker itself
def test_find_cycle_on_synthetic_graphs():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None  # a diamond is no cycle
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"b"}}) == ["b", "b"]
    assert find_cycle({"x": {"a"}, "a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]


def test_import_graph_finds_a_cycle_through_a_lazy_relative_import(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import f\n")
    (pkg / "a.py").write_text("from .sub.b import g\n\ndef f():\n    return g()\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def g():\n    from ..a import f  # lazy, still a cycle\n    return f\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n"
                              "import pkg.sub.b\n")
    graph = import_graph(pkg)
    assert graph["pkg"] == {"pkg.a"} and graph["pkg.sub.b"] == {"pkg.a"}
    assert graph["pkg.c"] == {"pkg.sub.b"}  # absolute import counted, TYPE_CHECKING one not
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.a"]


def test_import_graph_counts_type_checking_imports_when_asked(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import B\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n")
    assert find_cycle(import_graph(pkg)) is None
    assert find_cycle(import_graph(pkg, type_checking=True)) == ["pkg.a", "pkg.b", "pkg.a"]


def test_upward_imports_on_synthetic_graphs():
    assert stage("workbench.config") == "base" and stage("workbench.data") == "data"
    assert stage("workbench.report.sweep") == "report" and stage("workbench.cli") is None
    graph = {"workbench.evaluation.probes": {"workbench.training.engine", "workbench.config"},
             "workbench.data.masking": {"workbench.analysis.attention"},  # data may not use analysis
             "workbench.training.model": {"workbench.demo"},  # nor may any stage use the face
             "workbench.cli": {"workbench.report.runner"}}  # the face may use anything
    assert upward_imports(graph) == [("workbench.data.masking", "workbench.analysis.attention"),
                                     ("workbench.training.model", "workbench.demo")]


# ----------------------------------------------------------------------------- workbench
def test_every_subpackage_is_a_stage():
    packages = {name.split(".")[1] for name in _modules(PACKAGE) if name.count(".") >= 2}
    assert packages == set(STAGES[1:]), f"subpackages {sorted(packages)} vs stages {STAGES[1:]}"


def test_imports_run_one_way_through_the_stages():
    graph = import_graph(PACKAGE, type_checking=True)
    bad = [edge for edge in upward_imports(graph) if edge not in ALLOWED_UPWARD]
    assert not bad, "imports against the stage order " + " < ".join(STAGES) + ": " + ", ".join(
        f"{a} ({stage(a)}) imports {b} ({stage(b) or 'face'})" for a, b in bad)
    stale = set(ALLOWED_UPWARD) - set(upward_imports(graph))
    assert not stale, f"ALLOWED_UPWARD lists imports that are gone: {sorted(stale)}"


def test_no_two_modules_share_a_name():
    seen: dict[str, list[str]] = {}
    for name in _modules(PACKAGE):
        leaf = name.rpartition(".")[2]
        if leaf not in ("workbench", "__main__") and name.count(".") >= (2 if leaf in STAGES else 1):
            seen.setdefault(leaf, []).append(name)
    shared = {leaf: names for leaf, names in seen.items() if len(names) > 1}
    assert not shared, f"modules sharing a name: {shared}"


def test_workbench_has_no_import_cycle_through_type_checking_imports():
    cycle = find_cycle(import_graph(PACKAGE, type_checking=True))
    assert cycle is None, "import cycle (counting `if TYPE_CHECKING:` imports): " + " -> ".join(cycle or [])


def test_workbench_has_no_import_cycle():
    graph = import_graph(PACKAGE)
    assert len(graph) > 20 and "workbench.report.runner" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_only_main_imports_the_cli():
    graph = import_graph(PACKAGE)
    importers = sorted(name for name, edges in graph.items() if "workbench.cli" in edges)
    assert importers == ["workbench.__main__"], f"workbench.cli is imported by {importers}"


def _all_names(path: Path) -> list[str] | None:
    """The string literals of a module-level ``__all__ = [...]``, or None without one."""
    for node in ast.parse(path.read_text()).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            value = ast.literal_eval(node.value)
            return list(value)
    return None


@pytest.mark.parametrize("name", sorted(_modules(PACKAGE)))
def test_every_module_declares_all(name):
    path = _modules(PACKAGE)[name]
    names = _all_names(path)
    assert names is not None, f"{path.relative_to(PACKAGE.parent)} has no module-level __all__"
    assert all(isinstance(n, str) for n in names) and len(set(names)) == len(names)


def test_building_the_parser_imports_no_torch():
    """`workbench --help` stays quick: every subcommand imports its heavy modules when it runs."""
    code = ("import sys\nfrom workbench.cli import build_parser\nbuild_parser()\n"
            "print(sorted(m for m in ('torch', 'transformers', 'pandas', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent).stdout
    assert out.strip() == "[]"
