"""SQL for purchase intents and verification attempts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from core.audit import Actor
from core.ledger import Posting
from core.purchases.intents import Intent, IntentStatus

_COLUMNS = """id, user_id, credits, amount, mint, token_program, recipient,
    recipient_token_account, reference, memo, wallet, status, tx_signature, received_amount,
    reject_code, created_at, expires_at, confirmed_at"""

_SELECT = f"SELECT {_COLUMNS} FROM purchase_intents WHERE id = $1"  # noqa: S608 (constants only)
_SELECT_FOR_UPDATE = _SELECT + " FOR UPDATE"
# The intent, and the intent its would-be signature already paid for (the verify pre-check).
_SELECT_FOR_VERIFY = f"""SELECT {_COLUMNS},
        (SELECT intent_id FROM ledger_transactions WHERE purchase_signature = $2)
            AS signature_owner
    FROM purchase_intents WHERE id = $1"""  # noqa: S608 (constants only)


def intent_from_row(row: Any) -> Intent:
    return Intent(
        id=row["id"],
        user_id=row["user_id"],
        credits=row["credits"],
        amount=int(row["amount"]),
        mint=row["mint"],
        token_program=row["token_program"],
        recipient=row["recipient"],
        recipient_token_account=row["recipient_token_account"],
        reference=row["reference"],
        memo=row["memo"],
        wallet=row["wallet"],
        status=IntentStatus(row["status"]),
        tx_signature=row["tx_signature"],
        received_amount=None if row["received_amount"] is None else int(row["received_amount"]),
        reject_code=row["reject_code"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        confirmed_at=row["confirmed_at"],
    )


async def insert(conn: asyncpg.Connection, intent: Intent) -> None:
    await conn.execute(
        """INSERT INTO purchase_intents (id, user_id, credits, amount, mint, token_program,
               recipient, recipient_token_account, reference, memo, wallet, status,
               created_at, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)""",
        intent.id,
        intent.user_id,
        intent.credits,
        intent.amount,
        intent.mint,
        intent.token_program,
        intent.recipient,
        intent.recipient_token_account,
        intent.reference,
        intent.memo,
        intent.wallet,
        intent.status.value,
        intent.created_at,
        intent.expires_at,
    )


async def get(
    conn: asyncpg.Connection | asyncpg.Pool, intent_id: uuid.UUID, *, for_update: bool = False
) -> Intent | None:
    row = await conn.fetchrow(_SELECT_FOR_UPDATE if for_update else _SELECT, intent_id)
    return None if row is None else intent_from_row(row)


async def get_for_verify(
    conn: asyncpg.Connection | asyncpg.Pool, intent_id: uuid.UUID, signature: str
) -> tuple[Intent | None, uuid.UUID | None]:
    """The intent, and the intent `signature` already credited (if any), in one query."""
    row = await conn.fetchrow(_SELECT_FOR_VERIFY, intent_id, signature)
    if row is None:
        return None, None
    return intent_from_row(row), row["signature_owner"]


async def intent_of_signature(
    conn: asyncpg.Connection | asyncpg.Pool, signature: str
) -> uuid.UUID | None:
    """The intent a transaction signature already credited, if any."""
    value = await conn.fetchval(
        "SELECT intent_id FROM ledger_transactions WHERE purchase_signature = $1", signature
    )
    return value if isinstance(value, uuid.UUID) else None


async def mark_rejected(conn: asyncpg.Connection, intent: Intent, *, code: str) -> str | None:
    """REJECTED if still PENDING or EXPIRED: the status it had, or None when nothing changed
    (confirmed or rejected meanwhile)."""
    before = await conn.fetchval(
        """UPDATE purchase_intents p
           SET status = 'REJECTED', reject_code = $2, updated_at = now()
           FROM (SELECT id, status FROM purchase_intents WHERE id = $1 FOR UPDATE) old
           WHERE p.id = old.id AND old.status IN ('PENDING', 'EXPIRED')
           RETURNING old.status""",
        intent.id,
        code,
    )
    return None if before is None else str(before)


async def record_attempt(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    intent: Intent,
    signature: str,
    source: str,
    outcome: str,
    code: str | None,
    detail: str | None,
    request_id: str | None,
) -> None:
    await conn.execute(
        """INSERT INTO verification_attempts
               (intent_id, user_id, signature, source, outcome, code, detail, request_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        intent.id,
        intent.user_id,
        signature,
        source,
        outcome,
        code,
        detail,
        request_id,
    )


