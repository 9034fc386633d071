"""No import cycles through payops/: no payops module imports a module that imports it back.

Imports inside function bodies count as much as those at the top: they only postpone the
cycle to the first call. The graph is read with `ast` over the first-party packages, so a
cycle that leaves payops (payops -> bot -> payops) is found too.
"""

from __future__ import annotations

import ast
import importlib
from collections import deque
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = ("api", "bot", "core", "localnet", "payops")
Graph = dict[str, set[str]]


def module_files(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every module of `packages` under `root`."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The known modules that `name` imports anywhere in its body (functions included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    named: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            named.add(base)
            # `from pkg import mod` imports the module pkg.mod, not only pkg.
            named.update(f"{base}.{alias.name}" for alias in node.names)
    return {module for module in named if module in known and module != name}


def import_graph(root: Path, packages: tuple[str, ...]) -> Graph:
    files = module_files(root, packages)
    known = set(files)
    return {name: imported_modules(name, path, known) for name, path in files.items()}


def _path(graph: Graph, start: str, goal: str) -> list[str] | None:
    """The shortest chain of imports from `start` to `goal`, if there is one."""
    came_from: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        here = queue.popleft()
        if here == goal:
            chain: list[str] = []
            step: str | None = here
            while step is not None:
                chain.append(step)
                step = came_from[step]
            return chain[::-1]
        for there in sorted(graph.get(here, ())):
            if there not in came_from:
                came_from[there] = here
                queue.append(there)
    return None


def cycles_through(graph: Graph, prefix: str) -> list[list[str]]:
    """Each import of a module under `prefix` whose target imports it back, directly or
    through others, as the chain of imports [module, target, ..., module]."""
    found = []
    for module in sorted(graph):
        if module != prefix and not module.startswith(prefix + "."):
            continue
        for target in sorted(graph[module]):
            back = _path(graph, target, module)
            if back is not None:
                found.append([module, *back])
    return found


PAYOPS_MODULES = sorted(m for m in module_files(ROOT, ("payops",)) if m != "payops")


@pytest.mark.parametrize("name", PAYOPS_MODULES)
def test_every_payops_module_imports(name: str) -> None:
    importlib.import_module(name)


def test_no_payops_module_imports_a_module_that_imports_it_back() -> None:
    cycles = cycles_through(import_graph(ROOT, FIRST_PARTY), "payops")
    assert cycles == [], "\n".join(" -> ".join(chain) for chain in cycles)


def test_the_composition_root_does_not_import_the_preflight_checks() -> None:
    assert "payops.preflight_checks" not in import_graph(ROOT, FIRST_PARTY)["payops.compose"]


# -- the check itself ---------------------------------------------------------------------------


def _package(root: Path, modules: dict[str, str]) -> None:
    (root / "pkg").mkdir()
    (root / "pkg" / "__init__.py").write_text("")
    for name, source in modules.items():
        (root / "pkg" / f"{name}.py").write_text(source)


def test_the_check_finds_a_cycle_hidden_in_a_function_body(tmp_path: Path) -> None:
    _package(
        tmp_path,
        {
            "a": "from pkg import b\n",
            "b": "def later():\n    from pkg.a import thing\n    return thing\n",
            "c": "import pkg.b\n",
        },
    )
    assert cycles_through(import_graph(tmp_path, ("pkg",)), "pkg") == [
        ["pkg.a", "pkg.b", "pkg.a"],
        ["pkg.b", "pkg.a", "pkg.b"],
    ]


def test_the_check_follows_a_cycle_through_other_modules_and_relative_imports(
    tmp_path: Path,
) -> None:
    _package(
        tmp_path,
        {"a": "from . import b\n", "b": "from .c import x\n", "c": "from .a import y\n"},
    )
    cycles = cycles_through(import_graph(tmp_path, ("pkg",)), "pkg.a")
    assert cycles == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]


def test_the_check_accepts_imports_that_only_go_one_way(tmp_path: Path) -> None:
    _package(tmp_path, {"a": "from pkg import b, c\n", "b": "import pkg.c\n", "c": "import os\n"})
    assert cycles_through(import_graph(tmp_path, ("pkg",)), "pkg") == []
