"""The layout shows the design: imports run one way, no cycles, no module too long to read, and
the library reaches the built-in methods only through the registry."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest
from importlinter import configuration
from importlinter.application.use_cases import lint_imports

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "suite"
MAX_LINES = 400


def test_import_linter_contracts_are_kept() -> None:
    """The layer contract of pyproject.toml: cli → report → board | bench → run → results → methods → data → core."""
    configuration.configure()  # what the lint-imports command does before it reads the contracts
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_logo=True, cache_dir=None)


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), from the direct imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in sorted(graph.find_modules_directly_imported_by(module)):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles() -> None:
    graph = grimp.build_graph("mtbench")
    # a package's __init__ re-exporting its own modules is not a cycle between concerns
    for package in ("mtbench", *sorted(m for m in graph.modules if m.count(".") == 1)):
        for child in graph.find_children(package):
            if graph.direct_import_exists(importer=package, imported=child):
                graph.remove_import(importer=package, imported=child)
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for name in ("a", "b", "c"):
        graph.add_module(name)
    graph.add_import(importer="a", imported="b")
    graph.add_import(importer="b", imported="c")
    assert _cycles(graph) == []
    graph.add_import(importer="c", imported="a")
    assert _cycles(graph) == [["a", "b", "c"]]


@pytest.mark.parametrize("path", sorted([*LIBRARY.rglob("*.py"), *(ROOT / "baselines").glob("*.py")]),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_too_long_to_read(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines: split it by concern"


def test_the_library_never_imports_the_builtin_methods() -> None:
    offenders = []
    for path in LIBRARY.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno} imports {n}" for n in names
                          if n == "mtbench.baselines" or n.startswith("mtbench.baselines.")]
    assert offenders == []


def test_every_layer_is_a_package_named_in_the_contract() -> None:
    """A newcomer finds a layer from the folder names: every sub-package of suite/ is one layer of the contract."""
    text = (ROOT / "pyproject.toml").read_text()
    packages = sorted(p.name for p in LIBRARY.iterdir() if (p / "__init__.py").is_file())
    assert packages == sorted(["bench", "board", "cli", "core", "data", "methods", "report", "results", "run"])
    for name in packages:
        assert f"mtbench.{name}" in text, name


def test_the_readme_layout_names_every_module() -> None:
    """The README's layout section names every package and module of suite/, so it cannot fall behind."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Layout"):]
    section = section[:section.index("```", section.index("```") + 3)]
    missing = [str(p.relative_to(LIBRARY)) for p in [*LIBRARY.glob("*/"), *LIBRARY.glob("*/*.py")]
               if p.name not in ("__init__.py", "__main__.py") and (p.is_dir() and p.name != "__pycache__"
                                                                     and f"{p.name}/" not in section
                                                                     or p.suffix == ".py" and p.stem not in section)]
    assert missing == []
