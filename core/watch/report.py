"""What one poll of the treasury watcher did (`service.poll`, `settle`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PollReport:
    """What one poll did; `stopped` says why it ended before the newest signature."""

    started: bool = False
    read: int = 0  # signatures read past the cursor
    recorded: int = 0  # flows recorded
    credited: int = 0
    settled: int = 0  # bound inflows taken to a final outcome (credited or refused)
    stopped: str | None = None
    cursor_slot: int | None = None
    seen: int = 0  # payments to intents seen at `confirmed`, not final yet
    credited_intents: list[str] = field(default_factory=list)
