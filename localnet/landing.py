"""What happens to a transaction around LiteSVM's run of it: the checks a node makes before
(well-formed, signed), which outcomes land in a block, and what a helper's failure raises.

A transaction that ran lands, successfully or with an execution error (fee charged); one
refused before it could run (stale blockhash, already processed, fee payer missing) does
not. `TransactionRejected` is for one malformed or wrongly signed; `TransactionFailed` for
one a helper sent (`LocalChain.execute`) that did not succeed.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from solders.hash import Hash
from solders.message import Message, MessageV0
from solders.signature import Signature
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata, TransactionMetadata
from solders.transaction_status import (
    TransactionErrorDuplicateInstruction,
    TransactionErrorFieldless,
    TransactionErrorInstructionError,
    TransactionErrorInsufficientFundsForRent,
    TransactionErrorType,
)

from localnet.clock import ChainClock
from localnet.errors import (
    INVALID_PARAMS,
    SIGNATURE_VERIFICATION_FAILURE,
    TransactionRejected,
    describe_error,
)
from localnet.records import Execution

# Errors of transactions that ran and were charged a fee: they land, with `meta.err` set.
# (A tuple: solders' error values are comparable but not hashable.)
_LANDING_FIELDLESS: Final = (
    TransactionErrorFieldless.InvalidRentPayingAccount,
    TransactionErrorFieldless.UnbalancedTransaction,
    TransactionErrorFieldless.ProgramAccountNotFound,
    TransactionErrorFieldless.InvalidProgramForExecution,
)


def lands(err: TransactionErrorType | None) -> bool:
    """Whether a transaction with this outcome is recorded in a block."""
    if err is None:
        return True
    if isinstance(
        err,
        TransactionErrorInstructionError
        | TransactionErrorInsufficientFundsForRent
        | TransactionErrorDuplicateInstruction,
    ):
        return True
    return isinstance(err, TransactionErrorFieldless) and err in _LANDING_FIELDLESS


class TransactionFailed(Exception):
    """A transaction a helper sent did not succeed."""

    def __init__(self, execution: Execution) -> None:
        assert execution.err is not None
        super().__init__(f"{describe_error(execution.err)}; logs: {list(execution.logs)}")
        self.execution = execution


def checked_message(tx: VersionedTransaction, verify_signatures: bool) -> Message | MessageV0:
    """The message of `tx`; raises `TransactionRejected` for an unsupported version, a
    malformed transaction or (when `verify_signatures`) a wrong signature."""
    message = tx.message
    if not isinstance(message, Message | MessageV0):
        raise TransactionRejected(INVALID_PARAMS, "invalid transaction: unsupported version")
    try:
        tx.sanitize()
    except Exception as exc:  # solders raises its own SanitizeError
        raise TransactionRejected(INVALID_PARAMS, f"invalid transaction: {exc}") from exc
    if verify_signatures and not all(tx.verify_with_results()):
        raise TransactionRejected(
            SIGNATURE_VERIFICATION_FAILURE, "Transaction signature verification failure"
        )
    return message


def refusal_of(
    tx: VersionedTransaction,
    message: Message | MessageV0,
    *,
    seen: Collection[Signature],
    clock: ChainClock,
) -> TransactionErrorFieldless | None:
    """Why a node refuses `tx` before running it, or None: a signature already `seen`, or a
    blockhash `clock` no longer holds valid (unless it uses a durable nonce)."""
    # LiteSVM's duplicate check goes with its signature check, which is off: do both here.
    if tx.signatures[0] in seen:
        return TransactionErrorFieldless.AlreadyProcessed
    if tx.uses_durable_nonce() or clock.is_blockhash_valid(message.recent_blockhash):
        return None
    return TransactionErrorFieldless.BlockhashNotFound


def with_blockhash(tx: VersionedTransaction, blockhash: Hash) -> VersionedTransaction:
    """`tx` with its message's blockhash replaced (signatures kept, so no longer valid)."""
    message = tx.message
    if isinstance(message, MessageV0):
        replaced: Message | MessageV0 = MessageV0(
            message.header,
            message.account_keys,
            blockhash,
            message.instructions,
            message.address_table_lookups,
        )
    elif isinstance(message, Message):
        header = message.header
        replaced = Message.new_with_compiled_instructions(
            header.num_required_signatures,
            header.num_readonly_signed_accounts,
            header.num_readonly_unsigned_accounts,
            message.account_keys,
            blockhash,
            message.instructions,
        )
    else:
        return tx
    return VersionedTransaction.populate(replaced, tx.signatures)


def unpack(
    result: TransactionMetadata | FailedTransactionMetadata,
) -> tuple[TransactionMetadata, TransactionErrorType | None]:
    """LiteSVM's result of a run: its metadata and its error, None when it succeeded."""
    if isinstance(result, FailedTransactionMetadata):
        return result.meta(), result.err()
    return result, None
