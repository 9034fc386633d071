"""The credit's SQL, written out once for pgbench and once for the bare HTTP handler.

Both mirror `core.purchases.credit_in` statement for statement (keep them in step when it
changes): lock the intent row; insert the ledger transaction (unique per signature and per
intent) and its two entries in one statement (`core.ledger_db.POST_SQL`: the balance-cache
trigger runs per entry, the zero-sum check at commit); mark the intent CONFIRMED, write the
audit record and the verification attempt and read the balance, in four statements
("separate", credit_in today) or in one (`core.intents_db.CONFIRM_SQL`, "combined", the
proposed credit_in); commit. `bench.perf` counts the statements a real `credit_in` sends
and uses the mirror that sends as many (or stops, asking for one).

The synthetic intents they credit are numbered: intent `n` has the id `md5('bench' || n)`,
belongs to `bench-user-{n % users}` and is paid by the (made-up) signature `bench-sig-{n}`,
so pgbench, which cannot compute a uuid, derives the same values as Python does.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from core import ledger, purchases

SALES_ACCOUNT = "system:token_sales"
PRICE = 10_000  # base units per credit in the synthetic intents

_INTENT_COLUMNS = """id, user_id, credits, amount, mint, token_program, recipient,
    recipient_token_account, reference, memo, wallet, status, tx_signature, received_amount,
    reject_code, created_at, expires_at, confirmed_at"""


def intent_id(n: int) -> uuid.UUID:
    return uuid.UUID(hashlib.md5(f"bench{n}".encode(), usedforsecurity=False).hexdigest())


def signature(n: int) -> str:
    return f"bench-sig-{n}"


def user_id(i: int) -> str:
    return f"bench-user-{i}"


async def create_users(conn: asyncpg.Connection, users: int) -> None:
    """The bench users' accounts exist beforehand: every credit is a returning customer's."""
    await conn.execute(
        """INSERT INTO accounts (kind, name, user_id)
           SELECT 'user', 'user:bench-user-' || u, 'bench-user-' || u
           FROM generate_series(0, $1 - 1) u
           ON CONFLICT DO NOTHING""",
        users,
    )


async def create_intents(conn: asyncpg.Connection, first: int, count: int, users: int) -> None:
    """PENDING intents `first .. first + count - 1`, one statement."""
    await conn.execute(
        f"""INSERT INTO purchase_intents (id, user_id, credits, amount, mint, token_program,
               recipient, recipient_token_account, reference, memo, status, created_at,
               expires_at)
           SELECT md5('bench' || n)::uuid, 'bench-user-' || (n % $3), 1, {PRICE},
                  'bench-mint', 'bench-program', 'bench-treasury', 'bench-treasury-ata',
                  'bench-ref-' || n, md5('bench' || n)::uuid::text, 'PENDING', now(),
                  now() + interval '1 day'
           FROM generate_series($1::bigint, $1::bigint + $2 - 1) n""",  # noqa: S608 (constant)
        first,
        count,
        users,
    )


# --- pgbench ------------------------------------------------------------------------------

# Variables: n (this transaction's intent number) is derived from the client id and an
# iteration counter kept per client, so the clients never credit the same intent.
# `sales` and `uprefix` come from -D: pgbench would read ":token_sales" as a variable.
_PGBENCH_HEAD = """\\set iter :iter + 1
\\set n :base + :client_id + :nclients * :iter
BEGIN;
"""
_PGBENCH_LOCK = f"""SELECT {_INTENT_COLUMNS}
  FROM purchase_intents WHERE id = md5('bench' || :n)::uuid FOR UPDATE \\gset i_
"""  # noqa: S608 (constants only)
_PGBENCH_POST = """WITH tx AS (
    INSERT INTO ledger_transactions (kind, intent_id, purchase_signature, idempotency_key,
        reverses_id, description, created_by)
    VALUES ('purchase', :i_id, 'bench-sig-' || :n, NULL, NULL,
        'purchase of ' || :i_credits || ' credits, intent ' || :i_id, :i_user_id)
    RETURNING id
), postings AS (
    SELECT p.ordinal, p.amount, a.id AS account_id
    FROM unnest(ARRAY[:uprefix || :i_user_id, :sales]::text[],
                ARRAY[(:i_credits)::bigint, -(:i_credits)::bigint])
         WITH ORDINALITY AS p(name, amount, ordinal)
    LEFT JOIN accounts a ON a.name = p.name
), entries AS (
    INSERT INTO ledger_entries (transaction_id, account_id, amount)
    SELECT tx.id, postings.account_id, postings.amount
    FROM tx, postings WHERE postings.account_id IS NOT NULL
    ORDER BY postings.ordinal
)
SELECT (SELECT id FROM tx) AS id,
       array(SELECT ordinal FROM postings WHERE account_id IS NULL ORDER BY ordinal)
           AS missing;
