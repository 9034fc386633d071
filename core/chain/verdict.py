"""What the chain says about a payment, and the port through which core asks it.

The verify use case reads the chain *outside* any database transaction through a
`ChainVerifier`, then credits (or not) inside one. A verifier answers one of three
verdicts:

    Confirmed  the payment is final and bound to the intent; `received` base units arrived
    Pending    not decidable yet (not found, not final, RPC unavailable): try again later
    Rejected   final and wrong; `code` is a stable string from `RejectCode`
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

TOKEN_PROGRAM = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
TOKEN_2022_PROGRAM = "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb"


class RejectCode(enum.StrEnum):
    """Stable codes for a payment that can never credit this intent."""

    TX_FAILED = "tx_failed"
    NO_TRANSFER = "no_transfer"
    WRONG_MINT = "wrong_mint"
    WRONG_TOKEN_PROGRAM = "wrong_token_program"
    WRONG_RECIPIENT = "wrong_recipient"
    PAID_TO_WALLET = "paid_to_wallet_not_token_account"
    TOKEN_ACCOUNT_NOT_OWNED = "token_account_not_owned_by_treasury"
    UNDERPAID = "underpaid"
    UNBOUND_PAYMENT = "unbound_payment"
    BEFORE_INTENT = "paid_before_intent_created"
    EXPIRED = "paid_after_expiry"
    MALFORMED_TX = "malformed_transaction"


class PendingReason(enum.StrEnum):
    """Stable reasons a verify cannot decide yet."""

    NOT_FOUND = "tx_not_found"
    NOT_FINAL = "tx_not_final"
    RPC_UNAVAILABLE = "rpc_unavailable"
    # a verify without a signature: no transaction carries the intent's reference yet
    PAYMENT_NOT_FOUND = "payment_not_found"


@dataclass(frozen=True, slots=True)
class PaymentExpectation:
    """What an intent expects to see on chain; built from the intent by core."""

    intent_id: str
    amount: int  # token base units
    mint: str
    token_program: str
    treasury_owner: str  # the wallet
    treasury_token_account: str  # its token account for `mint`
    reference: str  # Solana Pay reference public key
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Confirmed:
    received: int  # token base units that reached the treasury token account
    payer: str | None
    slot: int
    block_time: datetime | None
    overpaid: bool = False
    late: bool = False  # paid after expiry but within the grace period


@dataclass(frozen=True, slots=True)
class Pending:
    reason: PendingReason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Rejected:
    code: RejectCode
    message: str


Verdict = Confirmed | Pending | Rejected


def describe_verdict(verdict: Verdict) -> str:
    """One line for an operator: what the chain's answer means."""
    match verdict:
        case Confirmed():
            flags = "".join(
                f", {flag}"
                for flag, on in (("overpaid", verdict.overpaid), ("late", verdict.late))
                if on
            )
            when = f" ({verdict.block_time:%Y-%m-%d %H:%M:%SZ})" if verdict.block_time else ""
            return (
                f"confirmed: {verdict.received} base units received at slot {verdict.slot}"
                f"{when} from {verdict.payer or 'an unknown payer'}{flags}"
            )
        case Pending():
            detail = f": {verdict.detail}" if verdict.detail else ""
            return f"pending {verdict.reason.value}{detail}"
        case Rejected():
            return f"rejected {verdict.code.value}: {verdict.message}"


class ChainVerifier(Protocol):
    """The port core uses to ask the chain about a payment."""

    async def verify(
        self, signature: str, expected: PaymentExpectation, now: datetime
    ) -> Verdict: ...
