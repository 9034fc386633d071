"""JSON-RPC methods about accounts and the cluster (slots, time, versions).

Account state is LiteSVM's current state whatever the commitment asked: a held-back finalized
view has the finalized slot in its `context`, but the accounts as they are now.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from solders.account import Account
from solders.pubkey import Pubkey

from localnet.chain import LocalChain
from localnet.encoding import account_json
from localnet.errors import BLOCK_NOT_AVAILABLE, RpcError, invalid_params
from localnet.layouts import parse_mint, parse_token_account, ui_token_amount
from localnet.params import (
    API_VERSION,
    FEATURE_SET,
    Params,
    commitment_of,
    config_param,
    context,
    int_field,
    param,
    parse_pubkey,
    pubkey_param,
)

_LONG_TERM_STORAGE_SLOT_SKIPPED: Final = -32009
_MAX_MULTIPLE_ACCOUNTS: Final = 100

Handler = Callable[[LocalChain, Params], Any]


def _sliced(account: Account, config: dict[str, Any], encoding: str) -> Account:
    data_slice = config.get("dataSlice")
    if not isinstance(data_slice, dict) or encoding == "jsonParsed":
        return account
    offset = int_field(data_slice, "offset", 0) or 0
    length = int_field(data_slice, "length", 0) or 0
    data = bytes(account.data)[offset : offset + length]
    return Account(account.lamports, data, account.owner, account.executable, account.rent_epoch)


def _render(chain: LocalChain, address: Pubkey, config: dict[str, Any]) -> Any:
    account = chain.get_account(address)
    if account is None:
        return None
    encoding = config.get("encoding") or "binary"
    return account_json(_sliced(account, config, encoding), encoding, chain.mint_decimals)


def get_account_info(chain: LocalChain, params: Params) -> Any:
    address = pubkey_param(params, 0)
    config = config_param(params, 1)
    ctx = context(chain, commitment_of(config), config)
    return {"context": ctx, "value": _render(chain, address, config)}


def get_multiple_accounts(chain: LocalChain, params: Params) -> Any:
    raw = param(params, 0, "pubkeys")
    if not isinstance(raw, list):
        raise invalid_params("Invalid params: expected an array of pubkeys")
    if len(raw) > _MAX_MULTIPLE_ACCOUNTS:
        raise invalid_params(f"Too many inputs provided; max {_MAX_MULTIPLE_ACCOUNTS}")
    config = config_param(params, 1)
    ctx = context(chain, commitment_of(config), config)
    return {"context": ctx, "value": [_render(chain, parse_pubkey(k), config) for k in raw]}


def get_balance(chain: LocalChain, params: Params) -> Any:
    address = pubkey_param(params, 0)
    config = config_param(params, 1)
    ctx = context(chain, commitment_of(config), config)
    return {"context": ctx, "value": chain.balance(address)}


def get_token_account_balance(chain: LocalChain, params: Params) -> Any:
    address = pubkey_param(params, 0)
    config = config_param(params, 1)
    ctx = context(chain, commitment_of(config), config)
    account = chain.get_account(address)
    if account is None:
        raise invalid_params("Invalid param: could not find account")
    state = parse_token_account(account.owner, bytes(account.data))
    decimals = None if state is None else chain.mint_decimals(state.mint)
    if state is None or decimals is None:
        raise invalid_params("Invalid param: not a Token account")
    return {"context": ctx, "value": ui_token_amount(state.amount, decimals)}


def get_token_supply(chain: LocalChain, params: Params) -> Any:
    address = pubkey_param(params, 0)
    config = config_param(params, 1)
    ctx = context(chain, commitment_of(config), config)
    account = chain.get_account(address)
    mint = None if account is None else parse_mint(account.owner, bytes(account.data))
    if mint is None:
        raise invalid_params("Invalid param: not a Token mint")
    return {"context": ctx, "value": ui_token_amount(mint.supply, mint.decimals)}


def get_token_accounts_by_owner(chain: LocalChain, params: Params) -> Any:
    owner = pubkey_param(params, 0, "owner")
    selector = config_param(params, 1)
    config = config_param(params, 2)
    ctx = context(chain, commitment_of(config), config)
    mint: Pubkey | None = None
    if "mint" in selector:
        mint = parse_pubkey(selector["mint"])
        mint_account = chain.get_account(mint)
        if mint_account is None:
            raise invalid_params("Invalid param: could not find mint")
        program = mint_account.owner
    elif "programId" in selector:
        program = parse_pubkey(selector["programId"])
    else:
        raise invalid_params("Invalid params: expected a mint or a programId filter")
    found = []
    for address, account in chain.svm.get_program_accounts(program):
        state = parse_token_account(account.owner, bytes(account.data))
        if state is None or state.owner != owner or (mint is not None and state.mint != mint):
            continue
        found.append({"pubkey": str(address), "account": _render(chain, address, config)})
    return {"context": ctx, "value": found}


def get_slot(chain: LocalChain, params: Params) -> Any:
    config = config_param(params, 0)
    return context(chain, commitment_of(config), config)["slot"]


def get_block_height(chain: LocalChain, params: Params) -> Any:
    return chain.clock.block_height(get_slot(chain, params))


def get_block_time(chain: LocalChain, params: Params) -> Any:
    slot = param(params, 0, "slot")
    if not isinstance(slot, int) or isinstance(slot, bool) or slot < 0:
        raise invalid_params("Invalid params: slot must be a non-negative integer")
    if slot > chain.slot:
        raise RpcError(BLOCK_NOT_AVAILABLE, f"Block not available for slot {slot}")
    if slot < chain.clock.first_slot:
        raise RpcError(
            _LONG_TERM_STORAGE_SLOT_SKIPPED,
            f"Slot {slot} was skipped, or missing in long-term storage",
        )
    return chain.clock.block_time(slot)


def get_epoch_info(chain: LocalChain, params: Params) -> Any:
    config = config_param(params, 0)
    slot = context(chain, commitment_of(config), config)["slot"]
    return chain.clock.epoch_info(chain.transaction_count, slot)


def get_minimum_balance_for_rent_exemption(chain: LocalChain, params: Params) -> Any:
    size = param(params, 0, "data length")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise invalid_params("Invalid params: data length must be a non-negative integer")
    return chain.rent_exempt_minimum(size)


METHODS: Final[dict[str, Handler]] = {
    "getAccountInfo": get_account_info,
    "getMultipleAccounts": get_multiple_accounts,
    "getBalance": get_balance,
    "getTokenAccountBalance": get_token_account_balance,
    "getTokenSupply": get_token_supply,
    "getTokenAccountsByOwner": get_token_accounts_by_owner,
    "getSlot": get_slot,
    "getBlockHeight": get_block_height,
    "getBlockTime": get_block_time,
    "getEpochInfo": get_epoch_info,
    "getMinimumBalanceForRentExemption": get_minimum_balance_for_rent_exemption,
    "getTransactionCount": lambda chain, params: chain.transaction_count,
    "getFirstAvailableBlock": lambda chain, params: chain.clock.first_slot,
    "minimumLedgerSlot": lambda chain, params: chain.clock.first_slot,
    "getHealth": lambda chain, params: "ok",
    "getVersion": lambda chain, params: {"solana-core": API_VERSION, "feature-set": FEATURE_SET},
    "getGenesisHash": lambda chain, params: str(chain.genesis_hash),
    "getIdentity": lambda chain, params: {"identity": str(chain.faucet.pubkey())},
}
