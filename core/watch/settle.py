"""Settling what the treasury watcher found: each inflow bound to an intent goes through the
verify rules and the exactly-once credit of a verify (`purchases.verify_detected`, attempts
with source 'watcher'); once that reaches a final outcome the flow is settled with it. One
intent's flows are settled in order, so that short payments add up (a top-up); different
intents concurrently, a bounded number at a time. A flow left unsettled (the gate was
closed, the payment was not final, the process died) is taken up by the next poll.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from core import purchases
from core.audit import Actor
from core.errors import Conflict, InvalidInput, NotFound, Unprocessable, VerifyPaused
from core.services import Services
from core.watch import store
from core.watch.report import PollReport

log = logging.getLogger("payops.watch")

UNSETTLED_BATCH = 100
SETTLE_CONCURRENCY = 8  # intents credited at once


async def settle_unsettled(svc: Services, actor: Actor, account: str, report: PollReport) -> None:
    await settle_many(svc, actor, await store.unsettled(svc.pool, account, UNSETTLED_BATCH), report)


async def settle_many(
    svc: Services, actor: Actor, flows: list[store.RecordedFlow], report: PollReport
) -> None:
    """Settle `flows`: one intent's in order (a top-up adds up the earlier parts), different
    intents concurrently, a bounded number at a time."""
    by_intent: dict[uuid.UUID, list[store.RecordedFlow]] = {}
    for flow in flows:
        assert flow.intent_id is not None
        by_intent.setdefault(flow.intent_id, []).append(flow)
    if not by_intent:
        return
    # Flows are settled by this poll only: what the settled short ones brought in is read
    # once, and each of this batch's own short ones adds to it as it is settled.
    paid = await store.partial_totals(svc.pool, list(by_intent))
    limit = asyncio.Semaphore(SETTLE_CONCURRENCY)

    async def one_intent(intent_id: uuid.UUID, ordered: list[store.RecordedFlow]) -> None:
        paid_before = paid.get(intent_id, 0)
        async with limit:
            for flow in ordered:
                if await _settle(svc, actor, flow, report, paid_before) == "partial":
                    paid_before += flow.amount
                if report.stopped is not None:
                    return

    await asyncio.gather(*(one_intent(i, ordered) for i, ordered in by_intent.items()))


async def _settle(
    svc: Services, actor: Actor, flow: store.RecordedFlow, report: PollReport, paid_before: int
) -> str | None:
    """Put a bound inflow through the verify; settle it once the outcome is final, and say
    which (None: not final yet).

    `paid_before`: what earlier payments to the same intent that were valid but short
    brought in; with them this one may complete its price (a top-up). A short one is kept
    as 'partial'."""
    assert flow.intent_id is not None
    try:
        result = await purchases.verify_detected(
            svc, actor, flow.intent_id, flow.signature, paid_before=paid_before
        )
    except VerifyPaused:
        report.stopped = "verify gate closed: detected payments wait for it to reopen"
        return None
    except (Conflict, Unprocessable, InvalidInput, NotFound) as exc:
        outcome = f"refused:{exc.code}"
        if exc.code == "underpaid":
            part = await purchases.partial_payment(svc, flow.intent_id, flow.signature)
            outcome = "partial" if part is not None else outcome
        log.info(
            "detected payment not credited: %s (%s)",
            exc,
            outcome,
            extra={"intent_id": str(flow.intent_id), "tx_signature": flow.signature},
        )
    else:
        if isinstance(result, purchases.StillPending):
            return None  # not final yet: the next poll takes it up again
        outcome = "duplicate" if result.duplicate else "credited"
        if not result.duplicate:
            report.credited += 1
            report.credited_intents.append(str(flow.intent_id))
            if flow.block_time is not None:
                lag = (svc.clock() - flow.block_time).total_seconds()
                svc.metrics.watch_detection.observe(max(0.0, lag))
    await store.settle(svc.pool, flow.signature, outcome)
    report.settled += 1
    return outcome
