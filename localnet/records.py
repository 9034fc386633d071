"""What the local chain remembers about a processed (or simulated) transaction."""

from __future__ import annotations

from dataclasses import dataclass

from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction
from solders.transaction_status import TransactionErrorType


@dataclass(frozen=True, slots=True)
class TokenBalance:
    """One entry of `preTokenBalances` / `postTokenBalances`."""

    account_index: int
    mint: Pubkey
    owner: Pubkey
    program_id: Pubkey
    amount: int
    decimals: int


@dataclass(frozen=True, slots=True)
class InnerInstruction:
    """An instruction invoked by a program (CPI), indexes into the full account key list."""

    program_id_index: int
    accounts: tuple[int, ...]
    data: bytes
    stack_height: int | None


@dataclass(frozen=True, slots=True)
class ReturnData:
    program_id: Pubkey
    data: bytes


@dataclass(frozen=True, slots=True)
class LoadedAddresses:
    """Keys a version 0 message loads from address lookup tables, in resolution order."""

    writable: tuple[Pubkey, ...] = ()
    readonly: tuple[Pubkey, ...] = ()


@dataclass(frozen=True, slots=True)
class Execution:
    """The outcome of running a transaction, landed or only simulated."""

    err: TransactionErrorType | None
    fee: int
    logs: tuple[str, ...]
    # One tuple per top-level instruction (empty when it invoked nothing).
    inner_instructions: tuple[tuple[InnerInstruction, ...], ...]
    compute_units: int
    return_data: ReturnData | None
    loaded: LoadedAddresses
    pre_balances: tuple[int, ...]
    post_balances: tuple[int, ...]
    pre_token_balances: tuple[TokenBalance, ...]
    post_token_balances: tuple[TokenBalance, ...]


@dataclass(frozen=True, slots=True)
class TxRecord:
    """A transaction that landed in a slot (successfully or with an error)."""

    transaction: VersionedTransaction
    slot: int
    block_time: int
    sequence: int  # order of landing, to sort transactions within a slot
    execution: Execution

    @property
    def signature(self) -> Signature:
        return self.transaction.signatures[0]

    @property
    def message(self) -> Message | MessageV0:
        message = self.transaction.message
        assert isinstance(message, Message | MessageV0)  # the chain accepts nothing else
        return message

    @property
    def is_legacy(self) -> bool:
        return isinstance(self.transaction.message, Message)

    @property
    def account_keys(self) -> list[Pubkey]:
        """Static keys, then loaded writable, then loaded read-only: what indexes point into."""
        loaded = self.execution.loaded
        return [*self.message.account_keys, *loaded.writable, *loaded.readonly]
