"""Reading the accounts around a transaction: lookup tables to resolve, lamports and token
balances before and after, and LiteSVM's metadata turned into an `Execution`.

LiteSVM reports logs, inner instructions, compute units, return data and the fee, but not the
balances a node's `meta` carries; those come from snapshots of every account the transaction
names, taken before and after it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from solders.account import Account
from solders.address_lookup_table_account import AddressLookupTable
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.transaction_metadata import TransactionMetadata
from solders.transaction_status import TransactionErrorType

from localnet.layouts import parse_mint, parse_token_account
from localnet.programs import ADDRESS_LOOKUP_TABLE_PROGRAM_ID
from localnet.records import (
    Execution,
    InnerInstruction,
    LoadedAddresses,
    ReturnData,
    TokenBalance,
)

AccountReader = Callable[[Pubkey], Account | None]
_LOOKUP_TABLE_META_SIZE = 56


def lookup_table_addresses(account: Account | None) -> list[Pubkey] | None:
    """The addresses stored in an address lookup table account, or None if it is not one."""
    if account is None or account.owner != ADDRESS_LOOKUP_TABLE_PROGRAM_ID:
        return None
    if len(account.data) < _LOOKUP_TABLE_META_SIZE:
        return None
    try:
        return list(AddressLookupTable.deserialize(bytes(account.data)).addresses)
    except ValueError:
        return None


def resolve_lookups(message: Message | MessageV0, read: AccountReader) -> LoadedAddresses:
    """The keys a v0 message loads: every table's writable entries, then every table's
    read-only entries. Unresolvable lookups give nothing (the runtime rejects the transaction)."""
    if isinstance(message, Message) or not message.address_table_lookups:
        return LoadedAddresses()
    writable: list[Pubkey] = []
    readonly: list[Pubkey] = []
    for lookup in message.address_table_lookups:
        addresses = lookup_table_addresses(read(lookup.account_key))
        indexes = [*lookup.writable_indexes, *lookup.readonly_indexes]
        if addresses is None or any(i >= len(addresses) for i in indexes):
            return LoadedAddresses()
        writable.extend(addresses[i] for i in lookup.writable_indexes)
        readonly.extend(addresses[i] for i in lookup.readonly_indexes)
    return LoadedAddresses(tuple(writable), tuple(readonly))


@dataclass(frozen=True, slots=True)
class Snapshot:
    lamports: tuple[int, ...]
    token_balances: tuple[TokenBalance, ...]


def take_snapshot(keys: Sequence[Pubkey], read: AccountReader) -> Snapshot:
    """Lamports of every key, and the balance of each key that is a token account whose mint
    exists (a node leaves out token accounts it cannot price)."""
    lamports: list[int] = []
    balances: list[TokenBalance] = []
    decimals_by_mint: dict[Pubkey, int | None] = {}
    for index, key in enumerate(keys):
        account = read(key)
        lamports.append(0 if account is None else account.lamports)
        if account is None:
            continue
        state = parse_token_account(account.owner, bytes(account.data))
        if state is None:
            continue
        if state.mint not in decimals_by_mint:
            mint_account = read(state.mint)
            mint = (
                None
                if mint_account is None
                else parse_mint(mint_account.owner, bytes(mint_account.data))
            )
            decimals_by_mint[state.mint] = None if mint is None else mint.decimals
        decimals = decimals_by_mint[state.mint]
        if decimals is None:
            continue
        balances.append(
            TokenBalance(
                account_index=index,
                mint=state.mint,
                owner=state.owner,
                program_id=account.owner,
                amount=state.amount,
                decimals=decimals,
            )
        )
    return Snapshot(tuple(lamports), tuple(balances))


def execution_from(
    meta: TransactionMetadata,
    err: TransactionErrorType | None,
    loaded: LoadedAddresses,
    pre: Snapshot,
    post: Snapshot,
) -> Execution:
    """An `Execution` from LiteSVM's metadata and the two snapshots."""
    inner = tuple(
        tuple(
            InnerInstruction(
                program_id_index=item.instruction().program_id_index,
                accounts=tuple(item.instruction().accounts),
                data=bytes(item.instruction().data),
                stack_height=item.stack_height(),
            )
            for item in group
        )
        for group in meta.inner_instructions()
    )
    raw_return = meta.return_data()
    # A node reports return data only when a program set some.
    return_data = (
        ReturnData(raw_return.program_id, bytes(raw_return.data)) if raw_return.data else None
    )
    return Execution(
        err=err,
        fee=meta.fee(),
        logs=tuple(meta.logs()),
        inner_instructions=inner,
        compute_units=meta.compute_units_consumed(),
        return_data=return_data,
        loaded=loaded,
        pre_balances=pre.lamports,
        post_balances=post.lamports,
        pre_token_balances=pre.token_balances,
        post_token_balances=post.token_balances,
    )


def rejected_execution(err: TransactionErrorType, loaded: LoadedAddresses) -> Execution:
    """The outcome of a transaction the runtime refused before running it."""
    return Execution(
        err=err,
        fee=0,
        logs=(),
        inner_instructions=(),
        compute_units=0,
        return_data=None,
        loaded=loaded,
        pre_balances=(),
        post_balances=(),
        pre_token_balances=(),
        post_token_balances=(),
    )
