"""What a command answers: text for the CLI (and Slack's fallback), blocks for Slack."""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.blocks import Block


@dataclass(frozen=True)
class Reply:
    text: str
    blocks: list[Block] = field(default_factory=list)
    # Also post to the alerts channel (gate changes, smoke results): the team must see them.
    alert: bool = False
    # Post to the approvals channel as a thread root (adjustment requests).
    approval_request: int | None = None
    # The incident this reply opened (its thread root is recorded for later notes).
    incident_opened: int | None = None
    # Also post into this incident's thread (notes, closeout).
    incident_thread: int | None = None