@dataclass(frozen=True, slots=True)
class Attempt:
    """A verification attempt to record (see `record_attempt`)."""

    signature: str
    source: str
    outcome: str
    code: str | None
    detail: str | None
    request_id: str | None


# The credit in one call (`payops_credit_purchase`, migration 0013): lock and re-check the
# intent, post the purchase, confirm the intent, record the attempt and the audit record,
# read the balance; or record a duplicate's attempt; or write nothing.
_CREDIT_SQL = """SELECT outcome, status, tx_signature, reject_code, received_amount,
        confirmed_at, balance
    FROM payops_credit_purchase($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"""


@dataclass(frozen=True, slots=True)
class CreditRow:
    """What `credit` found and did: `outcome` is 'credited', 'duplicate', 'refused' (the
    intent was neither open nor confirmed by this signature: nothing written) or 'missing'."""

    outcome: str
    intent: Intent | None  # the intent as it is after the call (None when missing)
    balance: int


@dataclass(frozen=True, slots=True)
class CreditCall:
    """One purchase's credit, as `payops_credit_purchase` takes it. `intent` is the intent
    as read before (its user and credits, which `postings` and `facts` come from, never
    change)."""

    intent: Intent
    received: int
    postings: list[Posting]
    description: str
    attempt: Attempt
    actor: Actor
    facts: dict[str, Any]


async def credit(conn: asyncpg.Connection | asyncpg.Pool, call: CreditCall) -> CreditRow:
    """Credit `call.intent` by `call.attempt.signature` in one round trip (see
    `_CREDIT_SQL`), in the caller's transaction; the returned intent carries the status the
    locked row had."""
    attempt = call.attempt
    row = await conn.fetchrow(
        _CREDIT_SQL,
        call.intent.id,
        attempt.signature,
        call.received,
        [p.account for p in call.postings],
        [p.amount for p in call.postings],
        call.description,
        call.actor.id,
        call.actor.source,
        call.facts,
        attempt.source,
        attempt.code,
        attempt.detail,
        attempt.request_id,
    )
    assert row is not None
    return _credit_row(call.intent, row)


def _credit_row(intent: Intent, row: Any) -> CreditRow:
    if row["outcome"] == "missing":
        return CreditRow("missing", None, 0)
    received = row["received_amount"]
    # `replace(intent, ...)` spelled out: it looks up the fields on every call, on the path
    # of every credit
    now = Intent(
        id=intent.id,
        user_id=intent.user_id,
        credits=intent.credits,
        amount=intent.amount,
        mint=intent.mint,
        token_program=intent.token_program,
        recipient=intent.recipient,
        recipient_token_account=intent.recipient_token_account,
        reference=intent.reference,
        memo=intent.memo,
        wallet=intent.wallet,
        status=IntentStatus(row["status"]),
        tx_signature=row["tx_signature"],
        received_amount=None if received is None else int(received),
        reject_code=row["reject_code"],
        created_at=intent.created_at,
        expires_at=intent.expires_at,
        confirmed_at=row["confirmed_at"],
    )
    return CreditRow(str(row["outcome"]), now, int(row["balance"] or 0))


# Several credits in one call (`payops_credit_purchases`, migration 0015), each in a
# subtransaction of its own: one row per call, in order.
_CREDIT_GROUP_SQL = """SELECT outcome, status, tx_signature, reject_code, received_amount,
        confirmed_at, balance, error_state, error_constraint, error_message
    FROM payops_credit_purchases($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
    ORDER BY idx"""


@dataclass(frozen=True, slots=True)
class CreditError:
    """A call of a group that raised in the database: rolled back alone, nothing written."""

    state: str
    constraint: str | None
    message: str


