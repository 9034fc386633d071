"""Intent notifications: one LISTEN connection per process, fanned out to the waiting streams.

The database notifies `payops_intents` (payload: the intent id) in the transaction that
moves an intent out of PENDING, whichever replica wrote it (migration 0009). A process holds
one pool connection LISTENing on that channel, opened at the first subscription, and wakes
the subscribers of the notified intent. Waking is all a notification does: a subscriber
re-reads the intent from the database, so a notification is never the only copy of anything.

Notifications sent while the listening connection is down (a database restart) are lost, so
each time it (re)connects every subscriber is woken to re-read: a change is never missed,
only sometimes reported a little later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import asyncpg

from core import db

log = logging.getLogger("payops.notify")

INTENTS_CHANNEL = "payops_intents"


class Subscription:
    """One waiter's wake-up call for one key (an intent id)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._woken = asyncio.Event()

    def wake(self) -> None:
        self._woken.set()

    async def wait(self, seconds: float) -> bool:
        """True if woken within `seconds` (the wake-up is then used up)."""
        try:
            async with asyncio.timeout(seconds):
                await self._woken.wait()
        except TimeoutError:
            return False
        self._woken.clear()
        return True


class Notifications:
    """LISTEN on `channel` on one connection of `pool`; wake the subscribers of each payload."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        channel: str = INTENTS_CHANNEL,
        *,
        ping_seconds: float = 30.0,
        retry_seconds: float = 0.5,
        max_retry_seconds: float = 5.0,
    ) -> None:
        self._pool = pool
        self._channel = channel
        self._ping = ping_seconds
        self._retry = (retry_seconds, max_retry_seconds)
        self._subscribers: dict[str, set[Subscription]] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.listening = asyncio.Event()  # set while the LISTEN connection is up

    @property
    def closed(self) -> bool:
        return self._closed

    def subscribers(self) -> int:
        return sum(len(subs) for subs in self._subscribers.values())

    @contextlib.contextmanager
    def subscribe(self, key: str) -> Iterator[Subscription]:
        """Wake-ups for `key` while inside. Subscribe *before* reading what you wait on: a
        change after the read then wakes you. Once closed, a subscription is woken at once."""
        sub = Subscription(key)
        self._subscribers.setdefault(key, set()).add(sub)
        if self._closed:
            sub.wake()
        elif self._task is None:
            self._task = asyncio.create_task(self._listen(), name=f"listen {self._channel}")
        try:
            yield sub
        finally:
            subs = self._subscribers.get(key)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subscribers[key]

    def dispatch(self, payload: str) -> None:
        """Wake the subscribers of `payload` (the intent id a notification carried)."""
        for sub in self._subscribers.get(payload, ()):
            sub.wake()

    def wake_all(self) -> None:
        for subs in self._subscribers.values():
            for sub in subs:
                sub.wake()

    async def close(self) -> None:
        """Stop listening and wake every subscriber (they see `closed` and finish)."""
        self._closed = True
        self.wake_all()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: object) -> None:
        self.dispatch(str(payload))

    async def _listen(self) -> None:
        """Hold the LISTEN connection; reconnect with a growing pause when it is lost."""
        pause, longest = self._retry
        while not self._closed:
            try:
                await self._listen_once()
                pause = self._retry[0]
            except Exception as exc:  # whatever broke it, listen again: streams depend on it
                log.warning(
                    "listening on %s failed, retrying in %.1f s: %s: %s",
                    self._channel,
                    pause,
                    type(exc).__name__,
                    exc,
                )
            self.listening.clear()
            await asyncio.sleep(pause)
            pause = min(pause * 2, longest)

    async def _listen_once(self) -> None:
        async with db.session(self._pool) as conn:
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(self._channel, self._on_notify)
            try:
                self.listening.set()
                # Notifications sent while not listening are gone: everyone reads again.
                self.wake_all()
                await self._hold(conn, lost)
            finally:
                # Before the connection goes back to the pool, which refuses one that
                # still has a listener (the UNLISTEN may fail on a broken connection).
                with contextlib.suppress(Exception):
                    await conn.remove_listener(self._channel, self._on_notify)
            log.warning("the %s listening connection was closed; reconnecting", self._channel)

    async def _hold(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._ping):
                    await lost.wait()
            if not lost.is_set():
                # A connection cut without a word (a dead peer) shows here.
                await conn.execute("SELECT 1", timeout=self._ping)
