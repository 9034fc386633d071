"""The books tied to the chain, the reads: the treasury watcher's cursor and recorded flows
from the database, the treasury token account's balance from the chain.

The balance is compared only when the watcher has recorded everything up to it. The order
of the reads makes that provable: the cursor and the sum of the flows first (one statement,
so they agree), then the balance, then `getSignaturesForAddress(account, until=cursor)`. When
that last read is empty, no transaction touched the account after the cursor up to a moment
after the balance was read, so the balance is exactly the start balance plus the recorded
flows — or the difference moved without a transaction the watcher could see. Otherwise the
watcher is behind (or a payment landed meanwhile): the balance is "not checked", never drift.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, TypeAlias

import asyncpg

from core import watch
from core.recon.chain import ChainLookup, ChainObservation
from core.recon.facts import BalanceTie, FlowFacts
from core.recon.findings import Finding
from core.recon.ties import balance_tie_findings, flow_findings

log = logging.getLogger("payops.recon")

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool


async def watched(conn: Conn, account: str) -> bool:
    """The watcher follows `account` (its cursor exists): its flows are the chain side."""
    return await watch.cursor(conn, account) is not None


async def observe_books(conn: Conn, chain: ChainLookup, account: str) -> ChainObservation:
    """The chain side while the watcher runs: its books against the balance on chain."""
    try:
        tie = await tie_balance(conn, chain, account)
    except Exception as exc:  # an unreachable or broken node: the run records it
        reason = f"{type(exc).__name__}: {exc}"[:300]
        log.warning("reconciliation: treasury balance not read: %s", reason)
        return ChainObservation(attempted=True, checked=False, error=reason, source="watcher")
    return ChainObservation(attempted=True, checked=True, source="watcher", balance=tie)


async def tie_balance(conn: Conn, chain: ChainLookup, account: str) -> BalanceTie | None:
    """The balance on chain beside the books (None when the account is not watched)."""
    books = await watch.books(conn, account)
    if books is None:
        return None
    cursor, recorded = books
    tie = BalanceTie(
        account=account,
        start_balance=cursor.start_balance,
        recorded=recorded,
        cursor_signature=cursor.signature,
        cursor_slot=cursor.slot,
    )
    on_chain, slot = await chain.token_account_balance(account)
    newer = await chain.signatures_newer_than(account, cursor.signature, limit=1)
    unchecked = None
    if newer:
        unchecked = f"watcher behind: {newer[0].get('signature')} not recorded yet"
    return replace(tie, on_chain=on_chain, slot=slot, unchecked=unchecked)


async def findings(
    conn: Conn,
    observation: ChainObservation,
    account: str,
    *,
    scope: FlowScope,
    now: datetime,
    pending_sla: timedelta,
    grace: timedelta,
    ignore: Collection[str] = (),
) -> list[Finding]:
    """The watcher's flows in scope against the ledger, and its books against the balance.
    `ignore`: payments never meant to credit (the smoke test's)."""
    found: list[Finding] = []
    facts = await flow_facts(
        conn, account, everything=scope.everything, since=scope.since, window=scope.window
    )
    for f in facts:
        if f.signature in ignore:
            continue
        found += flow_findings(f, now=now, pending_sla=pending_sla, grace=grace)
    if observation.balance is not None:
        found += balance_tie_findings(observation.balance)
    return found


@dataclass(frozen=True, slots=True)
class FlowScope:
    """Which recorded flows a run reads (besides those of its scope's intents and
    signatures): all of them, those recorded since a horizon, or those paid in a window."""

    everything: bool = False
    since: datetime | None = None
    window: tuple[datetime, datetime] | None = None


# Flows that may be anomalies (outflows, unbound inflows, inflows whose intent is not
# CONFIRMED by them) among those in scope: every flow in a full run ($2), else those recorded
# since the previous run's horizon ($3), paid in the window ($4, $5), or tied to an intent or
# signature in the run's scope (a changed intent, an adjustment, an open finding).
_FLOWS = """
WITH f AS MATERIALIZED (
    SELECT f.*, i.user_id, i.status, i.tx_signature, i.created_at, i.expires_at,
           i.received_amount
    FROM treasury_flows f LEFT JOIN purchase_intents i ON i.id = f.intent_id
    WHERE f.account = $1
      AND ($2 OR f.detected_at >= $3
           OR (f.block_time >= $4 AND f.block_time < $5)
           OR f.intent_id IN (SELECT id FROM recon_scope_intents)
           OR f.signature IN (SELECT signature FROM recon_scope_signatures))
      AND (f.amount < 0 OR f.intent_id IS NULL OR i.status <> 'CONFIRMED'
           OR i.tx_signature IS DISTINCT FROM f.signature)
)
SELECT f.signature, f.slot, f.amount, f.payer, f.intent_id, f.user_id, f.status,
       f.tx_signature, f.created_at, f.expires_at,
       EXISTS (SELECT 1 FROM ledger_transactions t WHERE t.purchase_signature = f.signature)
         OR EXISTS (SELECT 1 FROM purchase_intents i WHERE i.tx_signature = f.signature)
         AS credited,
       EXISTS (SELECT 1 FROM adjustments a WHERE a.status = 'APPLIED'
               AND a.tx_signatures @> ARRAY[f.signature]) AS adjusted,
       EXISTS (SELECT 1 FROM incidents n WHERE n.status = 'closed'
               AND strpos(concat_ws(' ', n.title, n.root_cause, n.affected_users,
                                    n.corrective_action, n.prevention_action), f.signature) > 0)
         OR EXISTS (SELECT 1 FROM incident_notes m JOIN incidents n ON n.id = m.incident_id
                    WHERE n.status = 'closed' AND strpos(m.text, f.signature) > 0)
         AS explained,
       f.outcome = 'partial' AND f.status = 'CONFIRMED'
         AND f.received_amount >= (SELECT sum(g.amount) FROM treasury_flows g
                                   WHERE g.intent_id = f.intent_id
                                     AND g.outcome IN ('partial', 'credited'))
         AS in_topup
FROM f ORDER BY f.slot, f.signature
"""


async def flow_facts(
    conn: Conn,
    account: str,
    *,
    everything: bool,
    since: datetime | None = None,
    window: tuple[datetime, datetime] | None = None,
) -> list[FlowFacts]:
    """Recorded flows in the run's scope that may be anomalies (inside its snapshot)."""
    start, end = window or (None, None)
    rows = await conn.fetch(_FLOWS, account, everything, since, start, end)
    return [_flow(r) for r in rows]


def _flow(r: Any) -> FlowFacts:
    return FlowFacts(
        signature=r["signature"],
        slot=int(r["slot"]),
        amount=int(r["amount"]),
        payer=r["payer"],
        intent_id=None if r["intent_id"] is None else str(r["intent_id"]),
        user_id=r["user_id"],
        intent_status=r["status"],
        intent_signature=r["tx_signature"],
        intent_created_at=r["created_at"],
        intent_expires_at=r["expires_at"],
        credited=bool(r["credited"]),
        adjusted=bool(r["adjusted"]),
        explained=bool(r["explained"]),
        in_topup=bool(r["in_topup"]),
    )


async def recorded(conn: Conn, signatures: Sequence[str]) -> set[str]:
    """Which of `signatures` the watcher recorded as flows."""
    rows = await conn.fetch(
        "SELECT signature FROM treasury_flows WHERE signature = ANY ($1::text[])",
        list(signatures),
    )
    return {r["signature"] for r in rows}
