"""Duplicates' attempt rows, written together.

A verify of an intent already credited by the same signature writes one thing: its attempt
row (DESIGN: every verify leaves one), and answers with the user's balance as it is now.
Such rows are written in batches: the first duplicate starts a write at once; duplicates
arriving while it is in flight wait for the next one, which takes all of them. Under load
one statement (one round trip, one commit) serves many duplicates; alone, a duplicate waits
for nothing but its own statement. The statement inserts the batch's rows and reads each
user's balance, committed with `synchronous_commit = off` for that transaction only (see
`store.record_duplicates`): a crash of the database could lose the last few hundred
milliseconds of duplicates' attempt rows, never a credit, a state change or an audit record.

A batch is one transaction: it is written whole or not at all, and a database error reaches
every duplicate of that batch (each answers 503 as it would have alone); the next batch
starts afresh. A duplicate whose client went away still has its row written (as before).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg

from core.purchases import store
from core.purchases.intents import Intent

MAX_BATCH = 500  # rows per statement


@dataclass(slots=True)
class _Waiting:
    intent: Intent
    attempt: store.Attempt
    answer: asyncio.Future[int]


class DuplicateAttempts:
    """The process's writer of duplicates' attempt rows (`Services.duplicates`)."""

    def __init__(self, max_batch: int = MAX_BATCH) -> None:
        self._max_batch = max_batch
        self._waiting: list[_Waiting] = []
        self._writer: asyncio.Task[None] | None = None
        self.batches = 0  # statements written (tests read these two)
        self.rows = 0

    async def record(self, pool: asyncpg.Pool, intent: Intent, attempt: store.Attempt) -> int:
        """Record `attempt` (a duplicate of `intent`'s credit); the user's balance now."""
        answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(intent, attempt, answer))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write(pool))
        return await answer

    async def _write(self, pool: asyncpg.Pool) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self._max_batch]
                del self._waiting[: self._max_batch]
                try:
                    balances = await store.record_duplicates(
                        pool, [(w.intent, w.attempt) for w in batch]
                    )
                except asyncio.CancelledError:
                    for w in [*batch, *self._waiting]:
                        w.answer.cancel()
                    raise
                except Exception as exc:  # handed to every duplicate of the batch
                    for w in batch:
                        if not w.answer.done():
                            w.answer.set_exception(exc)
                    continue
                self.batches += 1
                self.rows += len(batch)
                for w in batch:
                    if not w.answer.done():
                        w.answer.set_result(balances.get(w.intent.user_id, 0))
        finally:
            self._writer = None
