"""Reading the JSON a Solana node returns for `getTransaction`, in any of its encodings.

A node encodes the transaction itself in one of three ways:

    jsonParsed  account keys are objects (`pubkey`, `source`...), known instructions parsed
    json        account keys are strings, instructions compiled (`programIdIndex`, base58 data)
    base64      `transaction` is `[<base64 wire bytes>, "base64"]`, decoded with solders

`decode_message` turns each into one `DecodedMessage`, so `transfers` never cares which one it
got. Everything here reads untrusted JSON: every access is checked, and the only exception that
leaves is `MalformedTransaction` (re-exported by `core.chain.transfers`, its public home).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import base58
from solders.message import Message, MessageV0
from solders.transaction import VersionedTransaction

# A transaction is at most 1232 bytes on the wire: anything far larger is not one, and bounding
# the input keeps the quadratic base58 decode cheap whatever we are fed.
_MAX_ENCODED_CHARS = 8192

_U64_DIGITS = re.compile(r"[0-9]{1,20}")
_U64_MAX = 2**64 - 1


class MalformedTransaction(ValueError):
    """A `getTransaction` response that is not shaped like one (missing or mistyped field,
    bad base64, account index out of range, non-integer amount...)."""


@dataclass(frozen=True, slots=True)
class RawInstruction:
    """One instruction before its program is resolved against the full account key list.

    jsonParsed names the program (`program_id`); json and base64 point at it by index into the
    full key list (`program_index`), which is only known once loaded addresses are appended.
    """

    program_id: str | None
    program_index: int | None
    data: bytes | str | None  # wire bytes (base64), base58 text (json), None when parsed
    parsed: object = None  # jsonParsed `parsed` value: the memo text for spl-memo


@dataclass(frozen=True, slots=True)
class DecodedMessage:
    """The parts of a transaction message that verification needs, whatever the encoding."""

    signatures: tuple[str, ...]
    account_keys: tuple[str, ...]  # static keys, or all keys when `includes_loaded`
    includes_loaded: bool  # jsonParsed v0 lists lookup-table keys inline (source=lookupTable)
    lookup_counts: tuple[int, int] | None  # (writable, readonly) keys loaded; None if unknown
    instructions: tuple[RawInstruction, ...]


# -- checked access to untrusted JSON ------------------------------------------------------------


def as_mapping(value: object, where: str) -> Mapping[str, object]:
    """`value` as a JSON object, else `MalformedTransaction` naming `where`."""
    if type(value) is dict:  # what a decoded answer holds, without the ABC's look-up
        return value
    if not isinstance(value, Mapping):
        raise MalformedTransaction(f"{where}: expected an object, got {_kind(value)}")
    return value


def as_list(value: object, where: str) -> Sequence[object]:
    """`value` as a JSON array (a str is not one), else `MalformedTransaction`."""
    if not isinstance(value, list | tuple):
        raise MalformedTransaction(f"{where}: expected an array, got {_kind(value)}")
    return value


def as_str(value: object, where: str) -> str:
    """`value` as a JSON string, else `MalformedTransaction`."""
    if not isinstance(value, str):
        raise MalformedTransaction(f"{where}: expected a string, got {_kind(value)}")
    return value


def as_int(value: object, where: str, *, low: int = 0, high: int = _U64_MAX) -> int:
    """`value` as a JSON integer within [low, high]; bools and floats are not integers."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedTransaction(f"{where}: expected an integer, got {_kind(value)}")
    if not low <= value <= high:
        raise MalformedTransaction(f"{where}: {value} is outside [{low}, {high}]")
    return value


def field(obj: Mapping[str, object], key: str, where: str) -> object:
    """The value of a required key (which may be JSON null), else `MalformedTransaction`."""
    if key not in obj:
        raise MalformedTransaction(f"{where}: missing field {key!r}")
    return obj[key]


