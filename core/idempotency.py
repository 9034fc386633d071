"""Idempotency keys: the same key with the same request gives the same stored response.

The key row is inserted first, in the same database transaction as the work it guards, so
a concurrent request with the same key waits on the unique index until the first commits
(then replays its response) or rolls back (then does the work itself). A failed request
stores nothing, so the client may retry it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from core.audit import canonical_json
from core.errors import InvalidInput, Unprocessable

MAX_KEY_LENGTH = 200


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: dict[str, Any]
    replayed: bool = False


def request_hash(request: Any) -> str:
    return hashlib.sha256(canonical_json(request).encode()).hexdigest()


def check_key(key: str) -> str:
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidInput(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters",
            code="invalid_idempotency_key",
        )
    return key


async def run_once(
    pool: asyncpg.Pool,
    *,
    scope: str,
    principal: str,
    key: str,
    request: Any,
    work: Callable[[asyncpg.Connection], Awaitable[Response]],
) -> Response:
    """Run `work` once per (scope, principal, key); replay its response afterwards."""
    digest = request_hash(request)
    async with pool.acquire() as conn, conn.transaction():
        claimed = await conn.fetchval(
            """INSERT INTO idempotency_keys (scope, principal, key, request_hash, status, response)
               VALUES ($1, $2, $3, $4, 0, 'null'::jsonb)
               ON CONFLICT DO NOTHING RETURNING true""",
            scope,
            principal,
            check_key(key),
            digest,
        )
        if not claimed:
            row = await conn.fetchrow(
                """SELECT request_hash, status, response FROM idempotency_keys
                   WHERE scope = $1 AND principal = $2 AND key = $3""",
                scope,
                principal,
                key,
            )
            assert row is not None  # the conflicting insert committed, or we would have won
            if row["request_hash"] != digest:
                raise Unprocessable(
                    "this Idempotency-Key was used with a different request",
                    code="idempotency_key_reused",
                )
            return Response(row["status"], row["response"], replayed=True)
        result = await work(conn)
        await conn.execute(
            """UPDATE idempotency_keys SET status = $4, response = $5
               WHERE scope = $1 AND principal = $2 AND key = $3""",
            scope,
            principal,
            key,
            result.status,
            result.body,
        )
        return result