"""
_PGBENCH_AUDIT_AFTER = """jsonb_build_object('status', 'CONFIRMED',
      'tx_signature', 'bench-sig-' || :n, 'credits', (:i_credits)::bigint,
      'expected_amount', (:i_amount)::text, 'received_amount', (:i_amount)::text,
      'payer', 'bench-payer', 'slot', 1, 'overpaid', false, 'late', false)"""
# credit_in today: the confirmation, the audit record, the attempt and the balance one by one.
_PGBENCH_CONFIRM_SEPARATE = f"""UPDATE purchase_intents SET status = 'CONFIRMED',
    tx_signature = 'bench-sig-' || :n, received_amount = :i_amount, confirmed_at = now(),
    updated_at = now()
  WHERE id = :i_id;
INSERT INTO audit_log (actor, source, action, subject, before, after, request_id)
  VALUES (:i_user_id, 'api', 'intent.confirm', 'intent:' || :i_id, '{{"status": "PENDING"}}',
    {_PGBENCH_AUDIT_AFTER}, 'bench-request');
INSERT INTO verification_attempts (intent_id, user_id, signature, source, outcome, code,
    detail, request_id)
  VALUES (:i_id, :i_user_id, 'bench-sig-' || :n, 'api', 'confirmed', NULL,
    'received ' || :i_amount || ' at slot 1', 'bench-request');
SELECT balance FROM user_balances WHERE user_id = :i_user_id;
"""  # noqa: S608 (constants only)
# credit_in with the proposed `purchases.confirm` (`core.intents_db.CONFIRM_SQL`).
_PGBENCH_CONFIRM_COMBINED = f"""WITH confirmed AS (
    UPDATE purchase_intents SET status = 'CONFIRMED', tx_signature = 'bench-sig-' || :n,
        received_amount = :i_amount, confirmed_at = now(), updated_at = now()
    WHERE id = :i_id RETURNING confirmed_at
), attempt AS (
    INSERT INTO verification_attempts
        (intent_id, user_id, signature, source, outcome, code, detail, request_id)
    VALUES (:i_id, :i_user_id, 'bench-sig-' || :n, 'api', 'confirmed', NULL,
        'received ' || :i_amount || ' at slot 1', 'bench-request')
), audit AS (
    INSERT INTO audit_log (actor, source, action, subject, before, after, request_id)
    VALUES (:i_user_id, 'api', 'intent.confirm', 'intent:' || :i_id, '{{"status": "PENDING"}}',
        {_PGBENCH_AUDIT_AFTER}, 'bench-request')
)
SELECT (SELECT confirmed_at FROM confirmed) AS confirmed_at,
       coalesce((SELECT balance FROM user_balances WHERE user_id = :i_user_id), 0) AS balance;