# Typed required fields, `as_x(field(obj, key, where), f"{where}.{key}")` in one call: the
# path of an error is built only for an error (the checks run on every verify, on every
# entry of an answer), and the errors are those of `field` and `as_x`.
_ABSENT = object()


def str_field(obj: Mapping[str, object], key: str, where: str) -> str:
    value = obj.get(key, _ABSENT)
    if type(value) is str:
        return value
    return as_str(field(obj, key, where), f"{where}.{key}")


def int_field(
    obj: Mapping[str, object], key: str, where: str, *, low: int = 0, high: int = _U64_MAX
) -> int:
    value = obj.get(key, _ABSENT)
    if type(value) is int and low <= value <= high:
        return value
    return as_int(field(obj, key, where), f"{where}.{key}", low=low, high=high)


def mapping_field(obj: Mapping[str, object], key: str, where: str) -> Mapping[str, object]:
    value = obj.get(key, _ABSENT)
    if type(value) is dict:
        return value
    return as_mapping(field(obj, key, where), f"{where}.{key}")


def u64_field(obj: Mapping[str, object], key: str, where: str) -> int:
    """`parse_u64(field(obj, key, where), f"{where}.{key}")`."""
    value = obj.get(key, _ABSENT)
    if type(value) is str and _U64_DIGITS.fullmatch(value) and int(value) <= _U64_MAX:
        return int(value)
    return parse_u64(field(obj, key, where), f"{where}.{key}")


def parse_u64(value: object, where: str) -> int:
    """A raw token amount: a decimal string of a u64, as `uiTokenAmount.amount` carries it.

    Only the string is trusted; `uiAmount` is a float and never used for money.
    """
    text = as_str(value, where)
    if not _U64_DIGITS.fullmatch(text) or int(text) > _U64_MAX:
        raise MalformedTransaction(f"{where}: {text[:40]!r} is not a raw u64 amount")
    return int(text)


def b58decode(text: str, where: str) -> bytes:
    """Decode base58 (Bitcoin alphabet), as json-encoded instruction data uses."""
    if len(text) > _MAX_ENCODED_CHARS:
        raise MalformedTransaction(f"{where}: base58 data of {len(text)} chars is too long")
    try:
        # The library drops trailing whitespace; no node sends any, so it is refused here.
        if text != text.rstrip():
            raise ValueError("trailing whitespace")
        return base58.b58decode(text)
    except ValueError as exc:  # UnicodeEncodeError too: non-ASCII text
        raise MalformedTransaction(f"{where}: not a base58 character ({exc})") from exc


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


# -- the three encodings -------------------------------------------------------------------------


def decode_message(transaction: object) -> DecodedMessage:
    """Decode `result.transaction` in whichever encoding the node used."""
    if isinstance(transaction, list | tuple):
        return _decode_base64(transaction)
    tx = as_mapping(transaction, "transaction")
    message = as_mapping(field(tx, "message", "transaction"), "transaction.message")
    signatures = _signatures(field(tx, "signatures", "transaction"))
    raw_keys = as_list(
        field(message, "accountKeys", "transaction.message"), "transaction.message.accountKeys"
    )
    keys, includes_loaded = _json_keys(raw_keys)
    instructions = as_list(
        field(message, "instructions", "transaction.message"), "transaction.message.instructions"
    )
    return DecodedMessage(
        signatures=signatures,
        account_keys=keys,
        includes_loaded=includes_loaded,
        # The node's own `meta.loadedAddresses` is authoritative for json encodings; captured
        # responses even spell the lookup fields differently (readonly/readableIndexes).
        lookup_counts=None,
        instructions=tuple(
            read_instruction(ix, f"transaction.message.instructions[{i}]")
            for i, ix in enumerate(instructions)
        ),
    )


