"""Rendering transactions and accounts in the JSON a real node returns.

`getTransaction` comes in three encodings: `json` (compiled message, string keys, base58 data),
`jsonParsed` (account keys as objects, known instructions parsed, loaded addresses inline
instead of in `meta.loadedAddresses`) and the binary ones (`base64`, `base58`: the wire bytes).
Field names and order follow agave's `EncodedConfirmedTransactionWithStatusMeta`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Any, Final

from base58 import b58encode
from solders.account import Account
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from localnet.errors import error_json, invalid_params
from localnet.layouts import (
    mint_json,
    parse_mint,
    parse_token_account,
    token_account_json,
    ui_token_amount,
)
from localnet.parsed import parse_instruction
from localnet.programs import RESERVED_ACCOUNTS, TOKEN_2022_PROGRAM_ID
from localnet.records import Execution, InnerInstruction, LoadedAddresses, TokenBalance, TxRecord

TRANSACTION_ENCODINGS: Final = ("json", "jsonParsed", "base64", "base58")
ACCOUNT_ENCODINGS: Final = ("binary", "base58", "base64", "jsonParsed")
_UPGRADEABLE_LOADER: Final = Pubkey.from_string("BPFLoaderUpgradeab1e11111111111111111111111")
_MAX_BASE58_ACCOUNT_BYTES: Final = 128

DecimalsOf = Callable[[Pubkey], int | None]


def token_balance_json(balance: TokenBalance) -> dict[str, Any]:
    return {
        "accountIndex": balance.account_index,
        "mint": str(balance.mint),
        "uiTokenAmount": ui_token_amount(balance.amount, balance.decimals, null_zero=True),
        "owner": str(balance.owner),
        "programId": str(balance.program_id),
    }


def _compiled_json(
    program_id_index: int, accounts: Sequence[int], data: bytes, height: int | None
) -> dict[str, Any]:
    return {
        "programIdIndex": program_id_index,
        "accounts": list(accounts),
        "data": b58encode(data).decode(),
        "stackHeight": height,
    }


def _inner_json(
    inner: tuple[tuple[InnerInstruction, ...], ...], keys: Sequence[Pubkey], parsed: bool
) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for index, group in enumerate(inner):
        if not group:  # a node lists only instructions that invoked something
            continue
        instructions = [
            parse_instruction(
                keys[ix.program_id_index], [keys[a] for a in ix.accounts], ix.data, ix.stack_height
            )
            if parsed
            else _compiled_json(ix.program_id_index, ix.accounts, ix.data, ix.stack_height)
            for ix in group
        ]
        groups.append({"index": index, "instructions": instructions})
    return groups


def loaded_addresses_json(loaded: LoadedAddresses) -> dict[str, list[str]]:
    return {
        "writable": [str(k) for k in loaded.writable],
        "readonly": [str(k) for k in loaded.readonly],
    }


def return_data_json(execution: Execution) -> dict[str, Any] | None:
    data = execution.return_data
    if data is None:
        return None
    return {
        "programId": str(data.program_id),
        "data": [base64.b64encode(data.data).decode(), "base64"],
    }


def meta_json(execution: Execution, keys: Sequence[Pubkey], *, parsed: bool) -> dict[str, Any]:
    """`meta` of a landed transaction; `keys` is the full account key list."""
    err = error_json(execution.err)
    meta: dict[str, Any] = {
        "err": err,
        "status": {"Ok": None} if err is None else {"Err": err},
        "fee": execution.fee,
        "preBalances": list(execution.pre_balances),
        "postBalances": list(execution.post_balances),
        "innerInstructions": _inner_json(execution.inner_instructions, keys, parsed),
        "logMessages": list(execution.logs),
        "preTokenBalances": [token_balance_json(b) for b in execution.pre_token_balances],
        "postTokenBalances": [token_balance_json(b) for b in execution.post_token_balances],
        "rewards": [],
    }
    if not parsed:  # jsonParsed lists loaded keys among the account keys instead
        meta["loadedAddresses"] = loaded_addresses_json(execution.loaded)
    return_data = return_data_json(execution)
    if return_data is not None:
        meta["returnData"] = return_data
    meta["computeUnitsConsumed"] = execution.compute_units
    return meta


def _is_writable(message: Message | MessageV0, index: int, loaded: LoadedAddresses) -> bool:
    keys = message.account_keys
    if index >= len(keys):
        return index - len(keys) < len(loaded.writable)
    header = message.header
    signers = header.num_required_signatures
    if index < signers:
        writable = index < signers - header.num_readonly_signed_accounts
    else:
        writable = index < len(keys) - header.num_readonly_unsigned_accounts
    key = keys[index]
    if key in RESERVED_ACCOUNTS:
        return False
    called = any(ix.program_id_index == index for ix in message.instructions)
    return writable and not (called and _UPGRADEABLE_LOADER not in keys)


def _lookups_json(message: Message | MessageV0) -> list[dict[str, Any]] | None:
    if isinstance(message, Message):
        return None
    return [
        {
            "accountKey": str(lookup.account_key),
            "writableIndexes": list(lookup.writable_indexes),
            "readonlyIndexes": list(lookup.readonly_indexes),
        }
        for lookup in message.address_table_lookups
    ]


def message_json(
    message: Message | MessageV0, loaded: LoadedAddresses, *, parsed: bool
) -> dict[str, Any]:
    keys = [*message.account_keys, *loaded.writable, *loaded.readonly]
    instructions = [
        parse_instruction(keys[ix.program_id_index], [keys[a] for a in ix.accounts], ix.data, None)
        if parsed
        else _compiled_json(ix.program_id_index, ix.accounts, ix.data, None)
        for ix in message.instructions
    ]
    lookups = _lookups_json(message)
    if parsed:
        static = len(message.account_keys)
        account_keys = [
            {
                "pubkey": str(key),
                "writable": _is_writable(message, i, loaded),
                "signer": i < message.header.num_required_signatures,
                "source": "transaction" if i < static else "lookupTable",
            }
            for i, key in enumerate(keys)
        ]
        return {
            "accountKeys": account_keys,
            "recentBlockhash": str(message.recent_blockhash),
            "instructions": instructions,
            "addressTableLookups": lookups,
        }
    header = message.header
    body: dict[str, Any] = {
        "header": {
            "numRequiredSignatures": header.num_required_signatures,
            "numReadonlySignedAccounts": header.num_readonly_signed_accounts,
            "numReadonlyUnsignedAccounts": header.num_readonly_unsigned_accounts,
        },
        "accountKeys": [str(k) for k in message.account_keys],
        "recentBlockhash": str(message.recent_blockhash),
        "instructions": instructions,
    }
    if lookups is not None:
        body["addressTableLookups"] = lookups
    return body


def transaction_body_json(
    tx: VersionedTransaction, message: Message | MessageV0, loaded: LoadedAddresses, encoding: str
) -> Any:
    """The `transaction` member in the requested encoding."""
    if encoding == "base64":
        return [base64.b64encode(bytes(tx)).decode(), "base64"]
    if encoding == "base58":
        return [b58encode(bytes(tx)).decode(), "base58"]
    return {
        "signatures": [str(s) for s in tx.signatures],
        "message": message_json(message, loaded, parsed=encoding == "jsonParsed"),
    }


def transaction_json(record: TxRecord, encoding: str, *, with_version: bool) -> dict[str, Any]:
    """A `getTransaction` result. `with_version` when the client sent
    `maxSupportedTransactionVersion` (a node adds `version` only then)."""
    if encoding not in TRANSACTION_ENCODINGS:
        raise invalid_params(f"Invalid params: unsupported encoding {encoding!r}")
    execution = record.execution
    result: dict[str, Any] = {
        "slot": record.slot,
        "transaction": transaction_body_json(
            record.transaction, record.message, execution.loaded, encoding
        ),
        "meta": meta_json(execution, record.account_keys, parsed=encoding == "jsonParsed"),
    }
    if with_version:
        result["version"] = "legacy" if record.is_legacy else 0
    result["blockTime"] = record.block_time
    return result


def account_data_json(account: Account, encoding: str, decimals_of: DecimalsOf) -> Any:
    data = bytes(account.data)
    if encoding == "jsonParsed":
        parsed = parsed_account_data(account, decimals_of)
        if parsed is not None:
            return parsed
        encoding = "base64"
    if encoding == "base64":
        return [base64.b64encode(data).decode(), "base64"]
    if len(data) > _MAX_BASE58_ACCOUNT_BYTES:
        raise invalid_params(
            f"Encoded binary (base 58) data should be less than {_MAX_BASE58_ACCOUNT_BYTES} bytes, "
            "please use Base64 encoding."
        )
    text = b58encode(data).decode()
    return text if encoding == "binary" else [text, "base58"]


def parsed_account_data(account: Account, decimals_of: DecimalsOf) -> dict[str, Any] | None:
    """`{"program", "parsed", "space"}` for a token account or mint, else None."""
    owner = account.owner
    data = bytes(account.data)
    program = "spl-token-2022" if owner == TOKEN_2022_PROGRAM_ID else "spl-token"
    token = parse_token_account(owner, data)
    if token is not None:
        decimals = decimals_of(token.mint)
        if decimals is None:
            return None
        parsed = token_account_json(token, decimals, owner)
        return {"program": program, "parsed": parsed, "space": len(data)}
    mint = parse_mint(owner, data)
    if mint is not None:
        return {"program": program, "parsed": mint_json(mint, owner), "space": len(data)}
    return None


def account_json(account: Account, encoding: str, decimals_of: DecimalsOf) -> dict[str, Any]:
    """One account as `getAccountInfo` returns it (the `value` member)."""
    if encoding not in ACCOUNT_ENCODINGS:
        raise invalid_params(f"Invalid params: unsupported encoding {encoding!r}")
    return {
        "data": account_data_json(account, encoding, decimals_of),
        "executable": account.executable,
        "lamports": account.lamports,
        "owner": str(account.owner),
        "rentEpoch": account.rent_epoch,
        "space": len(account.data),
    }


def simulation_json(
    execution: Execution,
    keys: Sequence[Pubkey],
    *,
    accounts: list[dict[str, Any] | None] | None = None,
    inner_instructions: bool = False,
    replacement: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A `simulateTransaction` value (also the `data` of a preflight failure)."""
    ran = bool(execution.pre_balances)  # refused before running: nothing but the error
    return {
        "err": error_json(execution.err),
        "logs": list(execution.logs),
        "accounts": accounts,
        "unitsConsumed": execution.compute_units,
        "returnData": return_data_json(execution),
        "innerInstructions": (
            _inner_json(execution.inner_instructions, keys, True)
            if inner_instructions and ran
            else None
        ),
        "replacementBlockhash": replacement,
        "loadedAccountsDataSize": None,
        "fee": execution.fee if ran else None,
        "preBalances": list(execution.pre_balances) if ran else None,
        "postBalances": list(execution.post_balances) if ran else None,
        "preTokenBalances": (
            [token_balance_json(b) for b in execution.pre_token_balances] if ran else None
        ),
        "postTokenBalances": (
            [token_balance_json(b) for b in execution.post_token_balances] if ran else None
        ),
        "loadedAddresses": loaded_addresses_json(execution.loaded) if ran else None,
    }
