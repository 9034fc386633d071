"""The settled pairs this process has seen: (intent, signature) pairs the database confirmed
as credited.

A credited signature is final: an intent never leaves CONFIRMED and the ledger keeps its
purchase transaction unique per signature and per intent, so a pair the database once
answered "credited" for is credited for good. A repeated verify of such a pair is answered
from here without reading the intent again; the cache only ever holds pairs read as
CONFIRMED from the database or credited by a committed transaction, and a miss goes to the
database as before (which is how replicas share what they know). Bounded (LRU), one per
`Services` (`Services.settled`).
"""

from __future__ import annotations

import uuid
from collections import OrderedDict

from core.purchases.intents import Intent, IntentStatus

SETTLED_CAPACITY = 10_000


class SettledPairs:
    """A bounded LRU of confirmed intents keyed by (intent id, the signature credited)."""

    def __init__(self, capacity: int = SETTLED_CAPACITY) -> None:
        self._capacity = capacity
        self._pairs: OrderedDict[tuple[uuid.UUID, str], Intent] = OrderedDict()

    def get(self, intent_id: uuid.UUID, signature: str) -> Intent | None:
        key = (intent_id, signature)
        intent = self._pairs.get(key)
        if intent is not None:
            self._pairs.move_to_end(key)
        return intent

    def remember(self, intent: Intent) -> None:
        """Only a CONFIRMED intent, as the database has it, under its own signature."""
        if intent.status is not IntentStatus.CONFIRMED or intent.tx_signature is None:
            return
        key = (intent.id, intent.tx_signature)
        self._pairs[key] = intent
        self._pairs.move_to_end(key)
        while len(self._pairs) > self._capacity:
            self._pairs.popitem(last=False)

    def __len__(self) -> int:
        return len(self._pairs)
