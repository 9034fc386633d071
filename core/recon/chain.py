"""The chain side of reconciliation: payments that reached the treasury and credited nothing.

While the treasury watcher runs, its recorded flows show every payment (`core.recon.treasury`)
and this windowed look is not taken. Before it ever ran, two ways to find them, both
`getSignaturesForAddress`:

- by reference (Solana Pay's find-by-reference): the signatures naming the `reference` key of
  each unsettled intent (PENDING, and EXPIRED or REJECTED) — a payment made and never
  verified, or verified and rejected;
- by the treasury token account's recent history: anything paid to it lately.

Signatures the database already knows (an intent's, a purchase credit's, an applied
adjustment's) and failed transactions are skipped; the others are fetched (`getTransaction`)
and parsed by the pure transfer extraction. What the treasury token account gained in the
configured mint is the payment. The chain is read before the run's database transaction, never
inside one. An unreachable node makes the run record that the chain was not checked; it
never fails the run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import asyncpg

from core.chain.encoding import MalformedTransaction
from core.chain.rpc import SolanaRpc
from core.chain.transfers import ParsedTransaction, parse_transaction
from core.config import PaymentConfig
from core.recon import checks as recon_checks
from core.recon.facts import BalanceTie, PaymentFacts

log = logging.getLogger("payops.recon")

T = TypeVar("T")


class PaymentLookup(Protocol):
    """The reads of the windowed look at the chain; raise on an unreachable node."""

    async def signatures_for_address(self, address: str, *, limit: int) -> list[dict[str, Any]]:
        """`getSignaturesForAddress` records, newest first."""
        ...

    async def get_transaction(self, signature: str) -> dict[str, Any] | None:
        """`getTransaction` (jsonParsed) result, or None when the node does not have it."""
        ...


class ChainLookup(PaymentLookup, Protocol):
    """Every read reconciliation makes; raise on an unreachable node."""

    async def token_account_balance(self, address: str) -> tuple[int, int]:
        """`getTokenAccountBalance`: (base units, the slot it was read at)."""
        ...

    async def signatures_newer_than(
        self, address: str, until: str | None, *, limit: int
    ) -> list[dict[str, Any]]:
        """`getSignaturesForAddress` with `until`: the records newer than `until`."""
        ...


class RpcChainLookup:
    """`ChainLookup` over the service's `SolanaRpc` (its retries, timeouts and cache)."""

    def __init__(self, rpc: SolanaRpc) -> None:
        self._rpc = rpc

    async def signatures_for_address(self, address: str, *, limit: int) -> list[dict[str, Any]]:
        return await self._rpc.get_signatures_for_address(address, limit=limit)

    async def get_transaction(self, signature: str) -> dict[str, Any] | None:
        return await self._rpc.get_transaction(signature)

    async def token_account_balance(self, address: str) -> tuple[int, int]:
        return await self._rpc.get_token_account_balance(address)

    async def signatures_newer_than(
        self, address: str, until: str | None, *, limit: int
    ) -> list[dict[str, Any]]:
        return await self._rpc.get_signatures_for_address(address, limit=limit, until=until)


@dataclass(frozen=True, slots=True)
class ChainLimits:
    """Bounds on what one run asks the node."""

    reference_lookups: int = 100  # unsettled intents looked up by reference
    per_reference: int = 20  # signatures read per reference
    treasury_signatures: int = 200  # recent signatures of the treasury token account
    transactions: int = 300  # unknown transactions fetched
    concurrency: int = 8


@dataclass(frozen=True, slots=True)
class SeenPayment:
    """Tokens that reached the treasury token account in one transaction."""

    signature: str
    tokens: int
    reference_intents: tuple[str, ...]  # intents whose reference lookup found it
    account_keys: tuple[str, ...]
    memos: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ChainObservation:
    attempted: bool  # a chain was given
    checked: bool  # ... and every read succeeded
    payments: tuple[SeenPayment, ...] = ()
    signatures: int = 0  # distinct signatures seen
    fetched: int = 0  # transactions fetched
    error: str | None = None
    # where the payments to the treasury come from: "watcher" (its recorded flows, while it
    # runs) or "window" (the recent signatures read here, before it ever ran)
    source: str = "window"
    balance: BalanceTie | None = None  # the watcher's books against the chain

    def to_json(self) -> dict[str, Any]:
        return {
            "attempted": self.attempted,
            "checked": self.checked,
            "source": self.source,
            "signatures": self.signatures,
            "fetched": self.fetched,
            "payments": len(self.payments),
            "error": self.error,
            "balance": None if self.balance is None else self.balance.to_json(),
        }


NOT_CHECKED = ChainObservation(attempted=False, checked=False)


def treasury_receipt(tx: ParsedTransaction, payment: PaymentConfig) -> int:
    """Base units the treasury token account gained in the configured mint (pure).

    Only the configured account, owned by the treasury wallet, in the configured mint and
    token program (an old response without `programId` counts: the mint fixes its program).
    A failed transaction moved nothing.
    """
    if tx.err is not None:
        return 0
    return sum(
        c.delta
        for c in tx.token_changes
        if c.account == payment.treasury_token_account
        and c.owner == payment.treasury_owner
        and c.mint == payment.mint
        and c.program in (None, payment.token_program)
    )


