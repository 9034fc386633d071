"""Request and response bodies of the HTTP API (pydantic at the boundary only).

Requests are strict: unknown fields, wrong types, floats for integers and out-of-range
numbers are refused with a 400 before any core code runs. Responses are built from core
types by the `*_body` functions and are what `/openapi.json` documents.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from core.config import PaymentConfig
from core.ledger import MAX_DEBIT, Entry
from core.purchases import Intent, solana_pay_url


def _user_id(value: str) -> str:
    """A user id as the JWT `sub` must be one: printable text."""
    if not value.isprintable():
        raise ValueError("must be printable text (no control characters)")
    return value


def _storable(value: str) -> str:
    """Free text PostgreSQL can store: no NUL character, no lone UTF-16 surrogate."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


UserId = Annotated[
    str,
    Field(min_length=1, max_length=200, description="A user id: printable text, as a JWT sub"),
    AfterValidator(_user_id),
]
Text = Annotated[str, AfterValidator(_storable)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class CreateIntentRequest(_Strict):
    credits: int = Field(ge=1, le=10**12, description="How many credits to buy")
    wallet: str | None = Field(
        default=None,
        min_length=32,
        max_length=44,
        pattern=r"^[1-9A-HJ-NP-Za-km-z]+$",
        description="The payer's wallet (optional): a base58 public key",
    )


class VerifyRequest(_Strict):
    # Only a size cap here: whether it is a signature is core's `invalid_signature` answer.
    # Left out, it is None (verify by reference); sent as null it is refused like any other
    # non-string, and the schema shows a string.
    signature: str | SkipJsonSchema[None] = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Base58 transaction signature. Leave it out (or send no body) to have "
        "the server find the payment by the intent's Solana Pay reference",
    )

    @field_validator("signature", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("leave the signature out rather than send null")
        return value


class DebitRequest(_Strict):
    user_id: UserId
    credits: int = Field(ge=1, le=MAX_DEBIT)
    reason: Text = Field(default="", max_length=500, description="Free text, no NUL characters")


class IntentBody(BaseModel):
    id: str
    status: Literal["PENDING", "CONFIRMED", "REJECTED", "EXPIRED"]
    credits: int
    amount: str = Field(description="Token amount in integer base units, as a string")
    mint: str
    token_program: str
    recipient: str = Field(description="The treasury wallet")
    recipient_token_account: str
    reference: str = Field(description="Solana Pay reference key to add to the transfer")
    memo: str
    solana_pay_url: str
    wallet: str | None
    tx_signature: str | None
    reject_code: str | None
    created_at: datetime
    expires_at: datetime


class VerifyConfirmedBody(BaseModel):
    status: Literal["CONFIRMED"]
    intent_id: str
    tx_signature: str
    credited: int
    balance: int
    already_credited: bool


class VerifyPendingBody(BaseModel):
    status: Literal["PENDING"]
    intent_id: str
    reason: str
    detail: str
    retry_after: int


class EntryBody(BaseModel):
    transaction_id: int
    kind: str
    amount: int
    description: str
    created_at: datetime


class CreditsBody(BaseModel):
    user_id: str
    balance: int
    entries: list[EntryBody]


class DebitBody(BaseModel):
    transaction_id: int
    user_id: str
    credits: int
    balance: int


class SwitchBody(BaseModel):
    open: bool
    reason: str
    changed_at: datetime


class StatusBody(BaseModel):
    verify: SwitchBody
    client_retries: SwitchBody
    retry_verification: bool = Field(description="false: the frontend must stop retrying verifies")


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class HealthBody(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


def intent_body(intent: Intent, payment: PaymentConfig) -> IntentBody:
    return IntentBody(
        id=str(intent.id),
        status=intent.status.value,
        credits=intent.credits,
        amount=str(intent.amount),
        mint=intent.mint,
        token_program=intent.token_program,
        recipient=intent.recipient,
        recipient_token_account=intent.recipient_token_account,
        reference=intent.reference,
        memo=intent.memo,
        solana_pay_url=solana_pay_url(
            intent, payment.decimals, label=payment.pay_label, message=payment.pay_message
        ),
        wallet=intent.wallet,
        tx_signature=intent.tx_signature,
        reject_code=intent.reject_code,
        created_at=intent.created_at,
        expires_at=intent.expires_at,
    )


def entry_body(entry: Entry) -> EntryBody:
    return EntryBody(
        transaction_id=entry.transaction_id,
        kind=entry.kind.value,
        amount=entry.amount,
        description=entry.description,
        created_at=entry.created_at,
    )
