"""What the treasury watcher decides, as pure functions over what it read.

A transaction read from the treasury token account's history is a flow when it changed that
account's balance of the configured mint: the net change (post minus pre, as verification
counts it) is its amount, positive for an inflow and negative for an outflow. A failed
transaction moved nothing and is no flow. Which intent a flow pays is the verify rules'
binding: the intent's reference among the account keys, or its id in a memo.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core.chain.transfers import ParsedTransaction

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@dataclass(frozen=True, slots=True)
class Flow:
    """One transaction's change to the treasury token account."""

    signature: str
    slot: int
    block_time: datetime | None
    amount: int  # base units; > 0 inflow, < 0 outflow
    payer: str
    account_keys: tuple[str, ...]
    memos: tuple[str, ...]

    @property
    def inflow(self) -> bool:
        return self.amount > 0


def flow_of(tx: ParsedTransaction, account: str, mint: str) -> Flow | None:
    """The change `tx` made to `account`'s balance of `mint`, or None when it made none."""
    if tx.err is not None:
        return None
    amount = sum(c.delta for c in tx.token_changes if c.account == account and c.mint == mint)
    if amount == 0:
        return None
    paid_at = None if tx.block_time is None else datetime.fromtimestamp(tx.block_time, tz=UTC)
    return Flow(
        signature=tx.signature,
        slot=tx.slot,
        block_time=paid_at,
        amount=amount,
        payer=tx.fee_payer,
        account_keys=tx.account_keys,
        memos=tx.memos,
    )


def intent_ids_in(memos: Sequence[str]) -> tuple[uuid.UUID, ...]:
    """The intent ids a transaction's memos carry (payops puts the id in the Solana Pay memo)."""
    found: list[uuid.UUID] = []
    for memo in memos:
        for text in _UUID.findall(memo):
            value = uuid.UUID(text)
            if value not in found:
                found.append(value)
    return tuple(found)


def new_signatures(pages: Sequence[Sequence[Mapping[str, Any]]]) -> list[tuple[str, bool]]:
    """The signatures of `getSignaturesForAddress` pages (each newest first, read with
    `before` going back) as (signature, failed), oldest first: the order to record them in.

    A record without a signature is skipped; a signature listed twice (a node answering a page
    boundary twice) is kept once."""
    seen: set[str] = set()
    ordered: list[tuple[str, bool]] = []
    for page in pages:
        for record in page:
            signature = record.get("signature")
            if not isinstance(signature, str) or signature in seen:
                continue
            seen.add(signature)
            ordered.append((signature, record.get("err") is not None))
    ordered.reverse()
    return ordered


def lag_slots(cursor_slot: int | None, chain_slot: int) -> int:
    """How many slots the watcher's cursor is behind the chain (0 when it has seen nothing
    newer than the chain's own slot)."""
    return 0 if cursor_slot is None else max(0, chain_slot - cursor_slot)
