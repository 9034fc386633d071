"""`ChainVerifier` over a Solana RPC node: fetch the transaction, let the pure rules decide.

The I/O and the mapping of I/O failures live here; every decision about a fetched transaction
is `rules.decide_raw`'s. The one rule this module owns: an unreachable or broken node is never
a rejection — it is Pending(RPC_UNAVAILABLE), and the frontend tries again later.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any, Final

from solana.rpc.commitment import Commitment, get_commitment_score
from solders.signature import Signature

from core.chain.rpc import RpcUnavailable, SolanaRpc
from core.chain.rules import decide_raw
from core.chain.verdict import (
    PaymentExpectation,
    Pending,
    PendingReason,
    RejectCode,
    Rejected,
    Verdict,
)

__all__ = ["SolanaVerifier", "is_valid_signature"]

log = logging.getLogger("payops.chain")

# base58 of 64 bytes is at most 88 characters; refusing longer input before decoding keeps
# base58's quadratic decode away from hostile input.
_MAX_SIGNATURE_CHARS: Final = 88


def is_valid_signature(text: str) -> bool:
    """True if `text` is a base58-encoded 64-byte transaction signature."""
    if not 1 <= len(text) <= _MAX_SIGNATURE_CHARS:
        return False
    try:
        Signature.from_string(text)
    except ValueError:
        return False
    return True


class SolanaVerifier:
    """Verifies a payment by its transaction signature against a Solana RPC node."""

    def __init__(self, rpc: SolanaRpc, *, grace: timedelta) -> None:
        if grace < timedelta(0):
            raise ValueError("grace must not be negative")
        self._rpc = rpc
        self._grace = grace

    async def verify(self, signature: str, expected: PaymentExpectation, now: datetime) -> Verdict:
        """The chain's verdict on `signature` paying the intent behind `expected`.

        Reads the chain only (call it outside any database transaction). Never raises for
        chain or RPC trouble: that is a Pending verdict."""
        if not is_valid_signature(signature):
            return Rejected(
                RejectCode.MALFORMED_TX, "not a base58-encoded 64-byte transaction signature"
            )
        try:
            result = await self._rpc.get_transaction(signature)
        except RpcUnavailable as exc:
            # The one place an RPC outage surfaces: say so in the logs, not only in metrics.
            log.warning("Solana RPC unavailable: %s", exc, extra={"tx_signature": signature})
            return Pending(PendingReason.RPC_UNAVAILABLE, str(exc))
        if result is None:
            not_final = await self._seen_below_commitment(signature)
            if not_final is not None:
                return not_final
        return decide_raw(result, expected, now, self._grace)

    async def _seen_below_commitment(self, signature: str) -> Pending | None:
        """Pending(NOT_FINAL) if the node knows the transaction at a lower commitment than the
        one we verify at; None to keep the plain not-found answer."""
        try:
            statuses = await self._rpc.get_signature_statuses([signature])
        except RpcUnavailable:
            # The authoritative lookup already answered "not found"; this call only refines
            # the reason, so its failure must not turn a clear answer into an outage.
            return None
        status = statuses[0] if statuses else None
        if status is None:
            return None
        level = _status_level(status)
        wanted = self._rpc.commitment
        if level is None or get_commitment_score(level) >= get_commitment_score(wanted):
            # Reached the commitment between our two calls: the next verify will find it.
            return None
        detail = f"seen at {level.value}, waiting for {wanted.value}"
        err = status.get("err")
        if err is not None:
            # A failed transaction is still only pending until final; the rules reject it then,
            # from the final transaction, not from a status that could still change.
            detail += (
                f"; it failed ({json.dumps(err, default=str)}) and will be rejected once final"
            )
        return Pending(PendingReason.NOT_FINAL, detail)


def _status_level(status: dict[str, Any]) -> Commitment | None:
    """The commitment a signature status reports, or None if the status does not say."""
    reported = status.get("confirmationStatus")
    if isinstance(reported, str):
        try:
            return Commitment(reported)
        except ValueError:
            return None
    # Nodes older than `confirmationStatus` report `confirmations`: null once rooted (final),
    # a count before that, which cannot tell processed from confirmed, so assume the lower.
    if "confirmations" in status:
        return Commitment.FINALIZED if status["confirmations"] is None else Commitment.PROCESSED
    return None
