"""The deploy-day smoke test as one operation (`/pay-smoke`, `payops ops smoke`).

The runbook's after-deploy checklist: create a test purchase intent, verify it with a known
valid transaction path, confirm the credit increment, confirm a duplicate verify does not
double-credit, check the route logs and metrics. It runs against the real verifier (the
configured RPC and the real rules) and the real credit SQL, inside one database transaction
that is always rolled back, so no test credit is ever left in the ledger.

The known-valid path is a payment the operators made once to the treasury with a reference
key of its own (`PAYOPS_SMOKE_SIGNATURE`, `PAYOPS_SMOKE_REFERENCE`, `PAYOPS_SMOKE_AMOUNT`);
it is never credited to anyone. `payops up` makes one on the local chain.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from core import audit, db, ledger, purchases
from core.audit import Actor
from core.chain.verdict import Confirmed, describe_verdict
from core.purchases import Intent, IntentStatus, credit_in, expectation
from core.services import Services

log = logging.getLogger("payops.smoke")

# The smoke intent predates any real payment so the rules judge only binding and amount.
_SMOKE_CREATED = datetime(2020, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class SmokeCheck:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class SmokeResult:
    run_id: int
    passed: bool
    checks: list[SmokeCheck]
    started_at: datetime
    finished_at: datetime


Check = Callable[[str, bool, str], None]


class _Abort(Exception):
    """A failed check: stop the run (the transaction rolls back)."""


def _smoke_intent(svc: Services, now: datetime) -> Intent:
    s = svc.settings
    assert s.smoke_reference is not None
    assert s.smoke_amount is not None
    intent_id = uuid.uuid4()
    return Intent(
        id=intent_id,
        user_id=f"smoke:{intent_id}",
        credits=1,
        amount=s.smoke_amount,
        mint=svc.payment.mint,
        token_program=svc.payment.token_program,
        recipient=svc.payment.treasury_owner,
        recipient_token_account=svc.payment.treasury_token_account,
        reference=s.smoke_reference,
        memo=str(intent_id),
        wallet=None,
        status=IntentStatus.PENDING,
        tx_signature=None,
        received_amount=None,
        reject_code=None,
        created_at=_SMOKE_CREATED,
        expires_at=now + timedelta(days=1),
        confirmed_at=None,
    )


async def run_smoke(svc: Services, actor: Actor) -> SmokeResult:
    """Run the checklist, record the run (and its audit record), return the result."""
    started = svc.clock()
    checks: list[SmokeCheck] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append(SmokeCheck(name, ok, detail))
        if not ok:
            raise _Abort(name)

    s = svc.settings
    try:
        check(
            "known-valid transaction configured",
            bool(s.smoke_signature and s.smoke_reference and s.smoke_amount),
            "PAYOPS_SMOKE_SIGNATURE, PAYOPS_SMOKE_REFERENCE and PAYOPS_SMOKE_AMOUNT are set"
            if s.smoke_signature
            else "set PAYOPS_SMOKE_SIGNATURE, PAYOPS_SMOKE_REFERENCE and PAYOPS_SMOKE_AMOUNT",
        )
        await _checklist(svc, actor, check)
    except _Abort:
        pass
    except db.DATABASE_ERRORS as exc:
        checks.append(SmokeCheck("database", False, f"{type(exc).__name__}: {exc}"))
    passed = bool(checks) and all(c.ok for c in checks)
    finished = svc.clock()
    run_id = await _record(svc, actor, passed, checks, started, finished)
    return SmokeResult(run_id, passed, checks, started, finished)


async def _checklist(svc: Services, actor: Actor, check: Check) -> None:
    s = svc.settings
    assert s.smoke_signature is not None
    smoke_actor = Actor(f"smoke:{actor.id}", actor.source, actor.request_id)
    async with svc.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            intent = _smoke_intent(svc, svc.clock())
            await purchases.insert(conn, intent)
            check("test purchase intent created", True, f"intent {intent.id} for {intent.user_id}")

            verdict = await svc.verifier.verify(s.smoke_signature, expectation(intent), svc.clock())
            check(
                "verify with a known valid tx path",
                isinstance(verdict, Confirmed),
                f"{s.smoke_signature[:16]}...: {describe_verdict(verdict)}",
            )
            assert isinstance(verdict, Confirmed)

            before = await ledger.balance(conn, intent.user_id)
            _, after, duplicate = await credit_in(
                conn, smoke_actor, intent, s.smoke_signature, verdict
            )
            check(
                "expected credit increment",
                after - before == intent.credits and not duplicate,
                f"balance {before} -> {after} (expected +{intent.credits})",
            )

            _, again, duplicate = await credit_in(
                conn, smoke_actor, intent, s.smoke_signature, verdict
            )
            credits = await conn.fetchval(
                "SELECT count(*) FROM ledger_transactions WHERE intent_id = $1", intent.id
            )
            check(
                "duplicate verify does not double-credit",
                duplicate and again == after and credits == 1,
                f"second verify: duplicate={duplicate}, balance {again}, credits {credits}",
            )
        finally:
            await tx.rollback()
        left = await conn.fetchval("SELECT count(*) FROM purchase_intents WHERE id = $1", intent.id)
        check("no test credit left in the ledger", left == 0, "the smoke transaction rolled back")
    check("route logs and metrics", *_metrics_flowing(svc))


def _metrics_flowing(svc: Services) -> tuple[bool, str]:
    """Metrics collect, and the JSON log handler is installed (route logs reach stderr)."""
    seen: dict[str, float] = {}
    for family in svc.metrics.registry.collect():
        if family.name == "payops_http_requests":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    route = sample.labels.get("route", "")
                    seen[route] = seen.get(route, 0) + sample.value
    from core.logs import installed

    logs = installed()
    detail = (
        f"requests so far: purchase-intents={int(seen.get('purchase-intents', 0))}, "
        f"credits={int(seen.get('credits', 0))}; route logs {'on' if logs else 'OFF'}"
    )
    return logs, detail


async def _record(
    svc: Services,
    actor: Actor,
    passed: bool,
    checks: list[SmokeCheck],
    started: datetime,
    finished: datetime,
) -> int:
    async with svc.pool.acquire() as conn, conn.transaction():
        run_id = await conn.fetchval(
            """INSERT INTO smoke_runs (actor, source, started_at, finished_at, passed, checks)
               VALUES ($1, $2, $3, $4, $5, $6) RETURNING id""",
            actor.id,
            actor.source,
            started,
            finished,
            passed,
            [asdict(c) for c in checks],
        )
        await audit.record(
            conn,
            actor,
            action="smoke.run",
            subject=f"smoke:{run_id}",
            after={"passed": passed, "failed": [c.name for c in checks if not c.ok]},
        )
    return int(run_id)


async def last_passed_at(conn: asyncpg.Connection | asyncpg.Pool) -> datetime | None:
    value = await conn.fetchval("SELECT max(finished_at) FROM smoke_runs WHERE passed")
    return value if isinstance(value, datetime) else None
