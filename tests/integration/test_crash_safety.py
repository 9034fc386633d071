"""A connection killed in the middle of a credit leaves nothing half-written."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg

from core import ledger
from core.triage import DiagnosisKind, triage
from tests.support import ScriptedVerifier, api_client, bearer, build_services, signature

SLOW_ENTRIES = """
CREATE FUNCTION test_slow_entry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(2); RETURN NEW; END $$;
CREATE TRIGGER test_slow_entry BEFORE INSERT ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION test_slow_entry();
"""


async def _kill_backend_inside_credit(pool: asyncpg.Pool) -> int:
    """Wait until a backend is inside the ledger insert (asleep in the slow trigger), then
    terminate it."""
    for _ in range(200):
        pid = await pool.fetchval(
            """SELECT pid FROM pg_stat_activity
               WHERE datname = current_database() AND pid <> pg_backend_pid()
                 AND state = 'active' AND wait_event = 'PgSleep'"""
        )
        if pid is not None:
            assert await pool.fetchval("SELECT pg_terminate_backend($1)", pid)
            return int(pid)
        await asyncio.sleep(0.02)
    raise AssertionError("the credit never reached the ledger insert")


async def test_terminated_backend_during_credit_writes_nothing_and_retry_credits_once(
    pool: asyncpg.Pool,
) -> None:
    await pool.execute(SLOW_ENTRIES)
    verifier = ScriptedVerifier()
    svc = build_services(pool, verifier)
    async with api_client(svc) as client:
        created = await client.post(
            "/v1/purchase-intents", json={"credits": 9}, headers=bearer("dave")
        )
        intent = await created.json()
        url = f"/v1/purchase-intents/{intent['id']}/verify"
        sig = signature()

        verify = asyncio.ensure_future(
            client.post(url, json={"signature": sig}, headers=bearer("dave"))
        )
        await _kill_backend_inside_credit(pool)
        resp = await verify
        assert resp.status == 503
        assert (await resp.json())["error"]["code"] == "database_unavailable"
        assert resp.headers["Retry-After"]

        # Nothing half-written: no ledger rows, no balance, the intent still pending.
        assert await pool.fetchval("SELECT count(*) FROM ledger_transactions") == 0
        assert await pool.fetchval("SELECT count(*) FROM ledger_entries") == 0
        assert await ledger.balance(pool, "dave") == 0
        assert await pool.fetchval("SELECT status FROM purchase_intents") == "PENDING"
        assert (
            await pool.fetchval("SELECT count(*) FROM audit_log WHERE action='intent.confirm'") == 0
        )

        # ...but the failure is on record, with the error, for triage to name.
        failed = await pool.fetch(
            "SELECT outcome, code, detail, request_id FROM verification_attempts"
        )
        assert [(r["outcome"], r["code"]) for r in failed] == [
            ("credit_failed", "ledger_write_failed")
        ]
        assert "received" in failed[0]["detail"]
        assert "Error" in failed[0]["detail"]  # the exception's class, e.g. ConnectionDoesNotExist
        assert failed[0]["request_id"]
        report = await triage(pool, None, "dave", datetime.now(UTC), timedelta(minutes=30))
        [diagnosis] = report.diagnoses
        assert diagnosis.kind is DiagnosisKind.LEDGER_WRITE_FAILED
        assert diagnosis.request_ids == [failed[0]["request_id"]]

        await pool.execute("DROP TRIGGER test_slow_entry ON ledger_entries")
        retries = [
            await client.post(url, json={"signature": sig}, headers=bearer("dave"))
            for _ in range(3)
        ]
        assert [r.status for r in retries] == [200, 200, 200]
        assert [(await r.json())["already_credited"] for r in retries] == [False, True, True]

    assert await ledger.balance(pool, "dave") == 9
    assert await pool.fetchval("SELECT count(*) FROM ledger_transactions") == 1
    assert (await ledger.health(pool)).ok
