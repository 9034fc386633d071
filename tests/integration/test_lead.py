"""`jobs.lead`: streamed work (the treasury watcher, webhook delivery) runs on one replica at a
time, and another replica takes over when the leader dies."""

from __future__ import annotations

import asyncio
import time

import pytest

from core import db, jobs

pytestmark = pytest.mark.timeout(30)


async def test_one_leader_at_a_time_and_a_successor_when_it_dies(database_url: str) -> None:
    replicas = {name: await db.create_pool(database_url, min_size=1, max_size=3) for name in "ab"}
    rounds: list[str] = []
    running = 0
    overlap = 0
    stops = {name: asyncio.Event() for name in replicas}

    def work_of(name: str):  # type: ignore[no-untyped-def]
        async def work() -> None:
            nonlocal running, overlap
            running += 1
            try:
                overlap = max(overlap, running)
                rounds.append(name)
                await asyncio.sleep(0.01)
            finally:
                running -= 1

        return work

    tasks = {
        name: asyncio.create_task(jobs.lead(pool, "test-lead", 0.05, work_of(name), stops[name]))
        for name, pool in replicas.items()
    }
    try:
        await asyncio.sleep(0.6)
        assert overlap == 1
        assert len(set(rounds)) == 1, "only the leader ran"
        leader = rounds[0]
        follower = "b" if leader == "a" else "a"
        # The leader's process dies: its connections go, and the lock with them.
        tasks[leader].cancel()
        replicas[leader].terminate()
        died = len(rounds)
        deadline = time.monotonic() + 5
        while follower not in rounds[died:] and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        assert follower in rounds[died:], "the other replica took over"
        assert overlap == 1
    finally:
        for name in replicas:
            stops[name].set()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        for pool in replicas.values():
            pool.terminate()
