"""`jsonParsed` instructions: what a node's parsers say about system, SPL Token (and Token-2022),
associated token account and memo instructions. Anything else — another program, or an
instruction of these programs that is not handled here — comes back partially decoded
(`programId`, `accounts`, base58 `data`), exactly as a node does for programs it cannot parse.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any, Final

from base58 import b58encode
from solders.pubkey import Pubkey

from localnet.layouts import EXTENSION_NAMES, ui_token_amount
from localnet.programs import (
    ASSOCIATED_TOKEN_PROGRAM_ID,
    MEMO_PROGRAM_IDS,
    SYSTEM_PROGRAM_ID,
    TOKEN_2022_PROGRAM_ID,
    TOKEN_PROGRAM_ID,
)


class _Unparsable(Exception):
    pass


Parsed = tuple[str, dict[str, Any]]  # (type, info)


def _need(accounts: Sequence[str], count: int) -> None:
    if len(accounts) < count:
        raise _Unparsable


def _signers(
    info: dict[str, Any], accounts: Sequence[str], last_nonsigner: int, single: str, multi: str
) -> None:
    # A node reads any key after the authority as a multisig signer, including the reference
    # keys Solana Pay appends: the authority then shows up as `multisigAuthority`.
    _need(accounts, last_nonsigner + 1)
    if len(accounts) > last_nonsigner + 1:
        info[multi] = accounts[last_nonsigner]
        info["signers"] = list(accounts[last_nonsigner + 1 :])
    else:
        info[single] = accounts[last_nonsigner]


def _coption_key(data: bytes, offset: int) -> tuple[str | None, int]:
    if data[offset] == 0:
        return None, offset + 1
    return str(Pubkey.from_bytes(data[offset + 1 : offset + 33])), offset + 33


def _parse_system(accounts: Sequence[str], data: bytes) -> Parsed:
    (kind,) = struct.unpack_from("<I", data, 0)
    if kind == 0:
        _need(accounts, 2)
        lamports, space = struct.unpack_from("<QQ", data, 4)
        owner = str(Pubkey.from_bytes(data[20:52]))
        info = {
            "source": accounts[0],
            "newAccount": accounts[1],
            "lamports": lamports,
            "space": space,
            "owner": owner,
        }
        return "createAccount", info
    if kind == 1:
        _need(accounts, 1)
        return "assign", {"account": accounts[0], "owner": str(Pubkey.from_bytes(data[4:36]))}
    if kind == 2:
        _need(accounts, 2)
        (lamports,) = struct.unpack_from("<Q", data, 4)
        return "transfer", {
            "source": accounts[0],
            "destination": accounts[1],
            "lamports": lamports,
        }
    if kind == 8:
        _need(accounts, 1)
        return "allocate", {"account": accounts[0], "space": struct.unpack_from("<Q", data, 4)[0]}
    raise _Unparsable


def _parse_token(accounts: Sequence[str], data: bytes) -> Parsed:
    """An SPL Token instruction as a node's jsonParsed names it. One branch per instruction
    the local chain answers for, side by side so each reads like the node's own table."""
    kind = data[0]
    if kind in (3, 7, 8):  # transfer, mintTo, burn
        (amount,) = struct.unpack_from("<Q", data, 1)
        if kind == 3:
            _need(accounts, 3)
            info: dict[str, Any] = {"source": accounts[0], "destination": accounts[1]}
            info["amount"] = str(amount)
            _signers(info, accounts, 2, "authority", "multisigAuthority")
            return "transfer", info
        if kind == 7:
            info = {"mint": accounts[0], "account": accounts[1], "amount": str(amount)}
            _signers(info, accounts, 2, "mintAuthority", "multisigMintAuthority")
            return "mintTo", info
        info = {"account": accounts[0], "mint": accounts[1], "amount": str(amount)}
        _signers(info, accounts, 2, "authority", "multisigAuthority")
        return "burn", info
    if kind in (12, 14, 15):  # transferChecked, mintToChecked, burnChecked
        amount, decimals = struct.unpack_from("<QB", data, 1)
        token_amount = ui_token_amount(amount, decimals)
        if kind == 12:
            _need(accounts, 4)
            info = {"source": accounts[0], "mint": accounts[1], "destination": accounts[2]}
            info["tokenAmount"] = token_amount
            _signers(info, accounts, 3, "authority", "multisigAuthority")
            return "transferChecked", info
        first, second = ("mint", "account") if kind == 14 else ("account", "mint")
        _need(accounts, 3)
        info = {first: accounts[0], second: accounts[1], "tokenAmount": token_amount}
        if kind == 14:
            _signers(info, accounts, 2, "mintAuthority", "multisigMintAuthority")
            return "mintToChecked", info
        _signers(info, accounts, 2, "authority", "multisigAuthority")
        return "burnChecked", info
    if kind in (0, 20):  # initializeMint, initializeMint2
        _need(accounts, 2 if kind == 0 else 1)
        authority = str(Pubkey.from_bytes(data[2:34]))
        freeze, _ = _coption_key(data, 34)
        info = {"mint": accounts[0], "decimals": data[1], "mintAuthority": authority}
        if freeze is not None:
            info["freezeAuthority"] = freeze
        if kind == 0:
            info["rentSysvar"] = accounts[1]
        return ("initializeMint" if kind == 0 else "initializeMint2"), info
    if kind in (1, 18):  # initializeAccount, initializeAccount3
        _need(accounts, 4 if kind == 1 else 2)
        info = {"account": accounts[0], "mint": accounts[1]}
        if kind == 1:
            info.update(owner=accounts[2], rentSysvar=accounts[3])
            return "initializeAccount", info
        info["owner"] = str(Pubkey.from_bytes(data[1:33]))
        return "initializeAccount3", info
    if kind == 9:
        _need(accounts, 3)
        info = {"account": accounts[0], "destination": accounts[1]}
        _signers(info, accounts, 2, "owner", "multisigOwner")
        return "closeAccount", info
    if kind == 17:
        _need(accounts, 1)
        return "syncNative", {"account": accounts[0]}
    if kind == 21:
        _need(accounts, 1)
        count = (len(data) - 1) // 2
        kinds = struct.unpack_from(f"<{count}H", data, 1)
        info = {"mint": accounts[0]}
        if kinds:
            info["extensionTypes"] = [EXTENSION_NAMES.get(k, "unparseableExtension") for k in kinds]
        return "getAccountDataSize", info
    if kind == 22:
        _need(accounts, 1)
        return "initializeImmutableOwner", {"account": accounts[0]}
    if kind == 26:
        return _parse_transfer_fee(accounts, data)
    raise _Unparsable


