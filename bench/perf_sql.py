"""The credit's SQL, written out once for pgbench and once for the bare HTTP handler.

Both mirror `core.purchases.credit_in` statement for statement (keep them in step when it
changes). Today that is one call of `payops_credit_purchase` (migration 0013) between BEGIN and
COMMIT: lock the intent row and re-check it,
post the ledger transaction and its two entries (`payops_ledger_post`: the balance-cache
trigger runs per entry, the zero-sum check at commit), mark the intent CONFIRMED, write the
verification attempt and the audit record, read the balance. `bench.perf` counts the
statements a real `credit_in` sends and uses the mirror that sends as many (or stops, asking
for one); the mirrors of earlier `credit_in`s (six and three statements between BEGIN and
COMMIT) are in the history of this file.

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
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from core.purchases import Intent, IntentStatus

SALES_ACCOUNT = "system:token_sales"
PRICE = 10_000  # base units per credit in the synthetic intents


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


def bench_intent(n: int, users: int) -> Intent:
    """Synthetic intent `n` as `create_intents` stored it (its times are not read by a credit)."""
    now = datetime.now(UTC)
    return Intent(
        id=intent_id(n),
        user_id=user_id(n % users),
        credits=1,
        amount=PRICE,
        mint="bench-mint",
        token_program="bench-program",  # noqa: S106 (not a secret)
        recipient="bench-treasury",
        recipient_token_account="bench-treasury-ata",  # noqa: S106 (not a secret)
        reference=f"bench-ref-{n}",
        memo=str(intent_id(n)),
        wallet=None,
        status=IntentStatus.PENDING,
        tx_signature=None,
        received_amount=None,
        reject_code=None,
        created_at=now,
        expires_at=now + timedelta(days=1),
        confirmed_at=None,
    )


# --- pgbench ------------------------------------------------------------------------------

# Variables: n (this transaction's intent number) is derived from the client id and an
# iteration counter kept per client, so the clients never credit the same intent; u is its
# user's number. `sales` and `uprefix` come from -D: pgbench would read ":token_sales" as a
# variable.
_PGBENCH_HEAD = """\\set iter :iter + 1
\\set n :base + :client_id + :nclients * :iter
\\set u :n % :users
BEGIN;
"""
_PGBENCH_ONE_CALL = f"""SELECT outcome, status, tx_signature, reject_code, received_amount,
    confirmed_at, balance
  FROM payops_credit_purchase(md5('bench' || :n)::uuid, 'bench-sig-' || :n, {PRICE},
    ARRAY[:uprefix || 'bench-user-' || :u, :sales]::text[], ARRAY[1, -1]::bigint[],
    'purchase of 1 credits, intent ' || md5('bench' || :n)::uuid, 'bench-user-' || :u, 'api',
    jsonb_build_object('status', 'CONFIRMED', 'tx_signature', 'bench-sig-' || :n,
      'credits', 1, 'expected_amount', '{PRICE}', 'received_amount', '{PRICE}',
      'payer', 'bench-payer', 'slot', 1, 'overpaid', false, 'late', false),
    'api', NULL, 'received {PRICE} at slot 1', 'bench-request');
END;
"""  # noqa: S608 (constants only)


def pgbench_defines(*, base: int, clients: int, users: int) -> list[str]:
    """The -D arguments for a pgbench script crediting intents from `base` on."""
    values = {
        "iter": 0,
        "base": base,
        "nclients": clients,
        "users": users,
        "sales": SALES_ACCOUNT,
        "uprefix": "user:",
    }
    return [arg for k, v in values.items() for arg in ("-D", f"{k}={v}")]


# --- the bare handler (asyncpg) -----------------------------------------------------------

_ONE_CALL = """SELECT outcome, status, tx_signature, reject_code, received_amount,
        confirmed_at, balance
    FROM payops_credit_purchase($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"""


def _audit_after(sig: str) -> dict[str, Any]:
    return {
        "status": "CONFIRMED",
        "tx_signature": sig,
        "credits": 1,
        "expected_amount": str(PRICE),
        "received_amount": str(PRICE),
        "payer": "bench-payer",
        "slot": 1,
        "overpaid": False,
        "late": False,
    }


async def _credit_one_call(conn: asyncpg.Connection, n: int, users: int) -> int:
    sig, user, intent = signature(n), user_id(n % users), intent_id(n)
    row = await conn.fetchrow(
        _ONE_CALL,
        intent,
        sig,
        PRICE,
        [f"user:{user}", SALES_ACCOUNT],
        [1, -1],
        f"purchase of 1 credits, intent {intent}",
        user,
        "api",
        _audit_after(sig),
        "api",
        None,
        f"received {PRICE} at slot 1",
        "bench-request",
    )
    if row is None or row["outcome"] != "credited":
        raise LookupError(f"bench intent {n} is missing or not pending")
    return int(row["balance"])


# --- the mirrors, by what credit_in sends --------------------------------------------------


@dataclass(frozen=True)
class Mirror:
    """The credit's SQL as pgbench and the bare handler send it, for a credit_in that sends
    `statements` statements between BEGIN and COMMIT."""

    name: str
    statements: int
    pgbench_script: str
    credit: Callable[[asyncpg.Connection, int, int], Awaitable[int]]


MIRRORS = {
    m.name: m
    for m in (
        # credit_in as it is: BEGIN, one call, COMMIT
        Mirror("one-call", 1, _PGBENCH_HEAD + _PGBENCH_ONE_CALL, _credit_one_call),
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
