"""The ledger's invariants hold in the database itself, whatever SQL is sent."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from core import audit, ledger
from core.audit import Actor
from core.ledger import LedgerKind, Posting, adjustment_postings, purchase_postings

SYSTEM = Actor("ops", "cli")


async def _purchase(pool: asyncpg.Pool, user: str = "alice", credits: int = 5) -> int:
    async with pool.acquire() as conn, conn.transaction():
        return await ledger.post(
            conn,
            kind=LedgerKind.ADJUSTMENT,
            postings=adjustment_postings(user, credits),
            created_by="t",
        )


async def test_updating_a_ledger_entry_fails(pool: asyncpg.Pool) -> None:
    await _purchase(pool)
    with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
        await pool.execute("UPDATE ledger_entries SET amount = amount + 1")


async def test_deleting_a_ledger_entry_fails(pool: asyncpg.Pool) -> None:
    await _purchase(pool)
    with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
        await pool.execute("DELETE FROM ledger_entries")
    with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
        await pool.execute("TRUNCATE ledger_entries CASCADE")


async def test_updating_or_deleting_a_ledger_transaction_fails(pool: asyncpg.Pool) -> None:
    tx = await _purchase(pool)
    with pytest.raises(asyncpg.RestrictViolationError):
        await pool.execute("UPDATE ledger_transactions SET description = 'x' WHERE id = $1", tx)
    with pytest.raises(asyncpg.RestrictViolationError):
        await pool.execute("DELETE FROM ledger_transactions WHERE id = $1", tx)


async def test_unbalanced_ledger_transaction_fails_at_commit(pool: asyncpg.Pool) -> None:
    with pytest.raises(asyncpg.CheckViolationError, match="unbalanced"):
        async with pool.acquire() as conn, conn.transaction():
            await ledger.post(
                conn,
                kind=LedgerKind.ADJUSTMENT,
                postings=[Posting("user:alice", 5), Posting("system:adjustments", -4)],
                created_by="t",
            )
    assert await pool.fetchval("SELECT count(*) FROM ledger_entries") == 0
    assert await ledger.balance(pool, "alice") == 0


async def test_single_entry_transaction_fails(pool: asyncpg.Pool) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        async with pool.acquire() as conn, conn.transaction():
            await ledger.post(
                conn,
                kind=LedgerKind.ADJUSTMENT,
                postings=[Posting("user:a", 0 + 1)],
                created_by="t",
            )


async def test_transaction_without_entries_fails(pool: asyncpg.Pool) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            "INSERT INTO ledger_transactions (kind, created_by) VALUES ('adjustment', 't')"
        )


async def test_entries_cannot_be_added_to_a_committed_transaction(pool: asyncpg.Pool) -> None:
    tx = await _purchase(pool)
    acct = await pool.fetchval("SELECT id FROM accounts WHERE name = 'user:alice'")
    system = await pool.fetchval("SELECT id FROM accounts WHERE name = 'system:adjustments'")
    with pytest.raises(asyncpg.RestrictViolationError, match="closed"):
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO ledger_entries (transaction_id, account_id, amount) VALUES ($1,$2,10),($1,$3,-10)",
                tx,
                acct,
                system,
            )
    assert await ledger.balance(pool, "alice") == 5


async def test_zero_amount_entry_fails(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        tx = await conn.fetchval(
            "INSERT INTO ledger_transactions (kind, created_by) VALUES ('adjustment','t') RETURNING id"
        )
        acct = await conn.fetchval(
            "INSERT INTO accounts (kind, name, user_id) VALUES ('user', 'user:z', 'z') RETURNING id"
        )
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO ledger_entries (transaction_id, account_id, amount) VALUES ($1,$2,0)",
                tx,
                acct,
            )


async def _intent(conn: asyncpg.Connection, user: str = "alice") -> uuid.UUID:
    intent_id = uuid.uuid4()
    await conn.execute(
        """INSERT INTO purchase_intents (id, user_id, credits, amount, mint, token_program, recipient,
               recipient_token_account, reference, memo, created_at, expires_at)
           VALUES ($1, $2, 5, 50000, 'm', 'p', 'r', 'ta', $3, $4, now(), now() + interval '15 min')""",
        intent_id,
        user,
        str(uuid.uuid4()),
        str(intent_id),
    )
    return intent_id


async def test_purchase_credit_is_unique_per_signature(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        first, second = await _intent(conn), await _intent(conn)
        async with conn.transaction():
            await ledger.post(
                conn,
                kind=LedgerKind.PURCHASE,
                postings=purchase_postings("alice", 5),
                created_by="t",
                intent_id=first,
                purchase_signature="sig-1",
            )
        with pytest.raises(asyncpg.UniqueViolationError):
            async with conn.transaction():
                await ledger.post(
                    conn,
                    kind=LedgerKind.PURCHASE,
                    postings=purchase_postings("alice", 5),
                    created_by="t",
                    intent_id=second,
                    purchase_signature="sig-1",
                )
    assert await ledger.balance(pool, "alice") == 5


async def test_purchase_credit_is_unique_per_intent(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        intent = await _intent(conn)
        async with conn.transaction():
            await ledger.post(
                conn,
                kind=LedgerKind.PURCHASE,
                postings=purchase_postings("alice", 5),
                created_by="t",
                intent_id=intent,
                purchase_signature="sig-1",
            )
        with pytest.raises(asyncpg.UniqueViolationError):
            async with conn.transaction():
                await ledger.post(
                    conn,
                    kind=LedgerKind.PURCHASE,
                    postings=purchase_postings("alice", 5),
                    created_by="t",
                    intent_id=intent,
                    purchase_signature="sig-2",
                )


async def test_purchase_without_intent_or_signature_fails(pool: asyncpg.Pool) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        async with pool.acquire() as conn, conn.transaction():
            await ledger.post(
                conn,
                kind=LedgerKind.PURCHASE,
                postings=purchase_postings("alice", 5),
                created_by="t",
            )


async def test_reversal_is_unique_per_reversed_transaction(pool: asyncpg.Pool) -> None:
    original = await _purchase(pool, credits=5)
    async with pool.acquire() as conn:
        async with conn.transaction():
            await ledger.post(
                conn,
                kind=LedgerKind.REVERSAL,
                postings=adjustment_postings("alice", -5),
                created_by="t",
                reverses_id=original,
            )
        with pytest.raises(asyncpg.UniqueViolationError):
            async with conn.transaction():
                await ledger.post(
                    conn,
                    kind=LedgerKind.REVERSAL,
                    postings=adjustment_postings("alice", -5),
                    created_by="t",
                    reverses_id=original,
                )
    assert await ledger.balance(pool, "alice") == 0


async def test_debit_below_zero_is_refused_by_the_database(pool: asyncpg.Pool) -> None:
    await _purchase(pool, credits=3)
    with pytest.raises(asyncpg.CheckViolationError, match="below zero"):
        async with pool.acquire() as conn, conn.transaction():
            await ledger.post(
                conn,
                kind=LedgerKind.DEBIT,
                postings=[Posting("user:alice", -4), Posting("system:spend", 4)],
                created_by="t",
            )
    assert await ledger.balance(pool, "alice") == 3


async def test_cached_balances_equal_entries_after_mixed_postings(pool: asyncpg.Pool) -> None:
    for user, amount in [("a", 5), ("b", 7), ("a", -2), ("c", 1), ("b", -7)]:
        await _purchase(pool, user, amount)
    health = await ledger.health(pool)
    assert health.ok
    assert [await ledger.balance(pool, u) for u in "abc"] == [3, 0, 1]


async def test_audit_log_is_append_only_and_chain_verifies(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        for i in range(5):
            async with conn.transaction():
                await audit.record(conn, SYSTEM, action="test", subject=f"s{i}", after={"i": i})
        assert await audit.seal(conn) == 5
        report = await audit.verify_chain(conn)
        assert report.ok
        assert (report.rows, report.sealed, report.unsealed) == (5, 5, 0)
        with pytest.raises(asyncpg.RestrictViolationError):
            await conn.execute("UPDATE audit_log SET actor = 'mallory' WHERE subject = 's2'")
        with pytest.raises(asyncpg.RestrictViolationError):
            await conn.execute("DELETE FROM audit_log WHERE subject = 's2'")


async def test_a_record_written_after_the_seal_is_unsealed_not_a_problem(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        for i in range(3):
            async with conn.transaction():
                await audit.record(conn, SYSTEM, action="test", subject=f"s{i}", after={"i": i})
        assert await audit.seal(conn) == 3
        async with conn.transaction():
            await audit.record(conn, SYSTEM, action="test", subject="late", after={})
        report = await audit.verify_chain(conn)
        assert report.ok, report.problems
        assert (report.rows, report.sealed, report.unsealed) == (4, 3, 1)
        assert await audit.seal(conn) == 1
        report = await audit.verify_chain(conn)
        assert (report.rows, report.sealed, report.unsealed) == (4, 4, 0)


async def test_the_chain_is_verified_in_one_snapshot(pool: asyncpg.Pool) -> None:
    """Rows committed by others while the chain is walked do not count: the counts and the
    walk read the same snapshot (`rows` = `sealed` + `unsealed` whatever others write)."""
    async with pool.acquire() as conn:
        for i in range(3):
            async with conn.transaction():
                await audit.record(conn, SYSTEM, action="test", subject=f"s{i}", after={"i": i})
        await audit.seal(conn)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await conn.fetchval("SELECT count(*) FROM audit_log")  # the snapshot starts here
            async with pool.acquire() as other, other.transaction():
                await audit.record(other, SYSTEM, action="test", subject="meanwhile", after={})
            async with pool.acquire() as other:
                assert await audit.seal(other) == 1
            report = await audit.verify_chain(conn)
    assert (report.rows, report.sealed, report.unsealed) == (3, 3, 0)
    async with pool.acquire() as conn:
        report = await audit.verify_chain(conn)
    assert (report.rows, report.sealed, report.unsealed) == (4, 4, 0)


async def test_sealing_may_change_nothing_but_the_seal_whatever_the_column(
    pool: asyncpg.Pool,
) -> None:
    """The guard lists audit_log's columns by name: every column of the table (as the
    database describes it, so one added later is included) is refused a change while a row
    is being sealed."""
    first, second = Actor("ops", "cli", "req-1"), Actor("bot", "api", "req-2")
    async with pool.acquire() as conn:
        async with conn.transaction():
            await audit.record(conn, first, action="a1", subject="s1", before={"x": 1}, after={})
        async with conn.transaction():
            await audit.record(
                conn, second, action="a2", subject="s2", before={"y": 2}, after={"z": 3}
            )
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM audit_log ORDER BY id")]
        columns = [
            r["column_name"]
            for r in await conn.fetch(
                """SELECT column_name FROM information_schema.columns
                   WHERE table_name = 'audit_log' AND table_schema = current_schema()"""
            )
        ]
        assert {"id", "actor", "row_hash", "seq", "chain_hash"} <= set(columns)
        for column in set(columns) - {"seq", "chain_hash"}:
            differs = await conn.fetchval(
                f"SELECT (SELECT {column} FROM audit_log WHERE id = $1)"
                f" IS DISTINCT FROM (SELECT {column} FROM audit_log WHERE id = $2)",
                ids[0],
                ids[1],
            )
            assert differs, f"the two rows must differ in {column} for the check to mean much"
            with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
                await conn.execute(
                    f"""UPDATE audit_log SET seq = 1, chain_hash = '\\x00',
                            {column} = (SELECT {column} FROM audit_log WHERE id = $2)
                        WHERE id = $1""",
                    ids[0],
                    ids[1],
                )
        assert await audit.seal(conn) == 2
        assert (await audit.verify_chain(conn)).ok


async def test_tampering_with_the_audit_log_is_evident(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        for i in range(4):
            async with conn.transaction():
                await audit.record(conn, SYSTEM, action="test", subject=f"s{i}", after={"i": i})
        await audit.seal(conn)
        # A superuser can switch the triggers off; the hashes still give it away.
        await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
        await conn.execute("""UPDATE audit_log SET after = '{"i": 99}' WHERE subject = 's1'""")
        await conn.execute("DELETE FROM audit_log WHERE subject = 's2'")
        await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER USER")
        report = await audit.verify_chain(conn)
    assert not report.ok
    assert any("modified" in p for p in report.problems)
    assert any("gap" in p for p in report.problems)
