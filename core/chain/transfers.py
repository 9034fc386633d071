"""What a confirmed Solana transaction did, read from one `getTransaction` response.

`parse_transaction` accepts the `result` object (or the whole JSON-RPC envelope) in any
encoding a node returns (jsonParsed, json or base64; legacy or version 0) and produces a
`ParsedTransaction`: signatures, the full account key list (static, then loaded writable, then
loaded readonly), slot, block time, `meta.err`, memo texts and per-token-account balance changes.

Amounts come from `meta.preTokenBalances` / `postTokenBalances` rather than from instructions:
balances see transfers made by CPI, several transfers in one transaction and Token-2022 transfer
fees alike, and they are the raw integer `amount` strings, never floats.

Anything structurally wrong raises `MalformedTransaction` (a `ValueError`), and nothing else:
the input is untrusted JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from core.chain.encoding import (
    DecodedMessage,
    MalformedTransaction,
    RawInstruction,
    as_int,
    as_list,
    as_mapping,
    as_str,
    b58decode,
    decode_message,
    field,
    int_field,
    mapping_field,
    read_instruction,
    str_field,
    u64_field,
)

__all__ = [
    "MEMO_PROGRAMS",
    "MEMO_PROGRAM_V1",
    "MEMO_PROGRAM_V2",
    "MalformedTransaction",
    "ParsedTransaction",
    "TokenBalanceChange",
    "parse_transaction",
    "unwrap_envelope",
]

MEMO_PROGRAM_V1 = "Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo"
MEMO_PROGRAM_V2 = "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr"
MEMO_PROGRAMS = frozenset({MEMO_PROGRAM_V1, MEMO_PROGRAM_V2})

# Block times past 9999-12-31 cannot become a datetime; no real block has one.
_MAX_BLOCK_TIME = 253_402_300_799


@dataclass(frozen=True, slots=True)
class TokenBalanceChange:
    """The net change of one token account in one transaction, in raw base units."""

    account: str  # the token account address
    owner: str  # the wallet (or program) that owns the token account
    mint: str
    program: str | None  # token program; None when an old response lacks `programId`
    decimals: int
    delta: int  # post minus pre; a missing pre or post entry counts as 0


@dataclass(frozen=True, slots=True)
class ParsedTransaction:
    """The facts of one transaction that payment verification decides on."""

    signatures: tuple[str, ...]  # the first one is the transaction's signature
    fee_payer: str  # the first account key
    account_keys: tuple[str, ...]  # static, then loaded writable, then loaded readonly
    slot: int
    block_time: int | None  # unix seconds; None when the node does not know it
    err: object  # raw `meta.err`; None when the transaction succeeded
    memos: tuple[str, ...]  # top-level memos first, then memos made by CPI
    token_changes: tuple[TokenBalanceChange, ...]  # by account index, including zero deltas
    version: int | str | None = None  # 0, "legacy", or None when the response omits it

    @property
    def signature(self) -> str:
        """The transaction signature (its first signature)."""
        return self.signatures[0]


@dataclass(frozen=True, slots=True)
class _Balance:
    mint: str
    owner: str
    program: str | None
    decimals: int
    amount: int

    def identity(self) -> tuple[str, str, str | None, int]:
        return self.mint, self.owner, self.program, self.decimals


def unwrap_envelope(response: object) -> object:
    """The `result` of a JSON-RPC envelope, or `response` unchanged when it is not one.

    A `result` object always has `transaction`; an envelope has `jsonrpc`, `result` or `error`
    instead. The result may be None: the node does not know the transaction (yet). An envelope
    without `result` (an RPC error) raises `MalformedTransaction`.
    """
    if (
        isinstance(response, Mapping)
        and "transaction" not in response
        and ("jsonrpc" in response or "result" in response or "error" in response)
    ):
        if "result" not in response:
            error = response.get("error")
            raise MalformedTransaction(f"JSON-RPC envelope without result (error: {error!r:.200})")
        return response["result"]
    return response


def parse_transaction(response: object) -> ParsedTransaction:
    """Parse one `getTransaction` result (or its envelope) into a `ParsedTransaction`.

    Raises `MalformedTransaction` for any response not shaped like a transaction, including a
    null result; callers that must tell "not found" apart check for None first.
    """
    result = as_mapping(unwrap_envelope(response), "result")
    meta = as_mapping(field(result, "meta", "result"), "meta")
    message = decode_message(field(result, "transaction", "result"))
    keys = _full_account_keys(message, meta)
    if not keys:
        raise MalformedTransaction("transaction.message.accountKeys: empty")
    if not message.includes_loaded:
        _refuse_repeated_keys(message.account_keys, 0)
    block_time = result.get("blockTime")
    return ParsedTransaction(
        signatures=message.signatures,
        fee_payer=keys[0],
        account_keys=keys,
        slot=as_int(field(result, "slot", "result"), "slot"),
        block_time=None
        if block_time is None
        else as_int(block_time, "blockTime", high=_MAX_BLOCK_TIME),
        # A missing `err` is not proof of success, so it is required (null when it succeeded).
        err=field(meta, "err", "meta"),
        memos=_memos(message.instructions, meta, keys),
        token_changes=_token_changes(meta, keys),
        version=_version(result.get("version")),
    )


def _refuse_repeated_keys(keys: Sequence[str], start: int) -> None:
    """The runtime refuses a message that lists an account twice: an answer that does is not
    a transaction that landed."""
    seen: set[str] = set()
    for index, key in enumerate(keys, start):
        if key in seen:
            raise MalformedTransaction(f"account keys: {key} listed again at index {index}")
        seen.add(key)


def _full_account_keys(message: DecodedMessage, meta: Mapping[str, object]) -> tuple[str, ...]:
    """Static keys, then `meta.loadedAddresses.writable`, then `.readonly`.

    This is the order account indexes (instructions, token balances) count in.
    """
    if message.includes_loaded:
        return message.account_keys
    loaded_value = meta.get("loadedAddresses")
    writable: tuple[str, ...] = ()
    readonly: tuple[str, ...] = ()
    if loaded_value is not None:
        loaded = as_mapping(loaded_value, "meta.loadedAddresses")
        writable = _str_list(loaded.get("writable", []), "meta.loadedAddresses.writable")
        readonly = _str_list(loaded.get("readonly", []), "meta.loadedAddresses.readonly")
    # Resolving indexes against the wrong key list would attribute balances to the wrong
    # accounts, so a mismatch with what the message says it loads is malformed, not tolerated.
    counts = (len(writable), len(readonly))
    if message.lookup_counts is not None and message.lookup_counts != counts:
        raise MalformedTransaction(
            f"meta.loadedAddresses: {counts} (writable, readonly) keys but the message "
            f"loads {message.lookup_counts}"
        )
    return message.account_keys + writable + readonly


def _str_list(value: object, where: str) -> tuple[str, ...]:
    return tuple(as_str(item, f"{where}[{i}]") for i, item in enumerate(as_list(value, where)))


def _key_at(keys: Sequence[str], index: int, where: str) -> str:
    if not 0 <= index < len(keys):
        raise MalformedTransaction(f"{where}: account index {index} out of range ({len(keys)})")
    return keys[index]


def _version(value: object) -> int | str | None:
    if value is None:
        return None
    if value == "legacy":
        return "legacy"
    return as_int(value, "version", high=255)


# -- memos ---------------------------------------------------------------------------------------


def _memos(
    top_level: Sequence[RawInstruction], meta: Mapping[str, object], keys: Sequence[str]
) -> tuple[str, ...]:
    """Memo texts from top-level instructions, then from inner (CPI) instructions."""
    instructions = [
        (ix, f"transaction.message.instructions[{i}]") for i, ix in enumerate(top_level)
    ]
    inner_value = meta.get("innerInstructions")
    # Old responses and some nodes omit inner instructions: then only top-level memos count.
    if inner_value is not None:
        for i, group_value in enumerate(as_list(inner_value, "meta.innerInstructions")):
            where = f"meta.innerInstructions[{i}]"
            group = as_mapping(group_value, where)
            as_int(field(group, "index", where), f"{where}.index")
            inner = as_list(field(group, "instructions", where), f"{where}.instructions")
            instructions.extend(
                (read_instruction(ix, f"{where}.instructions[{j}]"), f"{where}.instructions[{j}]")
                for j, ix in enumerate(inner)
            )
    memos: list[str] = []
    for ix, where in instructions:
        text = _memo_text(ix, keys, where)
        if text is not None:
            memos.append(text)
    return tuple(memos)


def _memo_text(ix: RawInstruction, keys: Sequence[str], where: str) -> str | None:
    program = ix.program_id
    if ix.program_index is not None:
        program = _key_at(keys, ix.program_index, f"{where}.programIdIndex")
    if program not in MEMO_PROGRAMS:
        return None
    if isinstance(ix.parsed, str):  # jsonParsed: `parsed` is the memo text itself
        return ix.parsed
    if isinstance(ix.data, bytes):
        raw = ix.data
    elif isinstance(ix.data, str):
        raw = b58decode(ix.data, f"{where}.data")
    else:
        raise MalformedTransaction(f"{where}: memo instruction has neither text nor data")
    # The memo program rejects invalid UTF-8, so replacement only ever shows on forged input.
    return raw.decode("utf-8", errors="replace")


# -- token balances ------------------------------------------------------------------------------


def _token_changes(
    meta: Mapping[str, object], keys: Sequence[str]
) -> tuple[TokenBalanceChange, ...]:
    """Post minus pre per token account, in account index order.

    Balance lists are required: a response without them cannot show that nothing moved. When
    an account's pre and post entries disagree on mint, owner or program (closed and
    re-created, or its owner changed within the transaction) they are reported as two changes,
    the old one leaving and the new one arriving, so no amount is credited across identities.
    """
    pre = _balances(meta, "preTokenBalances", keys)
    post = _balances(meta, "postTokenBalances", keys)
    changes: list[TokenBalanceChange] = []
    indexes = sorted(pre.keys() | post.keys())
    # One token account under two indexes (say a static key repeated among the loaded ones)
    # would be counted twice: its pre balance at one index, its post balance at the other.
    _refuse_repeated_keys([keys[index] for index in indexes], 0)
    for index in indexes:
        account = keys[index]
        before, after = pre.get(index), post.get(index)
        if before is not None and after is not None and before.identity() == after.identity():
            changes.append(_change(account, after, after.amount - before.amount))
            continue
        if before is not None:
            changes.append(_change(account, before, -before.amount))
        if after is not None:
            changes.append(_change(account, after, after.amount))
    return tuple(changes)


def _change(account: str, balance: _Balance, delta: int) -> TokenBalanceChange:
    return TokenBalanceChange(
        account=account,
        owner=balance.owner,
        mint=balance.mint,
        program=balance.program,
        decimals=balance.decimals,
        delta=delta,
    )


def _balances(meta: Mapping[str, object], key: str, keys: Sequence[str]) -> dict[int, _Balance]:
    balances: dict[int, _Balance] = {}
    entries = as_list(field(meta, key, "meta"), f"meta.{key}")
    for i, entry_value in enumerate(entries):
        where = f"meta.{key}[{i}]"
        entry = as_mapping(entry_value, where)
        index = int_field(entry, "accountIndex", where)
        if not 0 <= index < len(keys):
            _key_at(keys, index, f"{where}.accountIndex")  # raises
        if index in balances:
            raise MalformedTransaction(f"{where}: account index {index} listed twice")
        ui_amount = mapping_field(entry, "uiTokenAmount", where)
        program = entry.get("programId")
        ui_where = f"{where}.uiTokenAmount"
        balances[index] = _Balance(
            mint=str_field(entry, "mint", where),
            owner=str_field(entry, "owner", where),
            program=None if program is None else as_str(program, f"{where}.programId"),
            decimals=int_field(ui_amount, "decimals", ui_where, high=255),
            amount=u64_field(ui_amount, "amount", ui_where),
        )
    return balances