async def credit_group(
    conn: asyncpg.Connection, calls: list[CreditCall]
) -> list[CreditRow | CreditError]:
    """The credits of `calls` in one round trip, in the caller's transaction: what `credit`
    would answer for each, or the error that rolled that one back alone."""
    rows = await conn.fetch(
        _CREDIT_GROUP_SQL,
        [c.intent.id for c in calls],
        [c.attempt.signature for c in calls],
        [c.received for c in calls],
        [len(c.postings) for c in calls],
        [p.account for c in calls for p in c.postings],
        [p.amount for c in calls for p in c.postings],
        [c.description for c in calls],
        [c.actor.id for c in calls],
        [c.actor.source for c in calls],
        [c.facts for c in calls],
        [c.attempt.source for c in calls],
        [c.attempt.code for c in calls],
        [c.attempt.detail for c in calls],
        [c.attempt.request_id for c in calls],
    )
    if len(rows) != len(calls):
        raise RuntimeError(f"a credit group of {len(calls)} answered {len(rows)} rows")
    return [
        CreditError(r["error_state"], r["error_constraint"], r["error_message"])
        if r["outcome"] == "error"
        else _credit_row(c.intent, r)
        for c, r in zip(calls, rows, strict=True)
    ]


async def bound_inflows(conn: asyncpg.Connection | asyncpg.Pool, intent_id: uuid.UUID) -> list[str]:
    """Signatures of the inflows the treasury watcher recorded bound to the intent, oldest
    first."""
    rows = await conn.fetch(
        """SELECT signature FROM treasury_flows
           WHERE intent_id = $1 AND amount > 0 ORDER BY slot, signature""",
        intent_id,
    )
    return [r["signature"] for r in rows]


async def refused_signatures(
    conn: asyncpg.Connection | asyncpg.Pool, intent_id: uuid.UUID
) -> dict[str, tuple[str, str]]:
    """Signatures refused for this intent before (by anyone): signature -> (outcome, code),
    the first refusal of each."""
    rows = await conn.fetch(
        """SELECT DISTINCT ON (signature) signature, outcome, coalesce(code, outcome) AS code
           FROM verification_attempts
           WHERE intent_id = $1 AND outcome IN ('rejected', 'conflict')
           ORDER BY signature, id""",
        intent_id,
    )
    return {r["signature"]: (r["outcome"], r["code"]) for r in rows}


# Duplicates' attempts (each intent already credited by that signature) and the balance of
# each of their users, committed with `synchronous_commit = off` for this transaction only
# (`set_config(..., true)` lasts until the statement's implicit transaction ends, so the
# pooled connection keeps the server's setting). The commit does not wait for its WAL flush:
# a crash of the database within a few hundred milliseconds could lose the last duplicates'
# attempt rows, never a credit, a state change or an audit record (none is written here),
# and never leaves the database inconsistent (asynchronous commit loses whole transactions,
# in order).
_DUPLICATES_AND_BALANCES = """
    WITH attempt AS (
        INSERT INTO verification_attempts
            (intent_id, user_id, signature, source, outcome, code, detail, request_id)
        SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                             $6::text[], $7::text[], $8::text[])
    )
    SELECT u.user_id, coalesce(b.balance, 0) AS balance,
           set_config('synchronous_commit', 'off', true)
    FROM (SELECT DISTINCT unnest($2::text[]) AS user_id) u
    LEFT JOIN user_balances b ON b.user_id = u.user_id"""


async def record_duplicates(
    conn: asyncpg.Connection | asyncpg.Pool, duplicates: list[tuple[Intent, Attempt]]
) -> dict[str, int]:
    """Record duplicates' attempts, outside any transaction, committed without waiting for
    the WAL flush (see `_DUPLICATES_AND_BALANCES`), in one round trip; each of their users'
    balance now."""
    columns: list[list[Any]] = [[] for _ in range(8)]
    for intent, attempt in duplicates:
        row = (
            intent.id,
            intent.user_id,
            attempt.signature,
            attempt.source,
            attempt.outcome,
            attempt.code,
            attempt.detail,
            attempt.request_id,
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    rows = await conn.fetch(_DUPLICATES_AND_BALANCES, *columns)
    return {r["user_id"]: int(r["balance"]) for r in rows}