def read_instruction(value: object, where: str) -> RawInstruction:
    """One instruction in JSON form: compiled (`programIdIndex`) or jsonParsed (`programId`).

    Inner instructions always come in JSON form, even when the transaction is base64.
    """
    ix = as_mapping(value, where)
    data = ix.get("data")
    if data is not None and type(data) is not str:
        data = as_str(data, f"{where}.data")
    if "programIdIndex" in ix:
        index = int_field(ix, "programIdIndex", where)
        return RawInstruction(program_id=None, program_index=index, data=data)
    if "programId" in ix:
        program = str_field(ix, "programId", where)
        return RawInstruction(
            program_id=program, program_index=None, data=data, parsed=ix.get("parsed")
        )
    raise MalformedTransaction(f"{where}: names no program (no programIdIndex or programId)")


def _signatures(value: object) -> tuple[str, ...]:
    items = as_list(value, "transaction.signatures")
    if not items:
        raise MalformedTransaction("transaction.signatures: empty")
    return tuple(as_str(sig, f"transaction.signatures[{i}]") for i, sig in enumerate(items))


def _json_keys(raw_keys: Sequence[object]) -> tuple[tuple[str, ...], bool]:
    """Account keys as strings (json) or objects with `pubkey` (jsonParsed).

    jsonParsed v0 responses already list the lookup-table keys (source=lookupTable) after the
    static ones, in the same writable-then-readonly order, and omit `meta.loadedAddresses`.
    """
    keys: list[str] = []
    includes_loaded = False
    for i, raw in enumerate(raw_keys):
        if type(raw) is str:
            keys.append(raw)
            continue
        if type(raw) is dict and type(pubkey := raw.get("pubkey")) is str:
            keys.append(pubkey)
            includes_loaded = includes_loaded or raw.get("source") == "lookupTable"
            continue
        where = f"transaction.message.accountKeys[{i}]"
        if isinstance(raw, Mapping):
            keys.append(as_str(field(raw, "pubkey", where), f"{where}.pubkey"))
            includes_loaded = includes_loaded or raw.get("source") == "lookupTable"
        else:
            keys.append(as_str(raw, where))
    return tuple(keys), includes_loaded


def _decode_base64(transaction: Sequence[object]) -> DecodedMessage:
    if len(transaction) != 2:
        raise MalformedTransaction("transaction: expected [data, encoding]")
    encoding = as_str(transaction[1], "transaction[1]")
    if encoding != "base64":
        raise MalformedTransaction(f"transaction: unsupported encoding {encoding[:20]!r}")
    text = as_str(transaction[0], "transaction[0]")
    if len(text) > _MAX_ENCODED_CHARS:
        raise MalformedTransaction(f"transaction[0]: {len(text)} chars is too long")
    try:
        wire = base64.b64decode(text, validate=True)
    except ValueError as exc:  # binascii.Error, or non-ASCII text
        raise MalformedTransaction(f"transaction[0]: bad base64 ({exc})") from exc
    try:
        tx = VersionedTransaction.from_bytes(wire)
    except ValueError as exc:
        raise MalformedTransaction(f"transaction[0]: not a transaction ({exc})") from exc
    message = tx.message
    if isinstance(message, MessageV0):
        lookups = message.address_table_lookups
        counts = (
            sum(len(lookup.writable_indexes) for lookup in lookups),
            sum(len(lookup.readonly_indexes) for lookup in lookups),
        )
    elif isinstance(message, Message):
        counts = (0, 0)
    else:
        raise MalformedTransaction(f"transaction[0]: unsupported {type(message).__name__}")
    if not tx.signatures:
        raise MalformedTransaction("transaction[0]: no signatures")
    return DecodedMessage(
        signatures=tuple(str(sig) for sig in tx.signatures),
        account_keys=tuple(str(key) for key in message.account_keys),
        includes_loaded=False,
        lookup_counts=counts,
        instructions=tuple(
            RawInstruction(program_id=None, program_index=ix.program_id_index, data=ix.data)
            for ix in message.instructions
        ),
    )
