"""Reconciliation SQL, part two: the facts of the keys in scope, for the pure rules.

Each query reads the keys in one scope table (see `core.recon_sql`) through the indexes and
returns only rows that may be anomalies; `core.recon_rules` decides what they are. The chain
side's lookups (which signatures the database already knows, which intents a payment names)
are here too.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TypeAlias

import asyncpg

from core.recon.facts import AttemptFacts, BalanceFacts, IntentFacts, SignatureFacts, TxFacts

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool

_INTENTS = """
WITH s AS MATERIALIZED (
    SELECT i.id, i.user_id, i.status, i.credits, i.amount, i.received_amount, i.tx_signature,
           i.created_at, p.id AS purchase_tx, p.purchase_signature,
           r.id IS NOT NULL AS purchase_reversed
    FROM recon_scope_intents k
    JOIN purchase_intents i ON i.id = k.id
    LEFT JOIN ledger_transactions p ON p.intent_id = i.id
    LEFT JOIN ledger_transactions r ON r.reverses_id = p.id
), credited AS (  -- what each purchase credited, and to whom
    SELECT e.transaction_id, sum(e.amount) AS credited, min(a.user_id) AS credited_user
    FROM s JOIN ledger_entries e ON e.transaction_id = s.purchase_tx
    JOIN accounts a ON a.id = e.account_id AND a.kind = 'user'
    GROUP BY e.transaction_id
), links AS MATERIALIZED (  -- applied adjustments naming the intent, its signature or purchase's
    SELECT s.id AS intent_id, a.applied_ledger_tx AS ltx,
           -- a missing credit corrects the purchase credit only while there is none
           a.kind = 'missing_credit' AND (s.purchase_tx IS NULL OR s.purchase_reversed)
             AS corrects
    FROM s JOIN adjustments a ON a.status = 'APPLIED'
     AND (a.intent_ids @> ARRAY[s.id::text]
          OR a.tx_signatures && ARRAY[s.tx_signature, s.purchase_signature])
), fixes AS (
    SELECT intent_id, ltx FROM links WHERE corrects
    UNION SELECT s.id, r.id FROM s JOIN ledger_transactions r ON r.reverses_id = s.purchase_tx
    UNION SELECT l.intent_id, r.id FROM links l
          JOIN ledger_transactions r ON r.reverses_id = l.ltx WHERE l.corrects
), corrections AS (
    SELECT f.intent_id, sum(e.amount) AS corrections
    FROM fixes f JOIN ledger_entries e ON e.transaction_id = f.ltx
    JOIN accounts a ON a.id = e.account_id AND a.kind = 'user'
    GROUP BY f.intent_id
), facts AS (
    SELECT s.*, c.credited_user, coalesce(c.credited, 0) AS credited,
           coalesce(x.corrections, 0) AS corrections,
           s.id IN (SELECT intent_id FROM links) AS adjusted
    FROM s
    LEFT JOIN credited c ON c.transaction_id = s.purchase_tx
    LEFT JOIN corrections x ON x.intent_id = s.id
)
SELECT * FROM facts
WHERE (status = 'CONFIRMED' AND (purchase_tx IS NULL OR purchase_reversed
       OR credited <> credits OR credited_user IS DISTINCT FROM user_id
       OR purchase_signature IS DISTINCT FROM tx_signature OR received_amount > amount))
   OR (status <> 'CONFIRMED' AND purchase_tx IS NOT NULL)
   OR (status = 'PENDING' AND created_at < $1)