"""  # noqa: S608 (constants only)


def pgbench_defines(*, base: int, clients: int) -> list[str]:
    """The -D arguments for a pgbench script crediting intents from `base` on."""
    values = {
        "iter": 0,
        "base": base,
        "nclients": clients,
        "sales": SALES_ACCOUNT,
        "uprefix": "user:",
    }
    return [arg for k, v in values.items() for arg in ("-D", f"{k}={v}")]


# --- the bare handler (asyncpg) -----------------------------------------------------------

_LOCK = f"SELECT {_INTENT_COLUMNS} FROM purchase_intents WHERE id = $1 FOR UPDATE"  # noqa: S608
_CONFIRM = """UPDATE purchase_intents SET status = 'CONFIRMED', tx_signature = $2,
               received_amount = $3, confirmed_at = now(), updated_at = now()
           WHERE id = $1"""
_AUDIT = """INSERT INTO audit_log (actor, source, action, subject, before, after, request_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7)"""
_ATTEMPT = """INSERT INTO verification_attempts
               (intent_id, user_id, signature, source, outcome, code, detail, request_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"""
_BALANCE = "SELECT balance FROM user_balances WHERE user_id = $1"


def _audit_after(sig: str, credits: int, amount: Any) -> dict[str, Any]:
    return {
        "status": "CONFIRMED",
        "tx_signature": sig,
        "credits": credits,
        "expected_amount": str(amount),
        "received_amount": str(amount),
        "payer": "bench-payer",
        "slot": 1,
        "overpaid": False,
        "late": False,
    }


async def _lock_and_post(conn: asyncpg.Connection, n: int) -> asyncpg.Record:
    row = await conn.fetchrow(_LOCK, intent_id(n))
    if row is None or row["status"] != "PENDING":
        raise LookupError(f"bench intent {n} is missing or not pending")
    user, credits = row["user_id"], row["credits"]
    await conn.fetchrow(
        ledger.POST_SQL,
        "purchase",
        row["id"],
        signature(n),
        None,  # idempotency scope, principal, key: a purchase has none
        None,
        None,
        None,  # reverses
        f"purchase of {credits} credits, intent {row['id']}",
        user,
        [f"user:{user}", SALES_ACCOUNT],
        [credits, -credits],
    )
    return row


async def _credit_separate(conn: asyncpg.Connection, n: int) -> int:
    row = await _lock_and_post(conn, n)
    sig, user, amount = signature(n), row["user_id"], row["amount"]
    await conn.execute(_CONFIRM, row["id"], sig, amount)
    await conn.execute(
        _AUDIT,
        user,
        "api",
        "intent.confirm",
        f"intent:{row['id']}",
        {"status": "PENDING"},
        _audit_after(sig, row["credits"], amount),
        "bench-request",
    )
    await conn.execute(
        _ATTEMPT,
        row["id"],
        user,
        sig,
        "api",
        "confirmed",
        None,
        f"received {amount} at slot 1",
        "bench-request",
    )
    return int(await conn.fetchval(_BALANCE, user) or 0)


async def _credit_combined(conn: asyncpg.Connection, n: int) -> int:
    row = await _lock_and_post(conn, n)
    sig, user, amount = signature(n), row["user_id"], row["amount"]
    confirmed = await conn.fetchrow(
        purchases.CONFIRM_SQL,
        row["id"],
        sig,
        amount,
        user,
        "api",
        "confirmed",
        None,
        f"received {amount} at slot 1",
        "bench-request",
        user,
        "api",
        {"status": "PENDING"},
        _audit_after(sig, row["credits"], amount),
    )
    assert confirmed is not None
    return int(confirmed["balance"])


# --- the mirrors, by what credit_in sends --------------------------------------------------


@dataclass(frozen=True)
class Mirror:
    """The credit's SQL as pgbench and the bare handler send it, for a credit_in that sends
    `statements` statements between BEGIN and COMMIT."""

    name: str
    statements: int
    pgbench_script: str
    credit: Callable[[asyncpg.Connection, int], Awaitable[int]]


MIRRORS = {
    m.name: m
    for m in (
        # credit_in as it is: lock, post, confirm, audit, attempt, balance
        Mirror(
            "separate",
            6,
            "".join((_PGBENCH_HEAD, _PGBENCH_LOCK, _PGBENCH_POST, _PGBENCH_CONFIRM_SEPARATE))
            + "END;\n",
            _credit_separate,
        ),
        # with the proposed purchases.confirm: lock, post, confirm (+ attempt, audit, balance)
        Mirror(
            "combined",
            3,
            "".join((_PGBENCH_HEAD, _PGBENCH_LOCK, _PGBENCH_POST, _PGBENCH_CONFIRM_COMBINED))
            + "END;\n",
            _credit_combined,
        ),
    )
}


def mirror_for(statements: int) -> Mirror:
    """The mirror of a credit_in that sends `statements` statements."""
    for mirror in MIRRORS.values():
        if mirror.statements == statements:
            return mirror
    raise LookupError(
        f"credit_in sends {statements} statements and no mirror in bench/perf_sql.py does: "
        "write the pgbench and bare-handler SQL for it"
    )


def json_body(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