def _parse_transfer_fee(accounts: Sequence[str], data: bytes) -> Parsed:
    sub = data[1]
    if sub == 0:
        _need(accounts, 1)
        config_authority, offset = _coption_key(data, 2)
        withdraw_authority, offset = _coption_key(data, offset)
        basis_points, maximum_fee = struct.unpack_from("<HQ", data, offset)
        info: dict[str, Any] = {
            "mint": accounts[0],
            "transferFeeBasisPoints": basis_points,
            "maximumFee": maximum_fee,
        }
        if config_authority is not None:
            info["transferFeeConfigAuthority"] = config_authority
        if withdraw_authority is not None:
            info["withdrawWithheldAuthority"] = withdraw_authority
        return "initializeTransferFeeConfig", info
    if sub == 1:
        _need(accounts, 4)
        amount, decimals, fee = struct.unpack_from("<QBQ", data, 2)
        info = {
            "source": accounts[0],
            "mint": accounts[1],
            "destination": accounts[2],
            "tokenAmount": ui_token_amount(amount, decimals),
            "feeAmount": ui_token_amount(fee, decimals),
        }
        _signers(info, accounts, 3, "authority", "multisigAuthority")
        return "transferCheckedWithFee", info
    raise _Unparsable


def _parse_associated(accounts: Sequence[str], data: bytes) -> Parsed:
    kind = data[0] if data else 0
    if kind in (0, 1):
        _need(accounts, 6)
        info = {
            "source": accounts[0],
            "account": accounts[1],
            "wallet": accounts[2],
            "mint": accounts[3],
            "systemProgram": accounts[4],
            "tokenProgram": accounts[5],
        }
        return ("create" if kind == 0 else "createIdempotent"), info
    raise _Unparsable


_PARSERS: Final[dict[Pubkey, tuple[str, Callable[[Sequence[str], bytes], Parsed]]]] = {
    SYSTEM_PROGRAM_ID: ("system", _parse_system),
    TOKEN_PROGRAM_ID: ("spl-token", _parse_token),
    TOKEN_2022_PROGRAM_ID: ("spl-token-2022", _parse_token),
    ASSOCIATED_TOKEN_PROGRAM_ID: ("spl-associated-token-account", _parse_associated),
}


def parse_instruction(
    program_id: Pubkey, accounts: Sequence[Pubkey], data: bytes, stack_height: int | None
) -> dict[str, Any]:
    """One instruction as `jsonParsed` shows it."""
    names = [str(key) for key in accounts]
    if program_id in MEMO_PROGRAM_IDS:
        return {
            "parsed": data.decode("utf-8", errors="replace"),
            "program": "spl-memo",
            "programId": str(program_id),
            "stackHeight": stack_height,
        }
    parser = _PARSERS.get(program_id)
    if parser is not None:
        program, parse = parser
        try:
            kind, info = parse(names, data)
        except (_Unparsable, struct.error, IndexError, ValueError):
            pass
        else:
            return {
                "parsed": {"info": info, "type": kind},
                "program": program,
                "programId": str(program_id),
                "stackHeight": stack_height,
            }
    return {
        "accounts": names,
        "data": b58encode(data).decode(),
        "programId": str(program_id),
        "stackHeight": stack_height,
    }
