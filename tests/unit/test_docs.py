"""The operator docs stay complete: every setting in CONFIGURATION.md, every Slack command and
CLI command in OPERATIONS.md, every runbook section in OPERATIONS.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.config import Settings
from payops.cli_args import parser as _parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def setting_names() -> list[str]:
    names = []
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        names.append(str(choices[0]) if choices else f"PAYOPS_{name.upper()}")
    return names


@pytest.mark.parametrize("variable", setting_names())
def test_every_setting_is_in_configuration_md(variable: str) -> None:
    assert f"`{variable}`" in (DOCS / "CONFIGURATION.md").read_text()


def test_every_slack_command_and_cli_command_is_in_operations_md() -> None:
    text = (DOCS / "OPERATIONS.md").read_text()
    commands = re.findall(r"command: (/pay-[a-z]+)", (ROOT / "manifest.yml").read_text())
    assert len(commands) == 8
    for command in commands:
        assert f"`{command}" in text, command
    sub = next(a for a in _parser()._actions if a.dest == "command")
    for name in sub.choices:  # type: ignore[union-attr]
        if name not in ("up", "demo", "token", "localnet", "serve"):
            assert f"payops {name}" in text, name


@pytest.mark.parametrize(
    "section",
    [
        "Scope",
        "Normal flow",
        "Before deploy",
        "After deploy",
        "1. Triage",
        "2. Contain",
        "3. Diagnose",
        "4. Recover",
        "5. Closeout",
        "1. Compare totals",
        "2. Check anomalies",
        "3. Resolve",
        "Rollback safety",
        "Slack app setup",
        "Scaling out",
        "When the RPC provider rate-limits",
    ],
)
def test_every_runbook_section_has_a_heading(section: str) -> None:
    headings = re.findall(r"^#+ (.+)$", (DOCS / "OPERATIONS.md").read_text(), re.MULTILINE)
    assert section in headings