KnownSignatures = Callable[[list[str]], Awaitable[set[str]]]


async def observe(
    chain: PaymentLookup,
    payment: PaymentConfig,
    *,
    references: Sequence[tuple[str, str]],
    known: KnownSignatures,
    ignore: Collection[str] = (),
    limits: ChainLimits | None = None,
) -> ChainObservation:
    """Read the chain for payments to the treasury that the database does not know.

    `references`: (intent id, reference) of the intents to look up by reference; `known`
    answers which signatures the database already holds (`recon_checks.known_signatures`).
    Its steps (look up, fetch, classify, bound by `limits`) share the bounds and the
    semaphore, which is why they stay in one function.
    """
    limits = limits or ChainLimits()
    gate = asyncio.Semaphore(limits.concurrency)
    seen: dict[str, set[str]] = {}  # signature -> intents whose reference found it
    error: str | None = None
    addresses = [payment.treasury_token_account, *(ref for _, ref in references)]
    limit = [limits.treasury_signatures] + [limits.per_reference] * len(references)
    try:
        answers = await _bounded_all(
            gate,
            [
                chain.signatures_for_address(a, limit=n)
                for a, n in zip(addresses, limit, strict=True)
            ],
        )
    except Exception as exc:  # an unreachable or broken node: the run records it
        log.warning("reconciliation: chain lookup failed: %s", _reason(exc))
        return ChainObservation(attempted=True, checked=False, error=_reason(exc))
    for owner, records in zip([None, *(i for i, _ in references)], answers, strict=True):
        for record in records:
            sig = record.get("signature")
            if isinstance(sig, str) and record.get("err") is None:
                intents = seen.setdefault(sig, set())
                if owner is not None:
                    intents.add(owner)
    held = await known(sorted(seen))
    unknown = [s for s in sorted(seen) if s not in held and s not in ignore]
    unknown.sort(key=lambda s: not seen[s])  # those an intent's reference found come first
    if len(unknown) > limits.transactions:
        error = f"{len(unknown)} unknown signatures, only {limits.transactions} fetched"
        unknown = unknown[: limits.transactions]
    payments: list[SeenPayment] = []
    fetched = 0
    try:
        results = await _bounded_all(gate, [chain.get_transaction(sig) for sig in unknown])
    except Exception as exc:
        log.warning("reconciliation: getTransaction failed: %s", _reason(exc))
        return ChainObservation(True, False, (), len(seen), 0, _reason(exc))
    for sig, result in zip(unknown, results, strict=True):
        if result is None:
            continue  # not at the configured commitment yet: the next run sees it
        fetched += 1
        try:
            tx = parse_transaction(result)
        except MalformedTransaction as exc:
            log.warning("reconciliation: cannot read %s: %s", sig, exc)
            error = error or f"unreadable transaction {sig}: {exc}"
            continue
        tokens = treasury_receipt(tx, payment)
        if tokens > 0:
            payments.append(
                SeenPayment(sig, tokens, tuple(sorted(seen[sig])), tx.account_keys, tx.memos)
            )
    return ChainObservation(
        attempted=True,
        checked=error is None,
        payments=tuple(payments),
        signatures=len(seen),
        fetched=fetched,
        error=error,
    )


async def payment_facts(
    conn: asyncpg.Connection, payments: Sequence[SeenPayment]
) -> list[PaymentFacts]:
    """What the database knows of each payment now (inside the run's snapshot)."""
    if not payments:
        return []
    settled = await recon_checks.settled_signatures(conn, [p.signature for p in payments])
    named = await recon_checks.intents_named(
        conn,
        [k for p in payments for k in p.account_keys],
        [m for p in payments for m in p.memos],
    )
    out = []
    for p in payments:
        hits = {named[k] for k in (*p.account_keys, *p.memos) if k in named}
        hits |= {named[i] for i in p.reference_intents if i in named}
        credited, adjusted = settled.get(p.signature, (False, False))
        where = (
            "reference of intent " + ", ".join(sorted(i for i, _ in hits))
            if hits
            else "treasury history, no intent named"
        )
        out.append(
            PaymentFacts(
                signature=p.signature,
                tokens=p.tokens,
                intent_ids=tuple(sorted({i for i, _ in hits} | set(p.reference_intents))),
                user_ids=tuple(sorted({u for _, u in hits})),
                credited=credited,
                adjusted=adjusted,
                where=where,
            )
        )
    return out


async def _bounded_all(gate: asyncio.Semaphore, calls: Sequence[Awaitable[T]]) -> list[T]:
    """Await every call, at most `gate` at a time; the first failure cancels the rest."""

    async def one(call: Awaitable[T]) -> T:
        async with gate:
            return await call

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(one(c)) for c in calls]
    return [t.result() for t in tasks]


def _reason(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"[:300]
