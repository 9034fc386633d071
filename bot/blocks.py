"""Pure Block Kit builders shared by every command family."""

from __future__ import annotations

from typing import Any

Block = dict[str, Any]

MAX_SECTION = 2900  # Slack allows 3000 characters in a section's text


def header(text: str) -> Block:
    return {"type": "header", "text": {"type": "plain_text", "text": text[:150], "emoji": True}}


def section(markdown: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": markdown[:MAX_SECTION] or " "}}


def fields(pairs: list[tuple[str, str]]) -> Block:
    return {
        "type": "section",
        "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"[:2000]} for k, v in pairs[:10]],
    }


def context(markdown: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": markdown[:MAX_SECTION]}]}


def divider() -> Block:
    return {"type": "divider"}


def button(text: str, action_id: str, value: str, style: str | None = None) -> Block:
    b: Block = {
        "type": "button",
        "text": {"type": "plain_text", "text": text, "emoji": True},
        "action_id": action_id,
        "value": value,
    }
    if style:
        b["style"] = style
    return b


def actions(block_id: str, *buttons: Block) -> Block:
    return {"type": "actions", "block_id": block_id, "elements": list(buttons)}


def code(text: str) -> str:
    return "```" + text.replace("```", "'''")[: MAX_SECTION - 6] + "```"


def mark(ok: bool) -> str:
    return ":white_check_mark:" if ok else ":x:"
