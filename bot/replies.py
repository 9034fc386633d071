"""What a command answers: text for the CLI (and Slack's fallback), blocks for Slack."""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.blocks import Block

# Slack refuses a message text longer than this; longer replies are cut with a visible marker.
SLACK_TEXT_LIMIT = 3000
TRUNCATED = "\n… (cut at Slack's 3,000 characters)"


def slack_text(text: str, limit: int = SLACK_TEXT_LIMIT) -> str:
    """`text` as Slack accepts it: whole when it fits, else cut and marked as cut."""
    if len(text) <= limit:
        return text
    return text[: limit - len(TRUNCATED)] + TRUNCATED


@dataclass(frozen=True)
class Reply:
    text: str
    blocks: list[Block] = field(default_factory=list)
    # Also post to the alerts channel (gate changes, smoke results): the team must see them.
    alert: bool = False
    # Post to the approvals channel as a thread root (adjustment requests).
    approval_request: int | None = None
    # An adjustment decided by a typed command: the decision goes into its thread too.
    adjustment_decided: int | None = None
    # The incident this reply opened (its thread root is recorded for later notes).
    incident_opened: int | None = None
    # Also post into this incident's thread (notes, closeout).
    incident_thread: int | None = None
    # False: the answer is a "no" a script must see (the CLI exits 1), e.g. not ready.
    ok: bool = True
    # A file to upload into the incident's thread: (file name, content) — the postmortem.
    file: tuple[str, str] | None = None
