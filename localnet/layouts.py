"""SPL Token and Token-2022 account layouts: read token accounts and mints, render them the way a
node's `jsonParsed` account encoding does, and patch token account fields for cheatcodes.

Layouts (little endian; `COption<T>` is a u32 tag then T):

    token account, 165 bytes   mint 0..32, owner 32..64, amount u64 64..72,
                               delegate COption<Pubkey> 72..108, state u8 108,
                               is_native COption<u64> 109..121, delegated_amount u64 121..129,
                               close_authority COption<Pubkey> 129..165
    mint, 82 bytes             mint_authority COption<Pubkey> 0..36, supply u64 36..44,
                               decimals u8 44, is_initialized u8 45,
                               freeze_authority COption<Pubkey> 46..82

Token-2022 accounts with extensions are longer: the base (a mint padded to 165 bytes), one
account-type byte at 165 (1 mint, 2 account), then TLV entries (u16 type, u16 length, value).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Any, Final, Literal

from solders.pubkey import Pubkey

from localnet.programs import TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID

TOKEN_ACCOUNT_LEN: Final = 165
MINT_LEN: Final = 82
_ACCOUNT_TYPE_MINT: Final = 1
_ACCOUNT_TYPE_ACCOUNT: Final = 2
_STATES: Final = ("uninitialized", "initialized", "frozen")

# Token-2022 ExtensionType discriminants, named as the node's JSON names them.
EXTENSION_NAMES: Final = {
    1: "transferFeeConfig",
    2: "transferFeeAmount",
    3: "mintCloseAuthority",
    6: "defaultAccountState",
    7: "immutableOwner",
    8: "memoTransfer",
    9: "nonTransferable",
    11: "cpiGuard",
    12: "permanentDelegate",
    13: "nonTransferableAccount",
    14: "transferHook",
    15: "transferHookAccount",
    18: "metadataPointer",
    19: "tokenMetadata",
}
TRANSFER_FEE_CONFIG: Final = 1
TRANSFER_FEE_AMOUNT: Final = 2
IMMUTABLE_OWNER: Final = 7


@dataclass(frozen=True, slots=True)
class Extension:
    kind: int
    value: bytes


@dataclass(frozen=True, slots=True)
class TokenAccountState:
    mint: Pubkey
    owner: Pubkey
    amount: int
    delegate: Pubkey | None
    state: str  # "initialized" | "frozen"
    is_native: int | None  # rent-exempt reserve of a wrapped SOL account
    delegated_amount: int
    close_authority: Pubkey | None
    extensions: tuple[Extension, ...] = ()


@dataclass(frozen=True, slots=True)
class MintState:
    mint_authority: Pubkey | None
    supply: int
    decimals: int
    is_initialized: bool
    freeze_authority: Pubkey | None
    extensions: tuple[Extension, ...] = ()


def is_token_program(program_id: Pubkey) -> bool:
    return program_id in (TOKEN_PROGRAM_ID, TOKEN_2022_PROGRAM_ID)


def _coption_pubkey(data: bytes, offset: int) -> Pubkey | None:
    (tag,) = struct.unpack_from("<I", data, offset)
    return Pubkey.from_bytes(data[offset + 4 : offset + 36]) if tag == 1 else None


def _extensions(data: bytes) -> tuple[Extension, ...]:
    found: list[Extension] = []
    offset = TOKEN_ACCOUNT_LEN + 1
    while offset + 4 <= len(data):
        kind, length = struct.unpack_from("<HH", data, offset)
        if kind == 0:  # uninitialized padding: no more entries
            break
        found.append(Extension(kind, bytes(data[offset + 4 : offset + 4 + length])))
        offset += 4 + length
    return tuple(found)


def _has_type(data: bytes, exact_len: int, account_type: int) -> bool:
    if len(data) == exact_len:
        return True
    return len(data) > TOKEN_ACCOUNT_LEN and data[TOKEN_ACCOUNT_LEN] == account_type


def parse_token_account(owner_program: Pubkey, data: bytes) -> TokenAccountState | None:
    """The token account in `data`, or None if it is not an initialized token account."""
    if not is_token_program(owner_program) or len(data) < TOKEN_ACCOUNT_LEN:
        return None
    if len(data) != TOKEN_ACCOUNT_LEN and owner_program != TOKEN_2022_PROGRAM_ID:
        return None
    if not _has_type(data, TOKEN_ACCOUNT_LEN, _ACCOUNT_TYPE_ACCOUNT):
        return None
    state = data[108]
    if state not in (1, 2):
        return None
    (amount,) = struct.unpack_from("<Q", data, 64)
    native_tag, native = struct.unpack_from("<IQ", data, 109)
    (delegated_amount,) = struct.unpack_from("<Q", data, 121)
    return TokenAccountState(
        mint=Pubkey.from_bytes(data[0:32]),
        owner=Pubkey.from_bytes(data[32:64]),
        amount=amount,
        delegate=_coption_pubkey(data, 72),
        state=_STATES[state],
        is_native=native if native_tag == 1 else None,
        delegated_amount=delegated_amount,
        close_authority=_coption_pubkey(data, 129),
        extensions=_extensions(data) if len(data) > TOKEN_ACCOUNT_LEN else (),
    )


def parse_mint(owner_program: Pubkey, data: bytes) -> MintState | None:
    """The mint in `data`, or None if it is not an initialized mint."""
    if not is_token_program(owner_program) or len(data) < MINT_LEN:
        return None
    if len(data) != MINT_LEN and (
        owner_program != TOKEN_2022_PROGRAM_ID or not _has_type(data, MINT_LEN, _ACCOUNT_TYPE_MINT)
    ):
        return None
    if data[45] != 1:
        return None
    (supply,) = struct.unpack_from("<Q", data, 36)
    return MintState(
        mint_authority=_coption_pubkey(data, 0),
        supply=supply,
        decimals=data[44],
        is_initialized=True,
        freeze_authority=_coption_pubkey(data, 46),
        extensions=_extensions(data) if len(data) > TOKEN_ACCOUNT_LEN else (),
    )


def ui_amount_string(amount: int, decimals: int) -> str:
    """The amount in whole tokens, trailing zeros trimmed ("0.001", "12", "0")."""
    if decimals == 0:
        return str(amount)
    padded = str(amount).rjust(decimals + 1, "0")
    text = f"{padded[:-decimals]}.{padded[-decimals:]}"
    return text.rstrip("0").rstrip(".")


def ui_token_amount(amount: int, decimals: int, *, null_zero: bool = False) -> dict[str, Any]:
    """A `UiTokenAmount`. Transaction token balances carry `uiAmount: null` for zero
    (`null_zero`); account and instruction parsers say 0.0."""
    ui = None if null_zero and amount == 0 else float(amount) / float(10**decimals)
    return {
        "amount": str(amount),
        "decimals": decimals,
        "uiAmount": ui,
        "uiAmountString": ui_amount_string(amount, decimals),
    }


def _optional_nonzero(raw: bytes) -> str | None:
    return None if raw == bytes(32) else str(Pubkey.from_bytes(raw))


def _transfer_fee(raw: bytes) -> dict[str, int]:
    epoch, maximum_fee, basis_points = struct.unpack("<QQH", raw)
    return {"epoch": epoch, "maximumFee": maximum_fee, "transferFeeBasisPoints": basis_points}


def extension_json(extension: Extension) -> dict[str, Any]:
    """One `{"extension": name, "state": {...}}` entry of a parsed Token-2022 account."""
    name = EXTENSION_NAMES.get(extension.kind)
    value = extension.value
    state: dict[str, Any] | None = None
    if name is None:
        return {"extension": "unparseableExtension"}
    if extension.kind == TRANSFER_FEE_CONFIG and len(value) == 108:
        (withheld,) = struct.unpack_from("<Q", value, 64)
        state = {
            "transferFeeConfigAuthority": _optional_nonzero(value[0:32]),
            "withdrawWithheldAuthority": _optional_nonzero(value[32:64]),
            "withheldAmount": withheld,
            "olderTransferFee": _transfer_fee(value[72:90]),
            "newerTransferFee": _transfer_fee(value[90:108]),
        }
    elif extension.kind == TRANSFER_FEE_AMOUNT and len(value) == 8:
        state = {"withheldAmount": struct.unpack("<Q", value)[0]}
    elif name in ("mintCloseAuthority", "permanentDelegate") and len(value) == 32:
        key = "closeAuthority" if name == "mintCloseAuthority" else "delegate"
        state = {key: _optional_nonzero(value)}
    elif name in ("memoTransfer", "cpiGuard") and len(value) == 1:
        key = "requireIncomingTransferMemos" if name == "memoTransfer" else "lockCpi"
        state = {key: bool(value[0])}
    elif name == "defaultAccountState" and len(value) == 1:
        state = {"accountState": _STATES[value[0]] if value[0] < 3 else "uninitialized"}
    elif extension.kind not in (IMMUTABLE_OWNER, 9, 13):
        return {"extension": "unparseableExtension"}
    return {"extension": name} if state is None else {"extension": name, "state": state}


def transfer_fee_withheld(account: TokenAccountState) -> int:
    """Fees withheld in a Token-2022 account (0 without the transfer fee extension)."""
    for extension in account.extensions:
        if extension.kind == TRANSFER_FEE_AMOUNT and len(extension.value) == 8:
            return int(struct.unpack("<Q", extension.value)[0])
    return 0


def token_account_json(
    account: TokenAccountState, decimals: int, program: Pubkey
) -> dict[str, Any]:
    """The `parsed` object of a token account, as `getAccountInfo` jsonParsed returns it."""
    info: dict[str, Any] = {
        "isNative": account.is_native is not None,
        "mint": str(account.mint),
        "owner": str(account.owner),
        "state": account.state,
        "tokenAmount": ui_token_amount(account.amount, decimals),
    }
    if account.delegate is not None:
        info["delegate"] = str(account.delegate)
        info["delegatedAmount"] = ui_token_amount(account.delegated_amount, decimals)
    if account.is_native is not None:
        info["rentExemptReserve"] = ui_token_amount(account.is_native, decimals)
    if account.close_authority is not None:
        info["closeAuthority"] = str(account.close_authority)
    if program == TOKEN_2022_PROGRAM_ID and account.extensions:
        info["extensions"] = [extension_json(e) for e in account.extensions]
    return {"info": info, "type": "account"}


def mint_json(mint: MintState, program: Pubkey) -> dict[str, Any]:
    """The `parsed` object of a mint, as `getAccountInfo` jsonParsed returns it."""
    info: dict[str, Any] = {
        "decimals": mint.decimals,
        "freezeAuthority": None if mint.freeze_authority is None else str(mint.freeze_authority),
        "isInitialized": mint.is_initialized,
        "mintAuthority": None if mint.mint_authority is None else str(mint.mint_authority),
        "supply": str(mint.supply),
    }
    if program == TOKEN_2022_PROGRAM_ID and mint.extensions:
        info["extensions"] = [extension_json(e) for e in mint.extensions]
    return {"info": info, "type": "mint"}


class Keep(enum.Enum):
    """Marks a key field that a patch leaves as it is (None would clear it)."""

    KEEP = "keep"


KEEP: Final = Keep.KEEP
KeyPatch = Pubkey | Literal[Keep.KEEP] | None


def _pack_coption_pubkey(key: Pubkey | None) -> bytes:
    return struct.pack("<I", 1) + bytes(key) if key is not None else bytes(36)


def patch_token_account(
    data: bytes,
    *,
    amount: int | None = None,
    delegate: KeyPatch = KEEP,
    state: str | None = None,
    delegated_amount: int | None = None,
    close_authority: KeyPatch = KEEP,
) -> bytes:
    """`data` with the given base fields replaced (`KEEP` leaves a key field untouched, None
    clears it). Extensions are kept as they are."""
    out = bytearray(data)
    if amount is not None:
        struct.pack_into("<Q", out, 64, amount)
    if delegate is not KEEP:
        out[72:108] = _pack_coption_pubkey(delegate)
    if state is not None:
        if state not in _STATES:
            raise ValueError(f"unknown token account state {state!r}")
        out[108] = _STATES.index(state)
    if delegated_amount is not None:
        struct.pack_into("<Q", out, 121, delegated_amount)
    if close_authority is not KEEP:
        out[129:165] = _pack_coption_pubkey(close_authority)
    return bytes(out)
