"""Reconciliation SQL, part one: the run's snapshot, its scope, and the flows (totals).

A run reads everything in one REPEATABLE READ transaction, so totals and checks see one
consistent state. What the checks look at is its *scope*, four temporary tables of keys
(intents, users, signatures, ledger transactions), filled

- by a full run with the candidates of set-based scans over everything (anti-joins and one
  aggregate pass over the entries), so only anomalies reach the per-key checks;
- by an incremental run with what changed since the previous run's horizon (index range
  scans on updated_at / created_at);
- by a window run with the intents created in the window;
- always with the subjects of every finding open before the run, so each is checked again.

`core.recon_checks` then reads the facts of the keys in scope. Nothing here loads a table
into Python; the statements are constants (no value is ever formatted into SQL).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from core.recon import scan as recon_scan
from core.recon.findings import Finding
from core.recon.totals import Flows, Watermark

Conn: TypeAlias = asyncpg.Connection

_SCOPE_TABLES = """
CREATE TEMP TABLE recon_scope_intents (id uuid PRIMARY KEY) ON COMMIT DROP;
CREATE TEMP TABLE recon_scope_users (user_id text PRIMARY KEY) ON COMMIT DROP;
CREATE TEMP TABLE recon_scope_signatures (signature text PRIMARY KEY) ON COMMIT DROP;
CREATE TEMP TABLE recon_scope_txs (id bigint PRIMARY KEY) ON COMMIT DROP;
"""


async def horizon(conn: Conn) -> datetime:
    """The start of the oldest transaction open in this database right now (or now).

    Read *before* the run's snapshot: any row that snapshot cannot see was written by a
    transaction that started at or after this instant, so its now()-stamped updated_at or
    created_at is at or after it. The next incremental run starts from here.
    """
    # Only client backends write the tables reconciled (autovacuum and other workers do not);
    # sessions of other roles may hide their xact_start, so run it as the service's role.
    value = await conn.fetchval(
        """SELECT least(clock_timestamp(), min(xact_start)) FROM pg_stat_activity
           WHERE datname = current_database() AND pid <> pg_backend_pid()
             AND backend_type = 'client backend'"""
    )
    assert isinstance(value, datetime)
    return value


async def begin(conn: Conn) -> tuple[str, datetime]:
    """Inside the run's REPEATABLE READ transaction: take the snapshot (its text and time),
    give the aggregates memory, and create the scope tables."""
    row = await conn.fetchrow("SELECT pg_current_snapshot()::text AS snap, clock_timestamp() AS t")
    assert row is not None
    # one aggregate pass over a large ledger needs more than the default 4MB to stay in memory
    await conn.execute("SET LOCAL work_mem = '256MB'")
    await conn.execute(_SCOPE_TABLES)
    return str(row["snap"]), row["t"]


# --- scope: open findings, changes, windows ---------------------------------------------------


async def add_open(conn: Conn, findings: list[Finding]) -> None:
    """Every subject of the findings open before the run, so each is checked again."""
    await add_keys(
        conn,
        intents=[i for f in findings for i in f.intent_ids],
        users=[u for f in findings for u in f.user_ids],
        signatures=[s for f in findings for s in f.signatures],
        txs=[t for f in findings for t in f.ledger_tx_ids],
    )


async def add_changed(conn: Conn, since: datetime) -> None:
    """Incremental: ledger transactions, intents and attempts written at or after `since`."""
    await conn.execute(
        """INSERT INTO recon_scope_txs SELECT id FROM ledger_transactions WHERE created_at >= $1
           ON CONFLICT DO NOTHING""",
        since,
    )
    await conn.execute(
        """INSERT INTO recon_scope_intents
             SELECT id FROM purchase_intents WHERE updated_at >= $1
             UNION SELECT intent_id FROM verification_attempts WHERE created_at >= $1
           ON CONFLICT DO NOTHING""",
        since,
    )
    await conn.execute(
        """INSERT INTO recon_scope_signatures
           SELECT signature FROM verification_attempts WHERE created_at >= $1
           ON CONFLICT DO NOTHING""",
        since,
    )


async def add_window(conn: Conn, start: datetime, end: datetime) -> None:
    """Window: intents created in [start, end), and ledger transactions written in it."""
    await conn.execute(
        """INSERT INTO recon_scope_intents
           SELECT id FROM purchase_intents WHERE created_at >= $1 AND created_at < $2
           ON CONFLICT DO NOTHING""",
        start,
        end,
    )
    await conn.execute(
        """INSERT INTO recon_scope_txs
           SELECT id FROM ledger_transactions WHERE created_at >= $1 AND created_at < $2
           ON CONFLICT DO NOTHING""",
        start,
        end,
    )
    await conn.execute(
        """INSERT INTO recon_scope_signatures
           SELECT v.signature FROM verification_attempts v
           JOIN recon_scope_intents s ON s.id = v.intent_id
           ON CONFLICT DO NOTHING"""
    )


async def add_stale(
    conn: Conn, cutoff: datetime, window: tuple[datetime, datetime] | None = None
) -> None:
    """Intents PENDING since before `cutoff` (the partial index on pending intents)."""
    start, end = window or (None, None)
    await conn.execute(
        """INSERT INTO recon_scope_intents
           SELECT id FROM purchase_intents
           WHERE status = 'PENDING' AND created_at < $1
             AND ($2::timestamptz IS NULL OR (created_at >= $2 AND created_at < $3))
           ON CONFLICT DO NOTHING""",
        cutoff,
        start,
        end,
    )


_DERIVED = (
    # the purchases of intents in scope, and the intents of ledger transactions in scope
    """INSERT INTO recon_scope_txs SELECT t.id FROM ledger_transactions t
       JOIN recon_scope_intents s ON s.id = t.intent_id ON CONFLICT DO NOTHING""",
    """INSERT INTO recon_scope_intents SELECT t.intent_id FROM ledger_transactions t
       JOIN recon_scope_txs s ON s.id = t.id WHERE t.intent_id IS NOT NULL
       ON CONFLICT DO NOTHING""",
    # a reversal in scope brings the purchase it reverses
    """INSERT INTO recon_scope_intents SELECT p.intent_id FROM ledger_transactions r
       JOIN recon_scope_txs s ON s.id = r.id
       JOIN ledger_transactions p ON p.id = r.reverses_id
       WHERE p.intent_id IS NOT NULL ON CONFLICT DO NOTHING""",
    # adjustments applied (or reversed) by ledger transactions in scope: what they name
    """INSERT INTO recon_scope_intents
       SELECT unnest(payops_recon_uuids(a.intent_ids)) FROM adjustments a
       JOIN recon_scope_txs s ON s.id = a.applied_ledger_tx
       UNION SELECT unnest(payops_recon_uuids(a.intent_ids)) FROM adjustments a
       JOIN ledger_transactions r ON r.reverses_id = a.applied_ledger_tx
       JOIN recon_scope_txs s ON s.id = r.id
       ON CONFLICT DO NOTHING""",
    """INSERT INTO recon_scope_signatures
       SELECT unnest(a.tx_signatures) FROM adjustments a
       JOIN recon_scope_txs s ON s.id = a.applied_ledger_tx
       UNION SELECT unnest(a.tx_signatures) FROM adjustments a
       JOIN ledger_transactions r ON r.reverses_id = a.applied_ledger_tx
       JOIN recon_scope_txs s ON s.id = r.id
       ON CONFLICT DO NOTHING""",
    # the signatures of intents and purchases in scope
    """INSERT INTO recon_scope_signatures
       SELECT i.tx_signature FROM purchase_intents i JOIN recon_scope_intents s ON s.id = i.id
       WHERE i.tx_signature IS NOT NULL
       UNION SELECT t.purchase_signature FROM ledger_transactions t
       JOIN recon_scope_txs s ON s.id = t.id WHERE t.purchase_signature IS NOT NULL
       ON CONFLICT DO NOTHING""",
    # the users of intents in scope, and of accounts moved by transactions in scope
    """INSERT INTO recon_scope_users
       SELECT i.user_id FROM purchase_intents i JOIN recon_scope_intents s ON s.id = i.id
       UNION SELECT a.user_id FROM ledger_entries e
       JOIN recon_scope_txs s ON s.id = e.transaction_id
       JOIN accounts a ON a.id = e.account_id WHERE a.kind = 'user'
       ON CONFLICT DO NOTHING""",
    "ANALYZE recon_scope_intents, recon_scope_users, recon_scope_signatures, recon_scope_txs",
)


async def add_derived(conn: Conn) -> None:
    """Close the scope: the purchases, users and signatures of what is in it."""
    for statement in _DERIVED:
        await conn.execute(statement)


# --- full run: one pass over everything, candidates into the scope ----------------------------


async def add_full(
    conn: Conn, pool: asyncpg.Pool | None = None
) -> tuple[Flows, recon_scan.Candidates]:
    """Full run: scan everything once (`core.recon_scan`), put the candidates in scope."""
    flows, found = await recon_scan.scan(conn, pool)
    await add_keys(
        conn, intents=found.intents, users=found.users, signatures=found.signatures, txs=found.txs
    )
    return flows, found


async def add_keys(
    conn: Conn,
    *,
    intents: Sequence[Any] = (),
    users: Sequence[str] = (),
    signatures: Sequence[str] = (),
    txs: Sequence[int] = (),
) -> None:
    """Put keys in scope (intent ids as uuids or text)."""
    await conn.execute(
        """INSERT INTO recon_scope_intents
           SELECT unnest(payops_recon_uuids($1::text[])) ON CONFLICT DO NOTHING""",
        sorted({str(i) for i in intents}),
    )
    await conn.execute(
        "INSERT INTO recon_scope_users SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
        sorted(set(users)),
    )
    await conn.execute(
        "INSERT INTO recon_scope_signatures SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
        sorted(set(signatures)),
    )
    await conn.execute(
        "INSERT INTO recon_scope_txs SELECT unnest($1::bigint[]) ON CONFLICT DO NOTHING",
        sorted(set(txs)),
    )


_CONFIRMED_FLOWS = """SELECT count(*) AS n, coalesce(sum(credits), 0) AS credits,
       coalesce(sum(amount), 0) AS amount, coalesce(sum(received_amount), 0) AS received
