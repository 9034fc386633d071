"""Credits in flight together share one transaction and one commit (group commit).

A credit that finds no group being written goes on its own, at once, as before. Credits
that arrive while a group is being written wait for it, and the next group takes them
together: one call of `payops_credit_purchases` (migration 0015) between BEGIN and COMMIT,
so many credits share three round trips and one WAL flush. Under load that is most of
them (the verifies whose chain answers came in one batch reach their credit in the same
turn); alone, a credit waits for nothing.

Each credit is still exactly once, for the same reasons as alone: the same function locks
and re-checks the intent, and the same unique constraints hold. What a group adds:

- **One failing does not fail the others.** Each credit runs in a subtransaction of its
  own; one that raises in the database (a unique violation, a deadlock, a lock timeout) is
  rolled back alone and credited again on its own, where it fails or succeeds as it would
  have alone (`credit.py` handles what it raises). A group that fails as a whole on a live
  server (at COMMIT: the deferred zero-sum check) is credited again credit by credit.
- **A lost connection** (or a database going away) reaches every credit of the group as the
  error it would have met alone: the group committed entirely or not at all, and a retry of
  any of them finds its intent confirmed or open.
- **A process that dies mid-group leaves nothing**: the server rolls back the open
  transaction (as for one credit, which is why the call is sent between BEGIN and COMMIT).
- **No deadlock between groups**: a group holds at most one credit per user (another of the
  same user waits for the next group), in order of user, so every group takes its row locks
  (the intent, then the user's balance) in the same order. A credit alone holds one user's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import asyncpg

from core.purchases import store

log = logging.getLogger("payops.purchases")

MAX_GROUP = 32  # credits per group: below the 64 subtransactions a backend keeps in memory

# Errors that mean the connection or the server went away, or gave no answer in time: the
# group's outcome is the database's, not one credit's, and each credit hears it as it would
# alone (asking again, one by one, would wait as long again).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,  # an OSError too; named for the reader (asyncpg's command timeout)
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.CannotConnectNowError,
)


@dataclass(slots=True)
class _Waiting:
    call: store.CreditCall
    answer: asyncio.Future[store.CreditRow | None]


class CreditGroups:
    """The process's group commit of purchase credits (`Services.credits`)."""

    def __init__(self, max_group: int = MAX_GROUP) -> None:
        self._max_group = max_group
        self._waiting: list[_Waiting] = []
        self._writer: asyncio.Task[None] | None = None
        self.groups = 0  # groups committed, and the credits in them (tests and metrics)
        self.grouped = 0
        self.sent_alone = 0  # credits sent back to be credited on their own
        self._alone_in_flight = 0
        self._committing = 0  # credits in the group being written

    @property
    def in_flight(self) -> int:
        """Credits handed to the database and not answered yet: written on their own, in
        the group being written, or waiting for the next group."""
        return self._alone_in_flight + self._committing + len(self._waiting)

    async def credit(self, pool: asyncpg.Pool, call: store.CreditCall) -> store.CreditRow | None:
        """`call`'s credit, written with the others in flight and committed; or None: credit
        it on your own, inside `alone()` (nothing was in flight, grouping is off, no other
        credit came with it, or it failed in its group with nothing of it written). Raises
        the group's connection error."""
        if self._max_group < 2 or (
            self._writer is None and not self._waiting and not self._alone_in_flight
        ):
            return None
        answer: asyncio.Future[store.CreditRow | None] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(call, answer))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write(pool))
        return await answer

    @contextmanager
    def alone(self) -> Iterator[None]:
        """Around a credit written on its own: credits that arrive meanwhile are grouped."""
        self._alone_in_flight += 1
        try:
            yield
        finally:
            self._alone_in_flight -= 1

    def _next_group(self) -> list[_Waiting]:
        group: list[_Waiting] = []
        users: set[str] = set()
        rest: list[_Waiting] = []
        for w in self._waiting:
            if w.answer.done():  # its caller is gone before its credit began: nothing to write
                continue
            if w.call.intent.user_id in users or len(group) >= self._max_group:
                rest.append(w)  # the next group's
                continue
            users.add(w.call.intent.user_id)
            group.append(w)
        self._waiting = rest
        group.sort(key=lambda w: (w.call.intent.user_id, w.call.intent.id))
        return group

    async def _write(self, pool: asyncpg.Pool) -> None:
        try:
            while self._waiting:
                group = self._next_group()
                if len(group) == 1:
                    # One user's credits only (a group takes one per user): each goes on
                    # its own, as before, all at once rather than one scan of the queue each.
                    for w in [*group, *self._waiting]:
                        if not w.answer.done():
                            self.sent_alone += 1
                            w.answer.set_result(None)
                    self._waiting = []
                    continue
                if group:
                    try:
                        await self._commit(pool, group)
                    finally:
                        self._committing = 0
        finally:
            self._writer = None

    async def _commit(self, pool: asyncpg.Pool, group: list[_Waiting]) -> None:
        self._committing = len(group)
        try:
            async with pool.acquire() as conn, conn.transaction():
                done = await store.credit_group(conn, [w.call for w in group])
        except asyncio.CancelledError:
            for w in [*group, *self._waiting]:
                w.answer.cancel()
            raise
        except CONNECTION_ERRORS as exc:
            for w in group:
                if not w.answer.done():
                    w.answer.set_exception(exc)
            return
        except Exception as exc:  # the group failed as a whole on a live server: each alone
            log.warning(
                "a group of %d credits failed (%s: %s); crediting each on its own",
                len(group),
                type(exc).__name__,
                exc,
            )
            self.sent_alone += len(group)
            for w in group:
                if not w.answer.done():
                    w.answer.set_result(None)
            return
        self.groups += 1
        for w, row in zip(group, done, strict=True):
            written = row if isinstance(row, store.CreditRow) else None
            if isinstance(row, store.CreditError):
                log.info(
                    "credit rolled back in its group (%s %s); crediting it on its own",
                    row.state,
                    row.constraint or row.message,
                    extra={"intent_id": str(w.call.intent.id)},
                )
                self.sent_alone += 1
            else:
                self.grouped += 1
            if not w.answer.done():
                w.answer.set_result(written)
