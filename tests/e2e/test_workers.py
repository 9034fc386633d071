"""`payops serve --workers 2`: two processes on one port, one leader per job and stream."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from core.jobs import JOB_LOCK_CLASS
from tests.e2e.harness import Chain, running_service
from tests.e2e.procs import wait_until

LEADER_LOCKS = """SELECT objid, count(*) AS holders, array_agg(pid) AS pids FROM pg_locks
    WHERE locktype = 'advisory' AND classid = $1 AND granted GROUP BY objid"""


async def test_two_workers_share_the_port_and_each_job_has_one_leader(
    chain: Chain, http: aiohttp.ClientSession, database_url: str, tmp_path: Path
) -> None:
    async with running_service(
        chain,
        database_url,
        tmp_path / "service",
        http,
        serve_args=("--workers", "2"),
        PAYOPS_SCHEDULER_ENABLED="true",
    ) as service:

        def listening() -> list[dict[str, object]]:
            text = service.proc.stdout.read_text(errors="replace")
            return [json.loads(line) for line in text.splitlines() if '"listening"' in line]

        async def both_listening() -> bool:
            return len(listening()) == 2

        await wait_until(both_listening, "both workers listening", within=30)
        assert sorted(int(str(line["worker"])) for line in listening()) == [0, 1]
        assert len({json.dumps(line["addresses"]) for line in listening()}) == 1

        async def leading() -> bool:
            return bool(await service.pool.fetch(LEADER_LOCKS, JOB_LOCK_CLASS))

        await wait_until(leading, "a leader's advisory lock", within=30)
        for row in await service.pool.fetch(LEADER_LOCKS, JOB_LOCK_CLASS):
            assert row["holders"] == 1, dict(row)
        for _ in range(4):
            async with http.get(service.url + "/readyz") as resp:
                assert resp.status == 200
