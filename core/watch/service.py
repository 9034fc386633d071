"""The treasury watcher: every payment to the treasury found within seconds, credited unasked.

One poll (`poll`) reads the treasury token account's history newer than the durable cursor
(`getSignaturesForAddress(account, until=cursor)`, paging back with `before` until the cursor
is reached), fetches each new transaction once (`getTransaction`, at the configured
commitment), and records, oldest first, each one that changed the account's balance of the
mint as a flow — in the same database transaction that moves the cursor past it. A crash, a
restart, a change of leader or an RPC outage therefore loses nothing (the cursor has not
moved past what was not recorded) and records nothing twice (the flow's primary key).

An inflow bound to an intent (its reference among the account keys, or its id in a memo) is
then put through the verify rules and the exactly-once credit of a verify
(`purchases.verify_detected`, attempts with source 'watcher'); once that reaches a final
outcome the flow is settled (`settle`). A flow left unsettled (the gate was closed, the
process died, the payment was not final) is taken up again by the next poll.

`run` keeps one watcher across replicas (`jobs.lead`): a replica polls only while it holds
the watcher's PostgreSQL advisory lock on a connection of its own; when that replica dies the
server releases the lock and another takes over at its next try.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

import asyncpg

from core import jobs
from core.audit import Actor
from core.chain.rpc import RpcUnavailable
from core.chain.transfers import MalformedTransaction, parse_transaction
from core.services import Services
from core.watch import rules, settle, store
from core.watch.report import PollReport

log = logging.getLogger("payops.watch")

WATCHER_ACTOR = Actor("watcher", "scheduler")
WATCHER_LOCK = "watcher"
PAGE = 1000  # getSignaturesForAddress's largest page
RECORD_CHUNK = 100  # transactions recorded per database transaction (and cursor move)
FETCH_CONCURRENCY = 16
SIGHT_BATCH = 100  # payments looked at early per poll


class TreasuryHistory(Protocol):
    """The chain calls the watcher makes (`SolanaRpc` has them)."""

    commitment: Any  # the level it reads at (solana-py's Commitment)

    async def get_signatures_for_address(
        self,
        address: str,
        limit: int | None = None,
        before: str | None = None,
        until: str | None = None,
        *,
        commitment: str | None = None,
    ) -> list[dict[str, Any]]: ...

    async def get_transaction(self, signature: str) -> dict[str, Any] | None: ...

    async def get_token_account_balance(self, address: str) -> tuple[int, int]: ...

    async def get_slot(self) -> int: ...

    async def get_confirmed_transaction(self, signature: str) -> dict[str, Any] | None: ...


async def poll(
    svc: Services,
    rpc: TreasuryHistory,
    *,
    actor: Actor = WATCHER_ACTOR,
    page: int = PAGE,
    looked: set[str] | None = None,
) -> PollReport:
    """Read what is new on the treasury token account, record it, credit what it pays.

    `looked`: the signatures this watcher already read at `confirmed` (kept by `run` from
    poll to poll), so that each is read there once, even one that binds no intent."""
    account = svc.payment.treasury_token_account
    report = PollReport()
    cursor = await store.cursor(svc.pool, account)
    try:
        if cursor is None:
            cursor = await _start(svc, rpc, account)
            report.started = True
        await settle.settle_unsettled(svc, actor, account, report)
        if report.stopped is None:
            await _read_new(svc, rpc, actor, cursor, report, page)
        if report.stopped is None and str(rpc.commitment) == "finalized":
            await _sight(svc, rpc, account, report, set() if looked is None else looked)
    except RpcUnavailable as exc:
        report.stopped = f"rpc unavailable: {exc}"
    latest = await store.cursor(svc.pool, account)
    report.cursor_slot = None if latest is None else latest.slot
    return report


async def _start(svc: Services, rpc: TreasuryHistory, account: str) -> store.Cursor:
    """Begin watching: the balance now is the start; history before it is not re-read."""
    newest = await rpc.get_signatures_for_address(account, limit=1)
    balance, slot = await rpc.get_token_account_balance(account)
    signature = str(newest[0]["signature"]) if newest else None
    async with svc.pool.acquire() as conn:
        started = await store.start(conn, account, balance=balance, slot=slot, newest=signature)
    log.info("watching %s from slot %s (balance %s)", account, slot, balance)
    return started


async def _read_new(
    svc: Services,
    rpc: TreasuryHistory,
    actor: Actor,
    cursor: store.Cursor,
    report: PollReport,
    page: int,
) -> None:
    """Record what is new, a chunk at a time: the chunk's transactions fetched concurrently,
    recorded in order in one database transaction that moves the cursor, then its bound
    inflows settled (concurrently across intents, in order within one)."""
    pages = await _pages_since(rpc, cursor.account, cursor.signature, page)
    slots = {str(r["signature"]): int(r.get("slot") or 0) for batch in pages for r in batch}
    new = rules.new_signatures(pages)
    if not new:
        await store.touch(svc.pool, cursor.account)
        return
    for start in range(0, len(new), RECORD_CHUNK):
        chunk = new[start : start + RECORD_CHUNK]
        fetched = await _fetch_all(rpc, [s for s, failed in chunk if not failed])
        bound = await _record_chunk(svc, cursor.account, chunk, fetched, slots, report)
        await settle.settle_many(svc, actor, bound, report)
        if report.stopped is not None:
            return


async def _sight(
    svc: Services, rpc: TreasuryHistory, account: str, report: PollReport, looked: set[str]
) -> None:
    """Payments newer than the final ones, seen at `confirmed`: recorded as sightings so an
    intent's event stream can say "paid, waiting for finality" (nothing is credited before
    the payment is final). Each is fetched once while it is not final: a sighting or
    `looked` (signatures read here before: what binds no intent, outflows) says it was."""
    current = await store.cursor(svc.pool, account)
    until = None if current is None else current.signature
    records = await rpc.get_signatures_for_address(
        account, limit=PAGE, until=until, commitment="confirmed"
    )
    fresh = [str(r["signature"]) for r in records if r.get("err") is None and r.get("signature")]
    looked.intersection_update(fresh)  # what became final since has left the window
    fresh = [s for s in fresh if s not in looked]
    fresh = [s for s in fresh if s not in await store.sighted(svc.pool, fresh)]
    for signature in fresh[:SIGHT_BATCH]:
        raw = await rpc.get_confirmed_transaction(signature)
        looked.add(signature)
        try:
            flow = (
                None
                if raw is None
                else rules.flow_of(parse_transaction(raw), account, svc.payment.mint)
            )
        except MalformedTransaction:
            continue  # judged when final, like any payment
        if flow is None or not flow.inflow:
            continue
        ids = rules.intent_ids_in(flow.memos)
        async with svc.pool.acquire() as conn, conn.transaction():
            for intent_id, _ in await store.bound_intents(conn, flow.account_keys, ids):
                if await store.sight(conn, intent_id, signature, flow.slot, flow.amount):
                    report.seen += 1


async def _pages_since(
    rpc: TreasuryHistory, account: str, until: str | None, size: int
) -> list[list[dict[str, Any]]]:
    """Every signature newer than `until`, in pages (newest first) read back with `before`."""
    pages: list[list[dict[str, Any]]] = []
    before: str | None = None
    while True:
        page = await rpc.get_signatures_for_address(account, limit=size, before=before, until=until)
        if page:
            pages.append(page)
        if len(page) < size:
            return pages
        before = str(page[-1]["signature"])


async def _fetch_all(
    rpc: TreasuryHistory, signatures: list[str]
) -> dict[str, dict[str, Any] | None]:
    """Each transaction once, a bounded number at a time (the RPC client bounds it too)."""
    limit = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def one(signature: str) -> dict[str, Any] | None:
        async with limit:
            return await rpc.get_transaction(signature)

    answers = await asyncio.gather(*(one(s) for s in signatures))
    return dict(zip(signatures, answers, strict=True))


async def _record_chunk(
    svc: Services,
    account: str,
    chunk: list[tuple[str, bool]],
    fetched: dict[str, dict[str, Any] | None],
    slots: dict[str, int],
    report: PollReport,
) -> list[store.RecordedFlow]:
    """Record the chunk's flows in order and move the cursor past the last one recorded, in
    one transaction, stopping at the first transaction that cannot be read (yet). Returns
    the recorded inflows bound to an intent, to settle."""
    bound: list[store.RecordedFlow] = []
    last: tuple[str, int] | None = None
    async with svc.pool.acquire() as conn, conn.transaction():
        for signature, failed in chunk:
            if failed:
                slot = slots[signature]  # a failed transaction moved nothing: pass it
            else:
                read = await _record_one(svc, conn, account, signature, fetched[signature], report)
                if read is None:
                    break
                slot, flow = read
                if flow is not None:
                    bound.append(flow)
            report.read += 1
            last = (signature, slot)
        if last is not None:
            await store.advance(conn, account, *last)
    return bound


async def _record_one(
    svc: Services,
    conn: asyncpg.Connection,
    account: str,
    signature: str,
    raw: dict[str, Any] | None,
    report: PollReport,
) -> tuple[int, store.RecordedFlow | None] | None:
    """Record one transaction's flow (if it changed the treasury) on `conn`: its slot, and
    the flow when it is an inflow bound to an intent; None (and `report.stopped`) when the
    transaction cannot be read, so the cursor stops before it."""
    if raw is None:
        report.stopped = f"{signature} is listed but not yet at the commitment"
        return None
    try:
        tx = parse_transaction(raw)
    except MalformedTransaction as exc:
        # Not a transaction we can read: stop here rather than pass a payment by.
        report.stopped = f"{signature}: unreadable getTransaction answer: {exc}"
        return None
    flow = rules.flow_of(tx, account, svc.payment.mint)
    if flow is None:
        return tx.slot, None
    bound = []
    if flow.inflow:
        ids = rules.intent_ids_in(flow.memos)
        bound = await store.bound_intents(conn, flow.account_keys, ids)
    refs = [ref for _, ref in bound if ref in flow.account_keys]
    intent_id = bound[0][0] if bound else None
    if await store.record(conn, account, flow, intent_id=intent_id, refs=refs):
        report.recorded += 1
        svc.metrics.watch_flows.labels("inflow" if flow.inflow else "outflow").inc()
    if intent_id is None:
        return tx.slot, None
    recorded = store.RecordedFlow(
        signature=flow.signature,
        slot=flow.slot,
        block_time=flow.block_time,
        amount=flow.amount,
        payer=flow.payer,
        intent_id=intent_id,
        settled=False,
    )
    return tx.slot, recorded


CHAIN_SLOT_EVERY = 10  # rounds between two reads of the chain's slot (a metric only)


async def run(svc: Services, rpc: TreasuryHistory, stop: asyncio.Event) -> None:
    """Poll every `watch_interval_seconds` while this replica leads (`jobs.lead`)."""
    rounds = 0
    looked: set[str] = set()  # read at `confirmed` already (see `poll`)

    async def round_() -> None:
        nonlocal rounds
        report = await poll(svc, rpc, looked=looked)
        svc.metrics.watch_polls.labels("stopped" if report.stopped else "ok").inc()
        if report.cursor_slot is not None:
            svc.metrics.watch_cursor_slot.set(report.cursor_slot)
        if report.stopped:
            log.warning("watcher poll stopped early: %s", report.stopped)
        else:
            svc.metrics.watch_last_poll.set(svc.clock().timestamp())
        if rounds % CHAIN_SLOT_EVERY == 0:
            with contextlib.suppress(RpcUnavailable):
                svc.metrics.watch_chain_slot.set(await rpc.get_slot())
        rounds += 1

    await jobs.lead(svc.pool, WATCHER_LOCK, svc.settings.watch_interval_seconds, round_, stop)


async def seconds_behind(svc: Services) -> float | None:
    """Seconds since the watcher last read the treasury's history through to the newest
    signature (None: it has not started). Any replica can tell, from the database."""
    current = await store.cursor(svc.pool, svc.payment.treasury_token_account)
    if current is None:
        return None
    return max(0.0, (svc.clock() - current.updated_at).total_seconds())
