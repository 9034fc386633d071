"""JSON-RPC methods about transactions: sending, simulating, looking them up."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any, Final

from solders.hash import Hash
from solders.message import Message, MessageV0, from_bytes_versioned

from localnet.chain import LocalChain
from localnet.encoding import (
    account_json,
    simulation_json,
    transaction_json,
)
from localnet.errors import (
    PREFLIGHT_FAILURE,
    UNSUPPORTED_TRANSACTION_VERSION,
    RpcError,
    TransactionRejected,
    describe_error,
    error_json,
    invalid_params,
)
from localnet.params import (
    Params,
    at_least_confirmed,
    commitment_of,
    config_param,
    context,
    decode_transaction,
    int_field,
    param,
    parse_pubkey,
    parse_signature,
    pubkey_param,
)
from localnet.programs import MEMO_PROGRAM_IDS
from localnet.records import TxRecord

_MAX_STATUS_SIGNATURES: Final = 256
_MAX_SIGNATURES_FOR_ADDRESS: Final = 1000
_LAMPORTS_PER_SIGNATURE: Final = 5000

Handler = Callable[[LocalChain, Params], Any]


def get_transaction(chain: LocalChain, params: Params) -> Any:
    signature = parse_signature(param(params, 0, "signature"))
    raw_config = params[1] if len(params) > 1 else None
    # The legacy form passes the encoding alone.
    config = {"encoding": raw_config} if isinstance(raw_config, str) else config_param(params, 1)
    commitment = at_least_confirmed(config)
    encoding = config.get("encoding") or "json"
    max_version = int_field(config, "maxSupportedTransactionVersion")
    record = chain.transaction(signature)
    if record is None or not chain.is_visible(record, commitment):
        return None
    if not record.is_legacy and max_version is None:
        raise RpcError(
            UNSUPPORTED_TRANSACTION_VERSION,
            "Transaction version (0) is not supported by the requesting client. Please try the "
            'request again with the following configuration parameter: "maxSupportedTransaction'
            'Version": 0',
        )
    return transaction_json(record, encoding, with_version=max_version is not None)


def _status_json(chain: LocalChain, record: TxRecord) -> dict[str, Any]:
    err = error_json(record.execution.err)
    status = chain.confirmation_status(record)
    return {
        "slot": record.slot,
        "confirmations": None if status == "finalized" else max(0, chain.slot - record.slot),
        "status": {"Ok": None} if err is None else {"Err": err},
        "err": err,
        "confirmationStatus": status,
    }


def get_signature_statuses(chain: LocalChain, params: Params) -> Any:
    raw = param(params, 0, "signatures")
    if not isinstance(raw, list):
        raise invalid_params("Invalid params: expected an array of signatures")
    if len(raw) > _MAX_STATUS_SIGNATURES:
        raise invalid_params(f"Too many inputs provided; max {_MAX_STATUS_SIGNATURES}")
    records = [chain.transaction(parse_signature(s)) for s in raw]
    value = [None if r is None else _status_json(chain, r) for r in records]
    return {"context": context(chain, "processed", config_param(params, 1)), "value": value}


def _memo(record: TxRecord) -> str | None:
    keys = record.account_keys
    memos = []
    for ix in record.message.instructions:
        if keys[ix.program_id_index] in MEMO_PROGRAM_IDS:
            data = bytes(ix.data)
            try:
                text = data.decode()
            except UnicodeDecodeError:
                text = "(unparseable)"
            memos.append(f"[{len(data)}] {text}")
    return "; ".join(memos) if memos else None


def get_signatures_for_address(chain: LocalChain, params: Params) -> Any:
    address = pubkey_param(params, 0, "address")
    config = config_param(params, 1)
    commitment = at_least_confirmed(config)
    context(chain, commitment, config)  # minContextSlot
    limit = int_field(config, "limit", _MAX_SIGNATURES_FOR_ADDRESS) or 0
    if not 1 <= limit <= _MAX_SIGNATURES_FOR_ADDRESS:
        raise invalid_params(f"Invalid limit; max {_MAX_SIGNATURES_FOR_ADDRESS}")
    before = config.get("before")
    until = config.get("until")
    records = chain.signatures_for_address(
        address,
        commitment=commitment,
        limit=limit,
        before=None if before is None else parse_signature(before),
        until=None if until is None else parse_signature(until),
    )
    return [
        {
            "signature": str(r.signature),
            "slot": r.slot,
            "err": error_json(r.execution.err),
            "memo": _memo(r),
            "blockTime": r.block_time,
            "confirmationStatus": chain.confirmation_status(r),
        }
        for r in records
    ]


def send_transaction(chain: LocalChain, params: Params) -> Any:
    config = config_param(params, 1)
    tx = decode_transaction(param(params, 0, "transaction"), config.get("encoding") or "base58")
    commitment_of({"commitment": config.get("preflightCommitment")})  # validated, then moot
    try:
        if not config.get("skipPreflight", False):
            execution, _ = chain.simulate(tx, verify_signatures=True)
            if execution.err is not None:
                keys = [*tx.message.account_keys]
                raise RpcError(
                    PREFLIGHT_FAILURE,
                    f"Transaction simulation failed: {describe_error(execution.err)}",
                    simulation_json(execution, keys),
                )
        # Refused transactions are dropped silently, as a node's forwarder does.
        chain.process(tx)
    except TransactionRejected as exc:
        raise RpcError(exc.code, exc.message) from exc
    return str(tx.signatures[0])


def simulate_transaction(chain: LocalChain, params: Params) -> Any:
    config = config_param(params, 1)
    tx = decode_transaction(param(params, 0, "transaction"), config.get("encoding") or "base58")
    sig_verify = bool(config.get("sigVerify", False))
    replace = bool(config.get("replaceRecentBlockhash", False))
    if sig_verify and replace:
        raise invalid_params("sigVerify may not be used with replaceRecentBlockhash")
    ctx = context(chain, commitment_of(config), config)
    try:
        execution, after = chain.simulate(
            tx, verify_signatures=sig_verify, replace_blockhash=replace
        )
    except TransactionRejected as exc:
        raise RpcError(exc.code, exc.message) from exc
    accounts_config = config.get("accounts")
    accounts = None
    if isinstance(accounts_config, dict):
        encoding = accounts_config.get("encoding") or "base64"
        accounts = []
        for raw in accounts_config.get("addresses") or []:
            address = parse_pubkey(raw)
            account = after.get(address) or chain.get_account(address)
            rendered = (
                None if account is None else account_json(account, encoding, chain.mint_decimals)
            )
            accounts.append(rendered)
    replacement = None
    if replace:
        blockhash, last_valid = chain.latest_blockhash()
        replacement = {"blockhash": str(blockhash), "lastValidBlockHeight": last_valid}
    message = tx.message
    loaded = execution.loaded
    keys = [*message.account_keys, *loaded.writable, *loaded.readonly]
    value = simulation_json(
        execution,
        keys,
        accounts=accounts,
        inner_instructions=bool(config.get("innerInstructions", False)),
        replacement=replacement,
    )
    return {"context": ctx, "value": value}


def request_airdrop(chain: LocalChain, params: Params) -> Any:
    address = pubkey_param(params, 0)
    lamports = param(params, 1, "lamports")
    if not isinstance(lamports, int) or isinstance(lamports, bool) or lamports <= 0:
        raise invalid_params("Invalid params: lamports must be a positive integer")
    return str(chain.airdrop(address, lamports).signature)


def get_latest_blockhash(chain: LocalChain, params: Params) -> Any:
    config = config_param(params, 0)
    commitment = commitment_of(config)
    ctx = context(chain, commitment, config)
    slot = chain.slot_at(commitment)
    value = {
        "blockhash": str(chain.clock.blockhash(slot)),
        "lastValidBlockHeight": chain.clock.last_valid_block_height(slot),
    }
    return {"context": ctx, "value": value}


def is_blockhash_valid(chain: LocalChain, params: Params) -> Any:
    raw = param(params, 0, "blockhash")
    config = config_param(params, 1)
    ctx = context(chain, commitment_of(config), config)
    try:
        blockhash = Hash.from_string(raw) if isinstance(raw, str) else None
    except ValueError:
        blockhash = None
    if blockhash is None:
        raise invalid_params("Invalid param: not a base58 blockhash")
    return {"context": ctx, "value": chain.clock.is_blockhash_valid(blockhash)}


def get_fee_for_message(chain: LocalChain, params: Params) -> Any:
    raw = param(params, 0, "message")
    config = config_param(params, 1)
    ctx = context(chain, commitment_of(config), config)
    try:
        message = from_bytes_versioned(base64.b64decode(str(raw), validate=True))
    except (binascii.Error, ValueError) as exc:
        raise invalid_params(f"invalid base64 encoding: {exc}") from exc
    if not isinstance(message, Message | MessageV0):
        raise invalid_params("Invalid params: unsupported message version")
    if not chain.clock.is_blockhash_valid(message.recent_blockhash):
        return {"context": ctx, "value": None}
    fee = _LAMPORTS_PER_SIGNATURE * message.header.num_required_signatures
    return {"context": ctx, "value": fee}


METHODS: Final[dict[str, Handler]] = {
    "getTransaction": get_transaction,
    "getSignatureStatuses": get_signature_statuses,
    "getSignaturesForAddress": get_signatures_for_address,
    "sendTransaction": send_transaction,
    "simulateTransaction": simulate_transaction,
    "requestAirdrop": request_airdrop,
    "getLatestBlockhash": get_latest_blockhash,
    "isBlockhashValid": is_blockhash_valid,
    "getFeeForMessage": get_fee_for_message,
}
