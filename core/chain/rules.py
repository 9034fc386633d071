"""The pure decision: does this transaction pay this intent?

`decide` applies the rules below, in this order; the first that fails gives the verdict.

1. Failure. `meta.err` not null -> Rejected TX_FAILED, whatever the balances say (a failed
   transaction's balances only ever show the fee).
2. Binding. The intent's `reference` is one of ALL account keys (static or loaded), or a memo
   contains the intent id -> else Rejected UNBOUND_PAYMENT. Signatures are public: without
   this anyone could claim someone else's payment.
3. Creation. A block time more than `BLOCK_TIME_SKEW` before the intent was created -> Rejected
   BEFORE_INTENT. Block times are whole seconds and a stake-weighted estimate of validators'
   clocks, so a payment made right after creation can carry an earlier second; the
   reference key and intent id are fresh at creation, so no real payment can predate it by
   more. An unknown block time (None) never rejects on time.
4. Ownership. The treasury token account appearing with an owner other than the treasury
   wallet -> Rejected TOKEN_ACCOUNT_NOT_OWNED: money there is not the treasury's.
5. Amount. `received` = the net change of the treasury token account in the expected mint
   under the expected token program (a response without `programId` is accepted: the mint
   fixes its program). What arrives is what counts, so Token-2022 transfer fees reduce it.
   - 0 < received < amount -> Rejected UNDERPAID;
   - received >= amount -> confirmed, `overpaid` when greater;
   - received <= 0 -> Rejected with the most specific reason, first match wins:
     a. the treasury token account changed in the expected mint under another program
        -> WRONG_TOKEN_PROGRAM;
     b. the treasury token account changed in another mint, or another mint arrived at an
        account of the treasury wallet -> WRONG_MINT (whatever its decimals);
     c. the expected mint arrived at the treasury wallet address itself used as a token
        account, or at another token account the treasury wallet owns -> PAID_TO_WALLET: the
        treasury holds the money but not where this intent looks, so it is a recoverable
        reconciliation case, unlike
     d. tokens arrived only at accounts of other owners -> WRONG_RECIPIENT;
     e. nothing arrived anywhere (no token balances at all, a SOL transfer, or transfers that
        net to zero such as a self-transfer) -> NO_TRANSFER.
6. Expiry. A block time after `expires_at` but no later than `expires_at + grace`
   -> Confirmed(late=True); beyond the grace -> Rejected EXPIRED, a finding for manual
   adjustment rather than a silent credit. With an unknown block time the payment is flagged
   late when `now` is past expiry, since it cannot be shown to be on time.

A confirmed payment names the payer: the owner of the token account whose balance of the mint
fell the most, else the fee payer. Amounts come from balances, not instructions, so transfers
made by CPI and several transfers in one transaction count naturally.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from core.chain.transfers import (
    MalformedTransaction,
    ParsedTransaction,
    TokenBalanceChange,
    parse_transaction,
    unwrap_envelope,
)
from core.chain.verdict import (
    Confirmed,
    PaymentExpectation,
    Pending,
    PendingReason,
    RejectCode,
    Rejected,
    Verdict,
)

__all__ = ["BLOCK_TIME_SKEW", "decide", "decide_raw"]

BLOCK_TIME_SKEW = timedelta(seconds=60)


def decide_raw(
    result: Mapping[str, Any] | None,
    expected: PaymentExpectation,
    now: datetime,
    grace: timedelta,
) -> Verdict:
    """Decide on a raw `getTransaction` result (or its JSON-RPC envelope); never raises on it.

    None (or an envelope with a null result) means the node does not have the transaction at
    the requested commitment yet -> Pending NOT_FOUND, never a rejection. An envelope carrying
    an RPC `error` is the node failing, not the payment -> Pending RPC_UNAVAILABLE. A response
    not shaped like a transaction -> Rejected MALFORMED_TX. Otherwise see `decide`.
    """
    if isinstance(result, Mapping) and "transaction" not in result:
        error = result.get("error")
        if error is not None:
            return Pending(PendingReason.RPC_UNAVAILABLE, detail=f"RPC error: {error!r:.200}")
    try:
        body = unwrap_envelope(result)
        if body is None:
            return Pending(PendingReason.NOT_FOUND)
        tx = parse_transaction(body)
    except MalformedTransaction as exc:
        return Rejected(RejectCode.MALFORMED_TX, f"malformed getTransaction response: {exc}")
    return decide(tx, expected, now, grace)


def decide(
    tx: ParsedTransaction,
    expected: PaymentExpectation,
    now: datetime,
    grace: timedelta,
) -> Verdict:
    """Decide whether `tx` pays the intent described by `expected` (rules in the module doc).

    Pure: `now` is only consulted when the block time is unknown. All datetimes are aware.
    """
    if tx.err is not None:
        return Rejected(RejectCode.TX_FAILED, f"transaction failed on chain: {tx.err!r:.200}")
    if not _is_bound(tx, expected):
        return Rejected(
            RejectCode.UNBOUND_PAYMENT,
            f"reference {expected.reference} is not among the transaction's account keys "
            f"and no memo carries intent id {expected.intent_id!r}",
        )
    paid_at = None if tx.block_time is None else datetime.fromtimestamp(tx.block_time, tz=UTC)
    if paid_at is not None and paid_at < expected.created_at - BLOCK_TIME_SKEW:
        return Rejected(
            RejectCode.BEFORE_INTENT,
            f"paid at {paid_at.isoformat()}, before the intent was created at "
            f"{expected.created_at.isoformat()}",
        )
    received = _received(tx, expected)
    if isinstance(received, Rejected):
        return received
    late = paid_at > expected.expires_at if paid_at is not None else now > expected.expires_at
    if paid_at is not None and paid_at > expected.expires_at + grace:
        return Rejected(
            RejectCode.EXPIRED,
            f"paid at {paid_at.isoformat()}, after the intent expired at "
            f"{expected.expires_at.isoformat()} and its {grace} grace period",
        )
    return Confirmed(
        received=received,
        payer=_payer(tx, expected),
        slot=tx.slot,
        block_time=paid_at,
        overpaid=received > expected.amount,
        late=late,
    )


def _is_bound(tx: ParsedTransaction, expected: PaymentExpectation) -> bool:
    if expected.reference in tx.account_keys:
        return True
    # An empty intent id would be "contained" in every memo, so it never binds.
    return bool(expected.intent_id) and any(expected.intent_id in memo for memo in tx.memos)


def _received(tx: ParsedTransaction, expected: PaymentExpectation) -> int | Rejected:
    """What reached the treasury token account (> 0 and >= amount), or why it did not."""
    account = expected.treasury_token_account
    for change in tx.token_changes:
        if change.account == account and change.owner != expected.treasury_owner:
            return Rejected(
                RejectCode.TOKEN_ACCOUNT_NOT_OWNED,
                f"token account {account} is owned by {change.owner}, "
                f"not by the treasury {expected.treasury_owner}",
            )
    received = sum(c.delta for c in tx.token_changes if _credits_treasury(c, expected))
    if received <= 0:
        return _why_nothing_received(tx, expected, received)
    if received < expected.amount:
        return Rejected(
            RejectCode.UNDERPAID,
            f"{account} received {received} base units of {expected.mint}, "
            f"the intent expects {expected.amount}",
        )
    return received


def _credits_treasury(change: TokenBalanceChange, expected: PaymentExpectation) -> bool:
    return (
        change.account == expected.treasury_token_account
        and change.mint == expected.mint
        and change.program in (expected.token_program, None)
    )


def _why_nothing_received(
    tx: ParsedTransaction, expected: PaymentExpectation, received: int
) -> Rejected:
    """The most specific reason the treasury token account gained nothing (rule 5a-e)."""
    account, wallet, mint = expected.treasury_token_account, expected.treasury_owner, expected.mint
    on_account = [c for c in tx.token_changes if c.account == account and c.delta != 0]
    arrived = [c for c in tx.token_changes if c.delta > 0]
    to_treasury = [c for c in arrived if wallet in (c.owner, c.account)]
    for c in on_account:
        if c.mint == mint and c.program not in (expected.token_program, None):
            return Rejected(
                RejectCode.WRONG_TOKEN_PROGRAM,
                f"{account} changed by {c.delta} of {mint} under program {c.program}, "
                f"the intent expects {expected.token_program}",
            )
    for c in on_account + to_treasury:
        if c.mint != mint:
            return Rejected(
                RejectCode.WRONG_MINT,
                f"{c.account} changed by {c.delta} of mint {c.mint} ({c.decimals} decimals), "
                f"the intent expects {mint}",
            )
    for c in to_treasury:
        place = "the treasury wallet address itself" if c.account == wallet else c.account
        return Rejected(
            RejectCode.PAID_TO_WALLET,
            f"{c.delta} of {mint} went to {place}, not to the treasury token account {account}",
        )
    if arrived:
        owners = ", ".join(sorted({c.owner for c in arrived}))
        return Rejected(
            RejectCode.WRONG_RECIPIENT,
            f"tokens went to accounts of {owners}, not to the treasury token account {account}",
        )
    return Rejected(
        RejectCode.NO_TRANSFER,
        f"no tokens arrived anywhere; {account} net change in {mint} is {received}",
    )


def _payer(tx: ParsedTransaction, expected: PaymentExpectation) -> str:
    """The owner of the account whose balance of the mint fell the most, else the fee payer."""
    spent = [c for c in tx.token_changes if c.mint == expected.mint and c.delta < 0]
    if not spent:
        return tx.fee_payer
    return min(spent, key=lambda c: c.delta).owner