"""


async def intent_facts(conn: Conn, stale_cutoff: datetime) -> list[IntentFacts]:
    """Intents in scope whose credit, payment or age may be an anomaly."""
    rows = await conn.fetch(_INTENTS, stale_cutoff)
    return [
        IntentFacts(
            intent_id=str(r["id"]),
            user_id=r["user_id"],
            status=r["status"],
            credits=int(r["credits"]),
            amount=int(r["amount"]),
            received_amount=None if r["received_amount"] is None else int(r["received_amount"]),
            tx_signature=r["tx_signature"],
            created_at=r["created_at"],
            purchase_tx=r["purchase_tx"],
            purchase_signature=r["purchase_signature"],
            credited_user=r["credited_user"],
            credited=int(r["credited"]),
            purchase_reversed=bool(r["purchase_reversed"]),
            corrections=int(r["corrections"]),
            adjusted=bool(r["adjusted"]),
        )
        for r in rows
    ]


async def attempt_facts(conn: Conn) -> list[AttemptFacts]:
    """Rejected and flagged (late, overpaid) attempts of intents in scope, per signature."""
    rows = await conn.fetch(
        """SELECT v.intent_id, i.user_id, i.status, i.tx_signature AS intent_signature,
                  v.signature, v.outcome,
                  coalesce(array_agg(DISTINCT v.code) FILTER (WHERE v.code IS NOT NULL), '{}')
                    AS codes,
                  EXISTS (SELECT 1 FROM adjustments a WHERE a.status = 'APPLIED'
                          AND a.tx_signatures @> ARRAY[v.signature])
                  OR (i.status <> 'CONFIRMED' AND EXISTS (
                      SELECT 1 FROM adjustments a WHERE a.status = 'APPLIED'
                         AND a.intent_ids @> ARRAY[v.intent_id::text])) AS adjusted,
                  (SELECT t.intent_id FROM ledger_transactions t
                   WHERE t.purchase_signature = v.signature AND t.intent_id <> v.intent_id)
                    AS credited_elsewhere,
                  i.status = 'CONFIRMED' AND EXISTS (
                      SELECT 1 FROM treasury_flows f WHERE f.signature = v.signature
                         AND f.intent_id = v.intent_id AND f.outcome = 'partial')
                  AND i.received_amount >= (
                      SELECT sum(g.amount) FROM treasury_flows g WHERE g.intent_id = v.intent_id
                         AND g.outcome IN ('partial', 'credited')) AS in_topup
           FROM verification_attempts v
           JOIN recon_scope_intents k ON k.id = v.intent_id
           JOIN purchase_intents i ON i.id = v.intent_id
           WHERE v.outcome = 'rejected' OR (v.outcome = 'confirmed' AND v.code IS NOT NULL)
           GROUP BY v.intent_id, i.user_id, i.status, i.tx_signature, i.received_amount,
                    v.signature, v.outcome"""
    )
    return [
        AttemptFacts(
            intent_id=str(r["intent_id"]),
            user_id=r["user_id"],
            intent_status=r["status"],
            intent_signature=r["intent_signature"],
            signature=r["signature"],
            outcome=r["outcome"],
            codes=tuple(sorted(r["codes"])),
            adjusted=bool(r["adjusted"]),
            credited_elsewhere=None
            if r["credited_elsewhere"] is None
            else str(r["credited_elsewhere"]),
            in_topup=bool(r["in_topup"]),
        )
        for r in rows
    ]


_SIGNATURES = """
WITH s AS (SELECT signature FROM recon_scope_signatures),
claims AS MATERIALIZED (  -- the intents each signature is said to have paid
    SELECT s.signature, v.intent_id FROM s
    JOIN verification_attempts v ON v.signature = s.signature AND v.outcome = 'confirmed'
    UNION SELECT s.signature, i.id FROM s JOIN purchase_intents i ON i.tx_signature = s.signature
    UNION SELECT s.signature, t.intent_id FROM s
          JOIN ledger_transactions t ON t.purchase_signature = s.signature
), adj AS MATERIALIZED (  -- applied corrections naming the signature or an intent it paid
    SELECT s.signature, a.applied_ledger_tx AS ltx, a.credits FROM s
    JOIN adjustments a ON a.status = 'APPLIED'
     AND a.kind IN ('missing_credit', 'duplicate_reversal')
     AND a.tx_signatures @> ARRAY[s.signature]
    UNION SELECT c.signature, a.applied_ledger_tx, a.credits FROM claims c
    JOIN adjustments a ON a.status = 'APPLIED'
     AND a.kind IN ('missing_credit', 'duplicate_reversal')
     AND a.intent_ids @> ARRAY[c.intent_id::text]
), multi AS MATERIALIZED (  -- only signatures two credits can hang on
    SELECT signature FROM claims GROUP BY signature HAVING count(*) > 1
    UNION SELECT signature FROM adj
), credit AS MATERIALIZED (
    SELECT c.signature, t.id AS ltx FROM claims c JOIN multi m ON m.signature = c.signature
    JOIN ledger_transactions t ON t.intent_id = c.intent_id
    UNION SELECT signature, ltx FROM adj
), closure AS MATERIALIZED (
    SELECT signature, ltx FROM credit
    UNION SELECT c.signature, r.id FROM credit c JOIN ledger_transactions r ON r.reverses_id = c.ltx
), amounts AS MATERIALIZED (  -- what each of those ledger transactions moved on user accounts
    SELECT x.ltx, coalesce(sum(e.amount), 0) AS amount
    FROM (SELECT DISTINCT ltx FROM closure) x
    LEFT JOIN ledger_entries e ON e.transaction_id = x.ltx
     AND e.account_id IN (SELECT id FROM accounts WHERE kind = 'user')
    GROUP BY x.ltx
), facts AS (
    SELECT m.signature,
           coalesce((SELECT array_agg(DISTINCT c.intent_id::text) FROM claims c
                     WHERE c.signature = m.signature), '{}') AS intent_ids,
           coalesce((SELECT array_agg(DISTINCT i.user_id) FROM claims c
                     JOIN purchase_intents i ON i.id = c.intent_id
                     WHERE c.signature = m.signature), '{}') AS user_ids,
           -- one payment buys its intent's credits, and what it overpaid at that price
           coalesce((SELECT max(i.credits + floor(greatest(coalesce(i.received_amount, 0)
                                   - i.amount, 0) * i.credits / i.amount))
                     FROM claims c JOIN purchase_intents i ON i.id = c.intent_id
                     WHERE c.signature = m.signature),
                    (SELECT max(a.credits) FROM adj a WHERE a.signature = m.signature), 0) AS paid,
           coalesce((SELECT sum(n.amount) FROM closure x JOIN amounts n ON n.ltx = x.ltx
                     WHERE x.signature = m.signature), 0) AS granted,
           (SELECT count(*) FROM credit x JOIN amounts n ON n.ltx = x.ltx
             WHERE x.signature = m.signature AND n.amount > 0) AS sources
    FROM multi m
)
SELECT * FROM facts WHERE sources >= 2
"""


async def signature_facts(conn: Conn) -> list[SignatureFacts]:
    """Signatures in scope that more than one credit was given for."""
    rows = await conn.fetch(_SIGNATURES)
    return [
        SignatureFacts(
            signature=r["signature"],
            intent_ids=tuple(sorted(r["intent_ids"])),
            user_ids=tuple(sorted(r["user_ids"])),
            paid=int(r["paid"]),
            granted=int(r["granted"]),
            credit_sources=int(r["sources"]),
        )
        for r in rows
    ]


async def balance_facts(conn: Conn) -> list[BalanceFacts]:
    """Users in scope whose cached balance differs from their entries, or is below zero."""
    rows = await conn.fetch(
        """SELECT * FROM (
               SELECT a.user_id, coalesce(b.balance, 0) AS cached,
                      coalesce((SELECT sum(e.amount) FROM ledger_entries e
                                WHERE e.account_id = a.id), 0) AS entries
               FROM recon_scope_users k
               JOIN accounts a ON a.user_id = k.user_id AND a.kind = 'user'
               LEFT JOIN user_balances b ON b.account_id = a.id
           ) x WHERE cached <> entries OR cached < 0"""
    )
    return [BalanceFacts(r["user_id"], int(r["cached"]), int(r["entries"])) for r in rows]


async def tx_facts(conn: Conn) -> list[TxFacts]:
    """Ledger transactions in scope whose entries do not sum to zero, or are fewer than two."""
    rows = await conn.fetch(
        """SELECT t.id, coalesce(sum(e.amount), 0) AS total, count(e.id) AS n,
                  coalesce(array_agg(DISTINCT a.user_id) FILTER (WHERE a.user_id IS NOT NULL),
                           '{}') AS users
           FROM recon_scope_txs k
           JOIN ledger_transactions t ON t.id = k.id
           LEFT JOIN ledger_entries e ON e.transaction_id = t.id
           LEFT JOIN accounts a ON a.id = e.account_id
           GROUP BY t.id
           HAVING coalesce(sum(e.amount), 0) <> 0 OR count(e.id) < 2"""
    )
    return [
        TxFacts(int(r["id"]), int(r["total"]), int(r["n"]), tuple(sorted(r["users"]))) for r in rows
    ]


# --- the chain side's database lookups -------------------------------------------------------


async def reference_candidates(
    conn: Conn,
    *,
    limit: int,
    changed_since: datetime | None,
    window: tuple[datetime, datetime] | None,
) -> list[tuple[str, str]]:
    """(intent id, reference) of unsettled intents to look up on chain, newest first:
    every PENDING one, and EXPIRED/REJECTED ones changed since the last run (or in the
    window, or all for a full run); at most `limit`."""
    start, end = window or (None, None)
    rows = await conn.fetch(
        """(SELECT id, reference, created_at FROM purchase_intents WHERE status = 'PENDING'
             AND ($2::timestamptz IS NULL OR (created_at >= $2 AND created_at < $3))
             ORDER BY created_at DESC LIMIT $1)
           UNION ALL
           (SELECT id, reference, created_at FROM purchase_intents
             WHERE status IN ('EXPIRED', 'REJECTED')
               AND ($2::timestamptz IS NULL OR (created_at >= $2 AND created_at < $3))
               AND ($4::timestamptz IS NULL OR updated_at >= $4)
             ORDER BY created_at DESC LIMIT $1)
           ORDER BY created_at DESC LIMIT $1""",
        limit,
        start,
        end,
        changed_since,
    )
    return [(str(r["id"]), r["reference"]) for r in rows]


async def known_signatures(conn: Conn, signatures: Sequence[str]) -> set[str]:
    """The signatures an intent, a purchase credit or an applied adjustment already holds."""
    rows = await conn.fetch(
        """SELECT x.sig FROM unnest($1::text[]) AS x(sig)
           WHERE EXISTS (SELECT 1 FROM purchase_intents i WHERE i.tx_signature = x.sig)
              OR EXISTS (SELECT 1 FROM ledger_transactions t WHERE t.purchase_signature = x.sig)
              OR EXISTS (SELECT 1 FROM adjustments a WHERE a.status = 'APPLIED'
                         AND a.tx_signatures @> ARRAY[x.sig])""",
        list(signatures),
    )
    return {r["sig"] for r in rows}


async def settled_signatures(conn: Conn, signatures: Sequence[str]) -> dict[str, tuple[bool, bool]]:
    """signature -> (credited by an intent or purchase, named by an applied adjustment)."""
    rows = await conn.fetch(
        """SELECT x.sig,
                  EXISTS (SELECT 1 FROM purchase_intents i WHERE i.tx_signature = x.sig)
                  OR EXISTS (SELECT 1 FROM ledger_transactions t WHERE t.purchase_signature = x.sig)
                    AS credited,
                  EXISTS (SELECT 1 FROM adjustments a WHERE a.status = 'APPLIED'
                          AND a.tx_signatures @> ARRAY[x.sig]) AS adjusted
           FROM unnest($1::text[]) AS x(sig)""",
        list(signatures),
    )
    return {r["sig"]: (bool(r["credited"]), bool(r["adjusted"])) for r in rows}


async def intents_named(
    conn: Conn, references: Iterable[str], memos: Iterable[str]
) -> dict[str, tuple[str, str]]:
    """Intents whose reference is among `references` or whose id is a memo:
    key (the reference or the intent id) -> (intent id, user id)."""
    ids = []
    for memo in memos:
        try:
            ids.append(uuid.UUID(memo.strip()))
        except ValueError:
            continue
    rows = await conn.fetch(
        """SELECT id, user_id, reference FROM purchase_intents
           WHERE reference = ANY ($1::text[]) OR id = ANY ($2::uuid[])""",
        sorted(set(references)),
        ids,
    )
    found: dict[str, tuple[str, str]] = {}
    for r in rows:
        found[r["reference"]] = (str(r["id"]), r["user_id"])
        found[str(r["id"])] = (str(r["id"]), r["user_id"])
    return found
