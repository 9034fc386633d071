"""The shape of the tree, checked on every run (docs/ARCHITECTURE.md draws it).

- core/ decides and persists: it imports nothing from api/, bot/, payops/ or localnet/;
- api/ and bot/ are two faces of one service: neither imports the other;
- production code never imports localnet/ (the local chain is for development and tests): only
  the development commands (`payops up`, `payops demo`, `payops localnet`) start it;
- a domain package in core/ (ledger, purchases, adjustments, incidents, recon, triage) is
  entered through its `__init__` only: from outside it, `from core.recon import X`, never
  `from core.recon.store import X` (inside the package its modules import each other freely).

Imports inside functions count as much as those at the top of a module. Tests and bench/ may
reach into a module they measure or test; production code may not.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ("core", "api", "bot", "payops", "localnet")
DOMAINS = frozenset(
    {"ledger", "purchases", "adjustments", "incidents", "recon", "triage", "watch", "webhooks"}
)
# The development commands that run the local chain; nothing that `payops serve` loads.
DEV_TOOLS = frozenset({"payops.cli", "payops.cli_args", "payops.up", "payops.demo"})
FORBIDDEN = {
    "core": ("api", "bot", "payops", "localnet"),
    "api": ("bot", "payops", "localnet"),
    "bot": ("api", "payops", "localnet"),
    "payops": ("localnet",),
}


@dataclass(frozen=True)
class Violation:
    module: str
    line: int
    imported: str
    rule: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.imported}: {self.rule}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(module: str, source: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """Every module `source` imports, as an absolute dotted name, with its line.

    `from a.b import c` yields `a.b.c` when `c` is a submodule and `a.b` otherwise; both
    readings are yielded (`a.b` and `a.b.c`) and the rules look at each, since only the
    file system knows which it is."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def violations(module: str, source: str, is_package: bool = False) -> list[Violation]:
    """The layout rules `module` (whose text is `source`) breaks."""
    top = module.split(".")[0]
    forbidden = FORBIDDEN.get(top, ())
    if module in DEV_TOOLS:
        forbidden = tuple(f for f in forbidden if f != "localnet")
    found: list[Violation] = []
    seen: set[tuple[int, str]] = set()
    for line, imported in imported_modules(module, source, is_package):
        parts = imported.split(".")
        if parts[0] in forbidden:
            if (line, parts[0]) not in seen:
                seen.add((line, parts[0]))
                found.append(
                    Violation(module, line, imported, f"{top}/ may not import {parts[0]}/")
                )
            continue
        if parts[0] != "core" or len(parts) < 3 or parts[1] not in DOMAINS:
            continue
        inside = module == f"core.{parts[1]}" or module.startswith(f"core.{parts[1]}.")
        if not inside and is_module(".".join(parts[:3])):
            found.append(
                Violation(
                    module,
                    line,
                    imported,
                    f"enter core.{parts[1]} through its __init__ (from core.{parts[1]} import ...)",
                )
            )
    return found


def production_files() -> Iterator[Path]:
    for top in PRODUCTION:
        yield from sorted((ROOT / top).rglob("*.py"))


def test_production_code_keeps_the_layout() -> None:
    found = [
        str(v)
        for path in production_files()
        for v in violations(module_name(path), path.read_text(), path.name == "__init__.py")
    ]
    assert found == []


@pytest.mark.parametrize(
    ("module", "source", "rule"),
    [
        ("core.gate", "from api.auth import principal\n", "core/ may not import api/"),
        ("core.gate", "def f():\n    import bot.ops\n", "core/ may not import bot/"),
        ("core.smoke", "from payops import compose\n", "core/ may not import payops/"),
        ("api.app", "from bot import slack_app\n", "api/ may not import bot/"),
        ("bot.ops", "import api.auth\n", "bot/ may not import api/"),
        ("payops.compose", "from localnet.chain import LocalChain\n", "payops/ may not import"),
        ("core.db", "from localnet import server\n", "core/ may not import localnet/"),
        ("bot.ops", "from core.recon.store import findings_of\n", "enter core.recon"),
        ("bot.ops", "from core.recon import store\n", "enter core.recon"),
        ("core.smoke", "from core.ledger.store import balance\n", "enter core.ledger"),
        ("core.purchases.recovery", "from core.adjustments.rules import Adjustment\n", "enter"),
    ],
)
def test_a_broken_rule_is_reported(module: str, source: str, rule: str) -> None:
    found = violations(module, source)
    assert found, f"{source!r} in {module} was not reported"
    assert rule in found[0].rule


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("bot.ops", "from core.recon import Finding, run_reconciliation\n"),
        ("bot.ops", "from core import recon, ledger\n"),
        ("core.recon.run", "from core.recon.store import findings_of\n"),
        ("core.recon.run", "from . import store\n"),
        ("core.recon", "from core.recon.rules import Finding\n"),
        ("payops.compose", "from api.app import create_app\nfrom bot import slack_app\n"),
        ("localnet.server", "from core.chain.encoding import b58decode\n"),
        ("payops.up", "from localnet.chain import LocalChain\n"),
        ("core.smoke", "from core.chain.rpc import SolanaRpc\n"),
    ],
)
def test_an_allowed_import_is_not_reported(module: str, source: str) -> None:
    assert violations(module, source, is_package=module == "core.recon") == []


def test_relative_imports_are_resolved_before_the_rules_apply() -> None:
    found = violations("core.purchases.service", "from ..recon import store\n")
    assert [v.imported for v in found] == ["core.recon.store"]
