"""The full run's scan of everything: one pass per table, exact where it decides.

A join of a million intents with a million ledger transactions costs far more than reading
each once, so the full run reads each table once and compares the tables with checksums:

1. Entries, in transaction order (how they are stored), aggregated per ledger transaction
   by a streaming aggregate merged with the transactions' primary key: the exact list of
   unbalanced transactions (sum not zero, or fewer than two entries), the ledger flows, and
   the checksum of every purchase credit (intent, signature, user account, credits, number
   of user entries).
2. Intents, once: the flows, the overpaid ones and those with a failed verification
   (exact), and the checksum of what every CONFIRMED intent expects as its purchase credit.
3. Entries per user account against the cached balances (exact): mismatched and negative.
4. Confirmed attempts, through their partial index in signature order: the signatures
   confirmed for more than one intent (exact).

Only the link between intents and their purchase credits rests on a checksum: a sum of
64-bit hashes of tuples (order-independent), equal on both sides when the multisets are
equal; when they differ, the sums differ too unless the difference is itself a 64-bit hash
collision (odds about 2^-64). When the sums or counts disagree, the exact anti-join runs and
lists the anomalies, so no finding rests on a checksum. Everything else above is exact. The
candidates go into the run's scope (`core.recon_sql`), where the per-key checks decide.

Passes 2 and 3 run on a second connection of the pool, in the same snapshot, while pass 1
runs on the run's own: on two cores the scan takes about as long as its longest half.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

import asyncpg

from core.recon.totals import Flows

# A purchase credit's hash (seeds 11-15): intent, signature, user account, credits and how
# many user entries it has, as the ledger holds it and as its intent expects it. No part is
# ever NULL (a NULL would drop the whole tuple from the sum).
_LEDGER = """
SELECT count(*) AS txs, coalesce(sum(x.total), 0) AS total,
       count(*) FILTER (WHERE t.kind = 'purchase') AS purchases,
       coalesce(sum(x.user_amount) FILTER (WHERE t.kind = 'purchase'), 0) AS credits,
       coalesce(array_agg(t.id) FILTER (WHERE coalesce(x.total, 0) <> 0
                                        OR coalesce(x.n, 0) < 2), '{}') AS unbalanced,
       coalesce(sum(uuid_hash_extended(t.intent_id, 11)
                    # hashtextextended(t.purchase_signature, 12)
                    # hashint8extended(coalesce(x.user_account, -1), 13)
                    # hashint8extended(coalesce(x.user_amount, 0)::bigint, 14)
                    # hashint8extended(coalesce(x.user_entries, 0), 15))
                FILTER (WHERE t.kind = 'purchase'), 0) AS purchase_hash
FROM ledger_transactions t LEFT JOIN (
    SELECT transaction_id, sum(amount) AS total, count(*) AS n,
           sum(amount) FILTER (WHERE NOT sys) AS user_amount,
           min(account_id) FILTER (WHERE NOT sys) AS user_account,
           count(*) FILTER (WHERE NOT sys) AS user_entries
    FROM (SELECT transaction_id, account_id, amount, account_id = ANY ($1::bigint[]) AS sys
          FROM ledger_entries) e
    GROUP BY transaction_id
) x ON x.transaction_id = t.id
"""

_INTENTS = """
SELECT count(*) FILTER (WHERE i.status = 'CONFIRMED') AS n,
       coalesce(sum(i.credits) FILTER (WHERE i.status = 'CONFIRMED'), 0) AS credits,
       coalesce(sum(i.amount) FILTER (WHERE i.status = 'CONFIRMED'), 0) AS amount,
       coalesce(sum(i.received_amount) FILTER (WHERE i.status = 'CONFIRMED'), 0) AS received,
       coalesce(sum(uuid_hash_extended(i.id, 11)
                    # hashtextextended(i.tx_signature, 12)
                    # hashint8extended(coalesce(a.id, -1), 13)
                    # hashint8extended(i.credits, 14)
                    # hashint8extended(1, 15))
                FILTER (WHERE i.status = 'CONFIRMED'), 0) AS purchase_hash,
       coalesce(array_agg(i.id) FILTER (WHERE i.status = 'CONFIRMED'
                                        AND (i.received_amount > i.amount
                                             OR NOT r.signatures <@ ARRAY[i.tx_signature])),
                '{}') AS suspects
FROM purchase_intents i
LEFT JOIN accounts a ON a.user_id = i.user_id AND a.kind = 'user'
LEFT JOIN (  -- failed verifications (few, through their partial index)
    SELECT intent_id, array_agg(signature) AS signatures FROM verification_attempts
    WHERE outcome = 'rejected' GROUP BY intent_id
) r ON r.intent_id = i.id
"""

# Cached balances that are not the sum of their entries, or below zero: exact, one
# aggregate pass over the entries (a hash table of one row per user account).
_BALANCES = """
SELECT coalesce(array_agg(a.user_id), '{}') FROM accounts a
LEFT JOIN user_balances b ON b.account_id = a.id
LEFT JOIN (SELECT account_id, sum(amount) AS total FROM ledger_entries
           GROUP BY account_id) e ON e.account_id = a.id
WHERE a.kind = 'user' AND (coalesce(b.balance, 0) <> coalesce(e.total, 0) OR b.balance < 0)
"""

# Exact, when the purchase checksums disagree: every intent whose credit is not as expected.
_INTENTS_EXACT = """
WITH tx AS (
    SELECT e.transaction_id, sum(e.amount) AS user_amount, min(e.account_id) AS user_account,
           count(*) AS user_entries
    FROM ledger_entries e WHERE e.account_id <> ALL ($1::bigint[])
    GROUP BY e.transaction_id
)
SELECT coalesce(i.id, t.intent_id) AS id
FROM (SELECT * FROM ledger_transactions WHERE kind = 'purchase') t
LEFT JOIN tx ON tx.transaction_id = t.id
FULL JOIN (SELECT * FROM purchase_intents WHERE status = 'CONFIRMED') i ON i.id = t.intent_id
LEFT JOIN accounts a ON a.user_id = i.user_id AND a.kind = 'user'
WHERE t.id IS NULL OR i.id IS NULL
   OR tx.user_amount IS DISTINCT FROM i.credits OR tx.user_account IS DISTINCT FROM a.id
   OR tx.user_entries IS DISTINCT FROM 1 OR t.purchase_signature IS DISTINCT FROM i.tx_signature
"""

# Signatures confirmed for more than one intent: those confirmed more than once (a streaming
# aggregate over the partial index in signature order, or a hash aggregate), then the few
# of them with distinct intents.
_CONFIRMED_TWICE = """
SELECT coalesce(array_agg(signature), '{}') FROM (
    SELECT signature FROM verification_attempts
    WHERE outcome = 'confirmed' AND signature IN (
        SELECT signature FROM verification_attempts WHERE outcome = 'confirmed'
        GROUP BY signature HAVING count(*) > 1)
    GROUP BY signature HAVING count(DISTINCT intent_id) > 1) d
"""

# Payments after expiry and late credits (rejected attempts on confirmed intents are found
# by the intents pass).
_ATTEMPTS = """
SELECT coalesce(array_agg(DISTINCT intent_id), '{}') FROM verification_attempts
WHERE (outcome = 'rejected' OR (outcome = 'confirmed' AND code IS NOT NULL))
  AND (code = 'paid_after_expiry' OR code LIKE '%late%')
"""

# Signatures and intents applied adjustments name: a second credit for one payment.
_ADJUSTED = """
SELECT coalesce(array_agg(DISTINCT s), '{}') FROM (
    SELECT unnest(tx_signatures) AS s FROM adjustments WHERE status = 'APPLIED'
    UNION ALL
    SELECT i.tx_signature FROM adjustments a
    JOIN purchase_intents i ON i.id = ANY (payops_recon_uuids(a.intent_ids))
    WHERE a.status = 'APPLIED' AND i.tx_signature IS NOT NULL) x
"""


@dataclass(frozen=True, slots=True)
class Candidates:
    """What the full scan found worth checking key by key."""

    intents: list[Any]  # uuids
    users: list[str]
    signatures: list[str]
    txs: list[int]
    exact_intents: bool  # the purchase checksums disagreed: the exact join ran


async def scan(
    conn: asyncpg.Connection, pool: asyncpg.Pool | None = None
) -> tuple[Flows, Candidates]:
    """Read everything once; the flows, and the candidates for the per-key checks.

    `conn` is in the run's REPEATABLE READ transaction. With a `pool` that has a connection
    to spare, the intents and balances passes run on it at the same time as the ledger pass,
    in the same snapshot (`pg_export_snapshot`, as `pg_dump --jobs` does).
    """
    system = await conn.fetchval(
        "SELECT coalesce(array_agg(id), '{}') FROM accounts WHERE kind = 'system'"
    )
    helper = await _spare(pool)
    if helper is None:
        ledger, twice = await _ledger_pass(conn, system)
        intents, users, late, adjusted = await _other_passes(conn)
    else:
        snapshot = str(await conn.fetchval("SELECT pg_export_snapshot()"))
        try:
            async with asyncio.TaskGroup() as group:  # a failure on one side cancels the other
                main = group.create_task(_ledger_pass(conn, system))
                side = group.create_task(_in_snapshot(helper, snapshot))
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        finally:
            await pool.release(helper)  # type: ignore[union-attr]
        ledger, twice = main.result()
        intents, users, late, adjusted = side.result()
    flows = Flows(
        confirmed_intents=int(intents["n"]),
        expected_credits=int(intents["credits"]),
        expected_tokens=int(intents["amount"]),
        received_tokens=int(intents["received"]),
        purchase_transactions=int(ledger["purchases"]),
        purchase_credits=int(ledger["credits"]),
        ledger_transactions=int(ledger["txs"]),
        ledger_total=int(ledger["total"]),
    )
    candidate_intents = [*intents["suspects"], *late]
    exact_intents = (ledger["purchases"], ledger["purchase_hash"]) != (
        intents["n"],
        intents["purchase_hash"],
    )
    if exact_intents:
        candidate_intents += [r["id"] for r in await conn.fetch(_INTENTS_EXACT, system)]
    return flows, Candidates(
        intents=candidate_intents,
        users=users,
        signatures=[*twice, *adjusted],
        txs=[int(t) for t in ledger["unbalanced"]],
        exact_intents=exact_intents,
    )


async def _ledger_pass(conn: asyncpg.Connection, system: Any) -> tuple[Any, list[str]]:
    # The entries are stored in transaction order: a streaming aggregate merged with the
    # transactions' primary key reads them once, with no hash table of a million groups.
    # (SET LOCAL: a failure aborts the transaction, which ends the settings with it.)
    await conn.execute("SET LOCAL enable_hashagg = off")
    await conn.execute("SET LOCAL enable_hashjoin = off")
    ledger = await conn.fetchrow(_LEDGER, system)
    await conn.execute("SET LOCAL enable_hashagg = on")
    await conn.execute("SET LOCAL enable_hashjoin = on")
    twice = list(await conn.fetchval(_CONFIRMED_TWICE))
    assert ledger is not None
    return ledger, twice


async def _other_passes(conn: asyncpg.Connection) -> tuple[Any, list[str], list[Any], list[str]]:
    intents = await conn.fetchrow(_INTENTS)
    assert intents is not None
    users = list(await conn.fetchval(_BALANCES))
    late = list(await conn.fetchval(_ATTEMPTS))
    adjusted = list(await conn.fetchval(_ADJUSTED))
    return intents, users, late, adjusted


_SNAPSHOT_ID = re.compile(r"^[0-9A-F]+-[0-9A-F]+-[0-9]+$")


async def _in_snapshot(
    conn: asyncpg.Connection, snapshot: str
) -> tuple[Any, list[str], list[Any], list[str]]:
    if not _SNAPSHOT_ID.match(snapshot):  # it is formatted into the statement below
        raise ValueError(f"unexpected snapshot id {snapshot!r}")
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
        await conn.execute("SET LOCAL work_mem = '256MB'")
        return await _other_passes(conn)


async def _spare(pool: asyncpg.Pool | None) -> asyncpg.Connection | None:
    """A second connection if the pool has one to spare soon; else the scan runs on one."""
    if pool is None:
        return None
    try:
        return await pool.acquire(timeout=1.0)
    except TimeoutError:
        return None