FROM purchase_intents i"""


def _flows(intents: asyncpg.Record, ledger: asyncpg.Record) -> Flows:
    return Flows(
        confirmed_intents=int(intents["n"]),
        expected_credits=int(intents["credits"]),
        expected_tokens=int(intents["amount"]),
        received_tokens=int(intents["received"]),
        purchase_transactions=int(ledger["purchases"]),
        purchase_credits=int(ledger["credits"]),
        ledger_transactions=int(ledger["txs"]),
        ledger_total=int(ledger["total"]),
    )


async def changed_flows(conn: Conn, since: Watermark) -> Flows:
    """Incremental: the flows of what the previous run's snapshot could not see.

    Ledger transactions are told apart exactly by the transaction that wrote them
    (`created_xact`). An intent counts as newly CONFIRMED when its purchase credit is new;
    one confirmed without a purchase credit (itself a finding) when confirmed after that
    snapshot was taken.
    """
    ledger = await conn.fetchrow(
        """WITH n AS (
               SELECT t.id, t.kind FROM ledger_transactions t
               WHERE t.created_at >= $1
                 AND NOT pg_visible_in_snapshot(t.created_xact, $2::text::pg_snapshot))
           SELECT count(*) AS txs,
                  coalesce(sum((SELECT sum(e.amount) FROM ledger_entries e
                                WHERE e.transaction_id = n.id)), 0) AS total,
                  count(*) FILTER (WHERE kind = 'purchase') AS purchases,
                  coalesce(sum(payops_recon_user_amount(n.id)) FILTER (WHERE kind = 'purchase'), 0)
                    AS credits
           FROM n""",
        since.horizon,
        since.snapshot,
    )
    intents = await conn.fetchrow(
        _CONFIRMED_FLOWS  # noqa: S608 (constants only)
        + """ WHERE i.updated_at >= $1 AND i.status = 'CONFIRMED'
              AND CASE WHEN EXISTS (SELECT 1 FROM ledger_transactions p WHERE p.intent_id = i.id)
                  THEN NOT EXISTS (
                      SELECT 1 FROM ledger_transactions p WHERE p.intent_id = i.id
                         AND pg_visible_in_snapshot(p.created_xact, $2::text::pg_snapshot))
                  ELSE i.confirmed_at >= $3 END""",
        since.horizon,
        since.snapshot,
        since.snapshot_time,
    )
    assert ledger is not None
    assert intents is not None
    return _flows(intents, ledger)


async def window_flows(conn: Conn, start: datetime, end: datetime) -> Flows:
    """Window: intents created in it and their purchases; ledger transactions written in it."""
    intents = await conn.fetchrow(
        _CONFIRMED_FLOWS
        + " WHERE i.status = 'CONFIRMED' AND i.created_at >= $1 AND i.created_at < $2",
        start,
        end,
    )
    ledger = await conn.fetchrow(
        """SELECT
             (SELECT count(*) FROM ledger_transactions t
               JOIN purchase_intents i ON i.id = t.intent_id
               WHERE i.created_at >= $1 AND i.created_at < $2) AS purchases,
             (SELECT coalesce(sum(payops_recon_user_amount(t.id)), 0) FROM ledger_transactions t
               JOIN purchase_intents i ON i.id = t.intent_id
               WHERE i.created_at >= $1 AND i.created_at < $2) AS credits,
             (SELECT count(*) FROM ledger_transactions t
               WHERE t.created_at >= $1 AND t.created_at < $2) AS txs,
             (SELECT coalesce(sum(e.amount), 0) FROM ledger_transactions t
               JOIN ledger_entries e ON e.transaction_id = t.id
               WHERE t.created_at >= $1 AND t.created_at < $2) AS total""",
        start,
        end,
    )
    assert ledger is not None
    assert intents is not None
    return _flows(intents, ledger)


async def corrections(
    conn: Conn, window: tuple[datetime, datetime] | None = None
) -> tuple[int, int]:
    """(how many, net credits) of the ledger transactions that correct a purchase credit.

    Applied missing-credit adjustments naming (by id, by its signature or its purchase's) a
    CONFIRMED intent that has no purchase credit, or only a reversed one; reversals of
    purchase credits; reversals of those adjustments. A credit given on top of a standing
    purchase credit is not a correction: it is a duplicate (or an overpayment credited), which
    the signature check weighs. Adjustments are few: this reads them all, and the intents
    they name through the indexes.
    """
    start, end = window or (None, None)
    row = await conn.fetchrow(
        """WITH adj AS (
               SELECT a.applied_ledger_tx AS ltx, a.tx_signatures,
                      payops_recon_uuids(a.intent_ids) AS intents
               FROM adjustments a WHERE a.status = 'APPLIED' AND a.kind = 'missing_credit'
           ), named AS (  -- the intents each names, through the primary and signature keys
               SELECT adj.ltx, i.id FROM adj JOIN purchase_intents i ON i.id = ANY (adj.intents)
               UNION SELECT adj.ltx, i.id FROM adj
                     JOIN purchase_intents i ON i.tx_signature = ANY (adj.tx_signatures)
           ), base AS (
               SELECT n.ltx FROM named n JOIN purchase_intents i ON i.id = n.id
               WHERE i.status = 'CONFIRMED'
                 AND ($1::timestamptz IS NULL OR (i.created_at >= $1 AND i.created_at < $2))
                 AND NOT EXISTS (SELECT 1 FROM ledger_transactions p WHERE p.intent_id = i.id
                                 AND NOT EXISTS (SELECT 1 FROM ledger_transactions r
                                                 WHERE r.reverses_id = p.id))
               UNION
               SELECT r.id FROM ledger_transactions r
               JOIN ledger_transactions p ON p.id = r.reverses_id
               JOIN purchase_intents i ON i.id = p.intent_id
               WHERE r.reverses_id IS NOT NULL
                 AND ($1::timestamptz IS NULL OR (i.created_at >= $1 AND i.created_at < $2))
           ), closure AS (
               SELECT ltx FROM base
               UNION SELECT r.id FROM ledger_transactions r JOIN base b ON r.reverses_id = b.ltx
           )
           SELECT count(*) AS n, coalesce(sum(payops_recon_user_amount(ltx)), 0) AS credits
           FROM closure""",
        start,
        end,
    )
    assert row is not None
    return int(row["n"]), int(row["credits"])
