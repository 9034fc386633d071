"""What the chain says about the signatures triage found: `getSignatureStatuses`.

A status tells whether a transaction exists (at any commitment, searching history), how
final it is, and whether it failed. Triage never turns an RPC failure into a verdict: the
facts then say "rpc unavailable" and the diagnosis reads the database alone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

from core.chain.rpc import RpcUnavailable
from core.triage.evidence import ChainFacts, ChainStatus, unique

MAX_SIGNATURES = 256  # one getSignatureStatuses call


class SignatureStatusReader(Protocol):
    """The part of `core.chain.rpc.SolanaRpc` triage uses."""

    async def get_signature_statuses(
        self, signatures: Sequence[str], *, search_transaction_history: bool = True
    ) -> list[dict[str, Any] | None]: ...


async def chain_facts(rpc: SignatureStatusReader, signatures: Sequence[str]) -> list[ChainFacts]:
    """One `ChainFacts` per distinct signature (the first `MAX_SIGNATURES`), in order.

    An unreachable node gives facts with status `rpc unavailable` and its reason; it never
    raises for RPC trouble.
    """
    wanted = unique(signatures)[:MAX_SIGNATURES]
    if not wanted:
        return []
    try:
        statuses = await rpc.get_signature_statuses(wanted, search_transaction_history=True)
    except RpcUnavailable as exc:
        return [ChainFacts(s, ChainStatus.RPC_UNAVAILABLE, detail=exc.reason) for s in wanted]
    return [_facts(s, status) for s, status in zip(wanted, statuses, strict=True)]


def _facts(signature: str, status: dict[str, Any] | None) -> ChainFacts:
    if status is None:
        return ChainFacts(signature, ChainStatus.NOT_FOUND)
    level = status.get("confirmationStatus")
    if not isinstance(level, str):
        # Nodes older than `confirmationStatus` say `confirmations: null` once rooted.
        level = (
            "finalized" if "confirmations" in status and status["confirmations"] is None else None
        )
    err = status.get("err")
    slot = status.get("slot")
    return ChainFacts(
        signature,
        ChainStatus.FOUND,
        confirmation_status=level,
        err=None if err is None else json.dumps(err, sort_keys=True, default=str),
        slot=slot if isinstance(slot, int) and not isinstance(slot, bool) else None,
    )
