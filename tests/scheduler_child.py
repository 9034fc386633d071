"""A process that runs one scheduled job that never finishes, to be killed mid-run.

    python -m tests.scheduler_child <dsn> <job> <interval seconds>

Prints `started` once its scheduler runs, and `running` when the job has begun.
"""

from __future__ import annotations

import asyncio
import sys

from bot.scheduler import Job, Scheduler
from core import db
from core.jobs import RunResult
from tests.support import ScriptedVerifier, build_services


async def main(dsn: str, job: str, interval: float) -> None:
    pool = await db.create_pool(dsn, min_size=1, max_size=4)
    services = build_services(pool, ScriptedVerifier())

    async def hang() -> RunResult:
        print("running", flush=True)
        await asyncio.Event().wait()
        return RunResult("never")

    scheduler = Scheduler(services, [Job(job, interval, hang)])
    scheduler.start()
    print("started", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
