"""What this process knows of intents without reading them: the pairs it saw settled, and
the intents it created that it has not seen settled (fresh).

**Settled pairs.** A credited signature is final: an intent never leaves CONFIRMED and the
ledger keeps its purchase transaction unique per signature and per intent, so a pair the
database once answered "credited" for is credited for good. A repeated verify of such a pair
is answered from here without reading the intent again; the cache only ever holds pairs read
as CONFIRMED from the database or credited by a committed transaction, and a miss goes to the
database as before (which is how replicas share what they know).

**Pairs being credited.** Verifies of one paid intent that arrive together (a wallet and the
frontend both verifying, a client retrying, a burst) get the chain's answer together and
would each send the credit: the first would commit it and every other one would find the
intent confirmed by its signature after a transaction of its own, locking the intent row in
turn. Instead the first credit of a pair is sent and the others wait for it to end
(`crediting`, `credit_in_flight`): when it committed, the pair is settled and each of them is
answered as the duplicate it is; when it failed in any way, each sends its own credit as
before, so one caller's error is never another's answer.

**Fresh intents.** An intent's terms (owner, credits, amount, mint, treasury, reference,
times) never change; only its status does. A verify of an intent this process created asks
the chain with the terms kept here, without reading the intent first: the credit locks the
row and re-checks its status itself, and the ledger's constraints keep the credit unique,
so the read before the chain decides nothing the credit depends on. Whenever the chain does
not confirm the payment or the credit finds the intent settled otherwise, the verify reads
the intent and goes on as if it had read it first (`service.verify_intent`).

The settled pairs and the fresh intents are bounded (LRU), one each per `Services`
(`Services.settled`, `Services.fresh`); the pairs being credited are as many as the credits
in flight. The settled pairs hold 50,000: half a minute to a minute of credits at the rates a
2-CPU machine reaches (800-1,500 a second in `bench/perf.py`), so that the repeats of a busy
minute are still answered from memory.
A pair costs about 920 bytes (46 MB when full): the terms every intent shares (mint, token
program, treasury and its token account) are kept once (`sys.intern`), not once per row
read.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import replace
from typing import Generic, TypeVar

from core.purchases.intents import Intent, IntentStatus

SETTLED_CAPACITY = 50_000
FRESH_CAPACITY = 10_000  # about an hour of intents at 3 a second; 7 MB when full

Key = TypeVar("Key")


class _Lru(Generic[Key]):
    """Intents by key, the least recently used dropped beyond `capacity`."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: OrderedDict[Key, Intent] = OrderedDict()

    def get(self, key: Key) -> Intent | None:
        intent = self._items.get(key)
        if intent is not None:
            self._items.move_to_end(key)
        return intent

    def put(self, key: Key, intent: Intent) -> None:
        self._items[key] = intent
        self._items.move_to_end(key)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def drop(self, key: Key) -> None:
        self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)


class SettledPairs:
    """Confirmed intents keyed by (intent id, the signature credited)."""

    def __init__(self, capacity: int = SETTLED_CAPACITY) -> None:
        self._pairs: _Lru[tuple[uuid.UUID, str]] = _Lru(capacity)
        self._crediting: dict[tuple[uuid.UUID, str], asyncio.Event] = {}

    def get(self, intent_id: uuid.UUID, signature: str) -> Intent | None:
        return self._pairs.get((intent_id, signature))

    def remember(self, intent: Intent) -> None:
        """Only a CONFIRMED intent, as the database has it, under its own signature."""
        if intent.status is not IntentStatus.CONFIRMED or intent.tx_signature is None:
            return
        self._pairs.put((intent.id, intent.tx_signature), _sharing_terms(intent))

    def crediting(self, intent_id: uuid.UUID, signature: str) -> asyncio.Event | None:
        """The credit of this pair in flight in this process, if any: set when it ends."""
        return self._crediting.get((intent_id, signature))

    @contextlib.contextmanager
    def credit_in_flight(self, intent_id: uuid.UUID, signature: str) -> Iterator[None]:
        """Marks the pair's credit in flight until the block ends, however it ends."""
        key = (intent_id, signature)
        ended = asyncio.Event()
        self._crediting[key] = ended
        try:
            yield
        finally:
            if self._crediting.get(key) is ended:
                del self._crediting[key]
            ended.set()

    def __len__(self) -> int:
        return len(self._pairs)


def _sharing_terms(intent: Intent) -> Intent:
    """`intent` with the terms every intent repeats as one string each, process-wide."""
    mint = sys.intern(intent.mint)
    program = sys.intern(intent.token_program)
    recipient = sys.intern(intent.recipient)
    account = sys.intern(intent.recipient_token_account)
    if (
        mint is intent.mint
        and program is intent.token_program
        and recipient is intent.recipient
        and account is intent.recipient_token_account
    ):
        return intent
    return replace(
        intent,
        mint=mint,
        token_program=program,
        recipient=recipient,
        recipient_token_account=account,
    )


class FreshIntents:
    """Intents this process created, as created (PENDING), until it sees them settle."""

    def __init__(self, capacity: int = FRESH_CAPACITY) -> None:
        self._intents: _Lru[uuid.UUID] = _Lru(capacity)

    def get(self, intent_id: uuid.UUID) -> Intent | None:
        return self._intents.get(intent_id)

    def remember(self, intent: Intent) -> None:
        """Only a PENDING intent with no payment yet: one just created and committed."""
        if intent.status is IntentStatus.PENDING and intent.tx_signature is None:
            self._intents.put(intent.id, intent)

    def forget(self, intent_id: uuid.UUID) -> None:
        self._intents.drop(intent_id)

    def __len__(self) -> int:
        return len(self._intents)
