"""Purchase intents: the pure rules (creation, the Solana Pay URL, verify pre-checks).

An intent fixes, at creation, everything a payment must match: the price comes from the
server's configuration, never from the client; a fresh `reference` public key binds the
on-chain transfer to this intent (Solana Pay: the payer adds it as a read-only account).
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from urllib.parse import quote

from solders.keypair import Keypair
from solders.pubkey import Pubkey

from core.chain.verdict import PaymentExpectation, RejectCode
from core.config import U64_MAX, PaymentConfig
from core.errors import Conflict, InvalidInput


class IntentStatus(enum.StrEnum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


@dataclass(frozen=True, slots=True)
class Intent:
    id: uuid.UUID
    user_id: str
    credits: int
    amount: int  # token base units
    mint: str
    token_program: str
    recipient: str  # the treasury wallet
    recipient_token_account: str
    reference: str
    memo: str
    wallet: str | None
    status: IntentStatus
    tx_signature: str | None
    received_amount: int | None
    reject_code: str | None
    created_at: datetime
    expires_at: datetime
    confirmed_at: datetime | None


def new_intent(
    *,
    user_id: str,
    credits: int,
    wallet: str | None,
    payment: PaymentConfig,
    now: datetime,
    intent_id: uuid.UUID | None = None,
    reference: str | None = None,
) -> Intent:
    """A fresh PENDING intent for `credits`, priced by the server's configuration."""
    if isinstance(credits, bool) or not isinstance(credits, int):
        raise InvalidInput("credits must be an integer", code="invalid_credits")
    if credits < 1 or credits > payment.max_credits_per_intent:
        raise InvalidInput(
            f"credits must be between 1 and {payment.max_credits_per_intent}",
            code="invalid_credits",
        )
    amount = credits * payment.price_per_credit
    if amount > U64_MAX:
        raise InvalidInput(
            "the price of these credits exceeds a token amount", code="invalid_credits"
        )
    if wallet is not None:
        validate_pubkey(wallet, "wallet")
    intent_id = intent_id or uuid.uuid4()
    return Intent(
        id=intent_id,
        user_id=user_id,
        credits=credits,
        amount=amount,
        mint=payment.mint,
        token_program=payment.token_program,
        recipient=payment.treasury_owner,
        recipient_token_account=payment.treasury_token_account,
        reference=reference or str(Keypair().pubkey()),
        memo=str(intent_id),
        wallet=wallet,
        status=IntentStatus.PENDING,
        tx_signature=None,
        received_amount=None,
        reject_code=None,
        created_at=now,
        expires_at=now + timedelta(seconds=payment.intent_ttl_seconds),
        confirmed_at=None,
    )


def validate_pubkey(value: str, what: str) -> str:
    try:
        Pubkey.from_string(value)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(
            f"{what} is not a valid Solana public key", code=f"invalid_{what}"
        ) from exc
    return value


def format_token_amount(base_units: int, decimals: int) -> str:
    """Base units as the decimal string Solana Pay's `amount` takes (no floats, no exponent)."""
    value = Decimal(base_units).scaleb(-decimals)
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def solana_pay_url(
    intent: Intent, decimals: int, *, label: str | None = None, message: str | None = None
) -> str:
    """The Solana Pay transfer request URL for an intent.

    `solana:<recipient>?amount=<decimal>&spl-token=<mint>&reference=<ref>&label=<who asks>
    &message=<what for>&memo=<id>`; the recipient is the treasury wallet, from which a wallet
    derives the token account. `message` may name the credits as `{credits}`.
    """
    params = [
        ("amount", format_token_amount(intent.amount, decimals)),
        ("spl-token", intent.mint),
        ("reference", intent.reference),
    ]
    if label:
        params.append(("label", label))
    if message:
        params.append(("message", message.replace("{credits}", str(intent.credits))))
    params.append(("memo", intent.memo))
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params)
    return f"solana:{intent.recipient}?{query}"


def expectation(intent: Intent) -> PaymentExpectation:
    return PaymentExpectation(
        intent_id=str(intent.id),
        amount=intent.amount,
        mint=intent.mint,
        token_program=intent.token_program,
        treasury_owner=intent.recipient,
        treasury_token_account=intent.recipient_token_account,
        reference=intent.reference,
        created_at=intent.created_at,
        expires_at=intent.expires_at,
    )


class Precheck(enum.Enum):
    """What a verify does before asking the chain."""

    ASK_CHAIN = "ask_chain"
    ALREADY_CREDITED = "already_credited"


def precheck(intent: Intent, signature: str) -> Precheck:
    """Decide from the intent alone whether a verify needs the chain.

    A confirmed intent answers a repeat of its own signature without any RPC or ledger
    write (duplicate verifies are the common case), and refuses any other signature.
    """
    if intent.status is IntentStatus.CONFIRMED:
        if intent.tx_signature == signature:
            return Precheck.ALREADY_CREDITED
        raise Conflict(
            "this intent is already confirmed by another transaction",
            code="intent_already_confirmed",
        )
    if intent.status is IntentStatus.REJECTED:
        raise Conflict(
            f"this intent was rejected ({intent.reject_code}); create a new intent",
            code="intent_rejected",
        )
    return Precheck.ASK_CHAIN


# Rejections that mean money reached the treasury for this intent but can never credit it:
# the intent is closed and the payment becomes a reconciliation finding. Other rejections
# leave the intent open so the owner can still present the right signature. An underpaid
# payment is one of those: a top-up can still complete the price (the treasury watcher adds
# the bound payments up), and a stranger's dust carrying the intent's public reference must
# never close it on its owner.
CLOSING_REJECTIONS = frozenset({RejectCode.EXPIRED})


def rejection_closes_intent(code: RejectCode) -> bool:
    return code in CLOSING_REJECTIONS
