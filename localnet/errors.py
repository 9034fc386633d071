"""JSON-RPC errors, and transaction errors in the JSON and the words a real node uses.

RpcError            an error object for the JSON-RPC response ({code, message, data})
TransactionRejected a transaction the chain refused before it could land (raised by
                    `LocalChain` for malformed or wrongly signed transactions)
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from solders.transaction_status import TransactionErrorType, TransactionStatus

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
# Solana's own server error codes (agave rpc_custom_error.rs).
BLOCK_NOT_AVAILABLE: Final = -32004
PREFLIGHT_FAILURE: Final = -32002
SIGNATURE_VERIFICATION_FAILURE: Final = -32003
SLOT_SKIPPED: Final = -32007
UNSUPPORTED_TRANSACTION_VERSION: Final = -32015
MIN_CONTEXT_SLOT_NOT_REACHED: Final = -32016


class RpcError(Exception):
    """An error answer: `{"code", "message", "data"?}` in the JSON-RPC `error` member."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            body["data"] = self.data
        return body


def invalid_params(message: str) -> RpcError:
    return RpcError(INVALID_PARAMS, message)


class TransactionRejected(Exception):
    """The transaction cannot be processed at all (bad encoding, failed sanitize, bad signature);
    `code` and `message` are the JSON-RPC error a node answers with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def error_json(err: TransactionErrorType | None) -> Any:
    """A transaction error as the node's JSON renders it (`"BlockhashNotFound"`,
    `{"InstructionError": [0, {"Custom": 1}]}`), or None."""
    if err is None:
        return None
    # solders serialises errors with the node's own serde rules; borrow them.
    return json.loads(TransactionStatus(0, err=err).to_json())["err"]


_TRANSACTION_MESSAGES: Final = {
    "AccountInUse": "Account in use",
    "AccountLoadedTwice": "Account loaded twice",
    "AccountNotFound": "Attempt to debit an account but found no record of a prior credit.",
    "ProgramAccountNotFound": "Attempt to load a program that does not exist",
    "InsufficientFundsForFee": "Insufficient funds for fee",
    "InvalidAccountForFee": "This account may not be used to pay transaction fees",
    "AlreadyProcessed": "This transaction has already been processed",
    "BlockhashNotFound": "Blockhash not found",
    "MissingSignatureForFee": "Transaction requires a fee but has no signature present",
    "InvalidAccountIndex": "Transaction contains an invalid account reference",
    "SignatureFailure": "Transaction did not pass signature verification",
    "InvalidProgramForExecution": "This program may not be used for executing instructions",
    "SanitizeFailure": "Transaction failed to sanitize accounts offsets correctly",
    "AddressLookupTableNotFound": "Transaction loads an address table account that doesn't exist",
    "InvalidAddressLookupTableOwner": (
        "Transaction loads an address table account with an invalid owner"
    ),
    "InvalidAddressLookupTableData": (
        "Transaction loads an address table account with invalid data"
    ),
    "InvalidAddressLookupTableIndex": "Transaction address table lookup uses an invalid index",
    "UnsupportedVersion": "Transaction version is unsupported",
}
_INSTRUCTION_MESSAGES: Final = {
    "GenericError": "generic instruction error",
    "InvalidArgument": "invalid program argument",
    "InvalidInstructionData": "invalid instruction data",
    "InvalidAccountData": "invalid account data for instruction",
    "AccountDataTooSmall": "account data too small for instruction",
    "InsufficientFunds": "insufficient funds for instruction",
    "IncorrectProgramId": "incorrect program id for instruction",
    "MissingRequiredSignature": "missing required signature for instruction",
    "AccountAlreadyInitialized": "instruction requires an uninitialized account",
    "UninitializedAccount": "instruction requires an initialized account",
    "NotEnoughAccountKeys": "insufficient account keys for instruction",
    "AccountNotRentExempt": "An account does not have enough lamports to be rent-exempt",
    "IllegalOwner": "Provided owner is not allowed",
    "ComputationalBudgetExceeded": "Computational budget exceeded",
    "ProgramFailedToComplete": "Program failed to complete",
}


def _words(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", " ", name).lower()


def _instruction_message(err: Any) -> str:
    if isinstance(err, str):
        return _INSTRUCTION_MESSAGES.get(err, _words(err))
    if isinstance(err, dict) and "Custom" in err:
        return f"custom program error: {int(err['Custom']):#x}"
    if isinstance(err, dict) and "BorshIoError" in err:
        return f"Failed to serialize or deserialize account data: {err['BorshIoError']}"
    return _words(str(err))


def describe_error(err: TransactionErrorType) -> str:
    """The node's wording of a transaction error, e.g. "Error processing Instruction 0: custom
    program error: 0x1", for `Transaction simulation failed: ...` messages."""
    raw = error_json(err)
    if isinstance(raw, str):
        return _TRANSACTION_MESSAGES.get(raw, _words(raw))
    if isinstance(raw, dict) and "InstructionError" in raw:
        index, inner = raw["InstructionError"]
        return f"Error processing Instruction {index}: {_instruction_message(inner)}"
    if isinstance(raw, dict) and "InsufficientFundsForRent" in raw:
        account = raw["InsufficientFundsForRent"]["account_index"]
        return f"Transaction results in an account ({account}) with insufficient funds for rent"
    if isinstance(raw, dict) and "DuplicateInstruction" in raw:
        index = raw["DuplicateInstruction"]
        return f"Transaction contains a duplicate instruction ({index}) that is not allowed"
    return json.dumps(raw)
