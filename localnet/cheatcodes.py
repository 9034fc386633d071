"""Surfpool's cheatcodes, with Surfpool's names, parameters and answers, so tests written for
this chain also run against Surfpool; plus two of our own for finality.

    surfnet_setAccount       [pubkey, {lamports?, data? (hex), owner?, executable?, rentEpoch?}]
    surfnet_setTokenAccount  [owner, mint, {amount?, delegate?, state?, delegatedAmount?,
                              closeAuthority?}, tokenProgram?]   (a key field takes a pubkey,
                              or the string "null" to clear it)
    surfnet_timeTravel       [{absoluteTimestamp (ms) | absoluteSlot | absoluteEpoch}]
                             answers an EpochInfo; time only moves forward
    localnet_holdFinality    [] -> {finalizedSlot}: later transactions stay `confirmed`
    localnet_releaseFinality [] -> {finalizedSlot}: everything is `finalized` again
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from solders.account import Account
from solders.pubkey import Pubkey

from localnet.chain import LocalChain
from localnet.clock import TimeTravelError
from localnet.errors import invalid_params
from localnet.layouts import KEEP, KeyPatch
from localnet.params import (
    API_VERSION,
    Params,
    config_param,
    int_field,
    parse_pubkey,
    pubkey_param,
)
from localnet.programs import SYSTEM_PROGRAM_ID
from localnet.tokens import set_token_account

Handler = Callable[[LocalChain, Params], Any]


def _done(chain: LocalChain) -> dict[str, Any]:
    return {"context": {"slot": chain.slot, "apiVersion": API_VERSION}, "value": None}


def _hex_data(value: Any) -> bytes:
    if isinstance(value, list) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        return bytes(value)
    if not isinstance(value, str):
        raise invalid_params("Invalid hex data provided: expected a hex string")
    try:
        return bytes.fromhex(value.removeprefix("0x"))
    except ValueError as exc:
        raise invalid_params(f"Invalid hex data provided: {exc}") from exc


def set_account(chain: LocalChain, params: Params) -> Any:
    address = pubkey_param(params, 0)
    update = config_param(params, 1)
    current = chain.get_account(address) or Account(0, b"", SYSTEM_PROGRAM_ID, False, 0)
    lamports = int_field(update, "lamports")
    rent_epoch = int_field(update, "rentEpoch")
    executable = update.get("executable")
    if executable is not None and not isinstance(executable, bool):
        raise invalid_params("Invalid params: executable must be a boolean")
    account = Account(
        lamports=current.lamports if lamports is None else lamports,
        data=bytes(current.data) if update.get("data") is None else _hex_data(update["data"]),
        owner=current.owner if update.get("owner") is None else parse_pubkey(update["owner"]),
        executable=current.executable if executable is None else executable,
        rent_epoch=current.rent_epoch if rent_epoch is None else rent_epoch,
    )
    chain.set_account(address, account)
    return _done(chain)


def _key_patch(update: dict[str, Any], key: str) -> KeyPatch:
    value = update.get(key)
    if value is None:
        return KEEP
    if value == "null":
        return None
    return parse_pubkey(value)


def set_token_account_method(chain: LocalChain, params: Params) -> Any:
    owner = pubkey_param(params, 0, "owner")
    mint = pubkey_param(params, 1, "mint")
    update = config_param(params, 2)
    program: Pubkey | None = None
    if len(params) > 3 and params[3] is not None:
        program = parse_pubkey(params[3])
    state = update.get("state")
    if state is not None and state not in ("uninitialized", "initialized", "frozen"):
        raise invalid_params(f"Invalid params: unknown account state {state!r}")
    try:
        set_token_account(
            chain,
            owner,
            mint,
            program,
            amount=int_field(update, "amount"),
            delegate=_key_patch(update, "delegate"),
            state=state,
            delegated_amount=int_field(update, "delegatedAmount"),
            close_authority=_key_patch(update, "closeAuthority"),
        )
    except ValueError as exc:
        raise invalid_params(str(exc)) from exc
    return _done(chain)


def time_travel(chain: LocalChain, params: Params) -> Any:
    config = config_param(params, 0)
    timestamp = int_field(config, "absoluteTimestamp")
    slot = int_field(config, "absoluteSlot")
    epoch = int_field(config, "absoluteEpoch")
    try:
        if timestamp is not None:
            chain.clock.travel_to_ms(timestamp)
        elif slot is not None:
            chain.clock.travel_to_slot(slot)
        elif epoch is not None:
            chain.clock.travel_to_epoch(epoch)
    except TimeTravelError as exc:
        raise invalid_params(str(exc)) from exc
    return chain.clock.epoch_info(chain.transaction_count)


def hold_finality(chain: LocalChain, params: Params) -> Any:
    return {"finalizedSlot": chain.hold_finality()}


def release_finality(chain: LocalChain, params: Params) -> Any:
    return {"finalizedSlot": chain.release_finality()}


METHODS: Final[dict[str, Handler]] = {
    "surfnet_setAccount": set_account,
    "surfnet_setTokenAccount": set_token_account_method,
    "surfnet_timeTravel": time_travel,
    "localnet_holdFinality": hold_finality,
    "localnet_releaseFinality": release_finality,
}
