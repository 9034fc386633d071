"""The `Services` record: everything a use case needs, built once by the composition root."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import asyncpg

from core.chain.verdict import ChainVerifier
from core.config import PaymentConfig, Settings
from core.gate import GateReader
from core.metrics import Metrics

if TYPE_CHECKING:
    from core.purchases import CreditGroups, DuplicateAttempts, FreshIntents, SettledPairs


class ReferenceHistory(Protocol):
    """The chain call that finds payments by their Solana Pay reference (`SolanaRpc` has it)."""

    async def get_signatures_for_address(
        self,
        address: str,
        limit: int | None = None,
        before: str | None = None,
        until: str | None = None,
    ) -> list[dict[str, Any]]: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


def _settled_pairs() -> SettledPairs:
    from core.purchases import SettledPairs

    return SettledPairs()


def _fresh_intents() -> FreshIntents:
    from core.purchases import FreshIntents

    return FreshIntents()


def _duplicate_attempts() -> DuplicateAttempts:
    from core.purchases import DuplicateAttempts

    return DuplicateAttempts()


def _credit_groups() -> CreditGroups:
    from core.purchases import CreditGroups

    return CreditGroups()


@dataclass(frozen=True)
class Services:
    settings: Settings
    payment: PaymentConfig
    pool: asyncpg.Pool
    verifier: ChainVerifier
    gate: GateReader
    metrics: Metrics = field(default_factory=Metrics)
    clock: Callable[[], datetime] = utc_now
    # answers whether the Solana RPC is reachable (for /readyz); None when not wired
    chain_health: Callable[[], Awaitable[bool]] | None = None
    # finds the transactions carrying a reference (a verify without a signature); None when
    # not wired: such a verify then answers pending rpc_unavailable
    chain: ReferenceHistory | None = None
    # the (intent, signature) pairs this process knows credited (core/purchases/settled.py)
    settled: SettledPairs = field(default_factory=_settled_pairs, compare=False, repr=False)
    # the intents this process created and has not seen settle (core/purchases/settled.py)
    fresh: FreshIntents = field(default_factory=_fresh_intents, compare=False, repr=False)
    # writes duplicates' attempt rows in batches (core/purchases/duplicates.py)
    duplicates: DuplicateAttempts = field(
        default_factory=_duplicate_attempts, compare=False, repr=False
    )
    # commits purchase credits in flight together in one transaction (core/purchases/grouped.py)
    credits: CreditGroups = field(default_factory=_credit_groups, compare=False, repr=False)

    @property
    def expiry_grace(self) -> timedelta:
        return timedelta(seconds=self.settings.expiry_grace_seconds)
