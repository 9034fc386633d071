"""The treasury watcher: the chain side of the books (see `service`)."""

from core.watch.report import PollReport
from core.watch.rules import Flow, flow_of, intent_ids_in, new_signatures
from core.watch.service import (
    WATCHER_ACTOR,
    TreasuryHistory,
    poll,
    run,
    seconds_behind,
)
from core.watch.store import (
    Cursor,
    RecordedFlow,
    Sighting,
    books,
    cursor,
    flows_of_intent,
    recorded_total,
    sightings_of,
)

__all__ = [
    "WATCHER_ACTOR",
    "Cursor",
    "Flow",
    "PollReport",
    "RecordedFlow",
    "Sighting",
    "TreasuryHistory",
    "books",
    "cursor",
    "flow_of",
    "flows_of_intent",
    "intent_ids_in",
    "new_signatures",
    "poll",
    "recorded_total",
    "run",
    "seconds_behind",
    "sightings_of",
]
