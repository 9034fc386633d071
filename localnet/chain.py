"""`LocalChain`: one LiteSVM, plus what a node keeps around it — a clock, a store of landed
transactions with the metadata `getTransaction` needs, an address index for
`getSignaturesForAddress`, and finality that tests can hold back.

LiteSVM executes with the real SPL programs but keeps no blocks, balances history or
commitment levels. So the chain:

- checks signatures and blockhashes itself (LiteSVM's own checks are off), which lets a
  simulation skip signature checks or replace the blockhash, as `simulateTransaction` allows;
- lands every transaction in the clock's current slot and snapshots the accounts it names
  before and after, for pre/post balances and token balances;
- stores only transactions that would land on a real cluster (`localnet.landing` says which):
  those that ran (successfully or with an execution error, fee charged). Refused ones (stale
  blockhash, already processed, fee payer missing) are reported to the caller and forgotten;
- calls a landed transaction `finalized` unless finality is held back and it landed after the
  hold began; held-back ones are `confirmed`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Final, Literal

from solders.account import Account
from solders.clock import Clock
from solders.epoch_schedule import EpochSchedule
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata

from localnet.clock import ChainClock
from localnet.landing import (
    TransactionFailed,
    checked_message,
    lands,
    refusal_of,
    unpack,
    with_blockhash,
)
from localnet.layouts import parse_mint
from localnet.records import Execution, TxRecord
from localnet.snapshots import (
    execution_from,
    rejected_execution,
    resolve_lookups,
    take_snapshot,
)

Commitment = Literal["processed", "confirmed", "finalized"]
COMMITMENTS: Final = ("processed", "confirmed", "finalized")
FAUCET_LAMPORTS: Final = 500_000 * 10**9


class LocalChain:
    def __init__(
        self,
        *,
        svm: LiteSVM | None = None,
        start_slot: int | None = None,
        slot_ms: int = 400,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.svm = (svm or LiteSVM()).with_sigverify(False).with_blockhash_check(False)
        # No warm-up, so epoch = slot // slots_per_epoch, the arithmetic `ChainClock` uses.
        self.svm.set_epoch_schedule(EpochSchedule.custom(432_000, 432_000, False))
        first = start_slot if start_slot is not None else max(self.svm.get_clock().slot, 1)
        self.clock = ChainClock(start_slot=first, slot_ms=slot_ms, wall=wall)
        self.faucet = Keypair()
        self.genesis_hash = Hash(os.urandom(32))
        self.svm.airdrop(self.faucet.pubkey(), FAUCET_LAMPORTS)
        self._records: dict[Signature, TxRecord] = {}
        self._seen: set[Signature] = set()  # every signature executed, recorded or not
        self._by_address: dict[Pubkey, list[TxRecord]] = {}
        self._finality_watermark: int | None = None
        # Every address a transaction named or a cheatcode set: what a saved chain keeps.
        self._touched: set[Pubkey] = {self.faucet.pubkey()}
        self.version = 0  # moves on with every change to accounts or transactions
        self._sync_sysvar_clock(self.clock.slot)

    @classmethod
    def restored(
        cls,
        *,
        clock: ChainClock,
        faucet: Keypair,
        genesis_hash: Hash,
        accounts: dict[Pubkey, Account],
        records: Sequence[TxRecord],
        seen: set[Signature],
    ) -> LocalChain:
        """A chain as `localnet.persist` saved it: same accounts, history, clock and faucet."""
        chain = cls()
        chain.clock = clock
        chain.faucet = faucet
        chain.genesis_hash = genesis_hash
        for address, account in accounts.items():
            chain.svm.set_account(address, account)
        chain._touched = {faucet.pubkey(), *accounts}
        chain._seen = set(seen)
        for record in records:
            chain._remember(record)
        chain._sync_sysvar_clock(chain.clock.slot)
        return chain

    @property
    def touched_addresses(self) -> frozenset[Pubkey]:
        return frozenset(self._touched)

    def records(self) -> list[TxRecord]:
        return list(self._records.values())

    def seen_signatures(self) -> set[Signature]:
        return set(self._seen)

    # --- clock and commitment ----------------------------------------------------------------

    @property
    def slot(self) -> int:
        return self.clock.slot

    def slot_at(self, commitment: Commitment) -> int:
        return self.finalized_slot if commitment == "finalized" else self.clock.slot

    @property
    def finalized_slot(self) -> int:
        held = self._finality_watermark
        return self.clock.slot if held is None else held

    @property
    def finality_held(self) -> bool:
        return self._finality_watermark is not None

    def hold_finality(self) -> int:
        """Stop finalizing: transactions landing from now on stay `confirmed` until
        `release_finality`. Returns the last finalized slot."""
        if self._finality_watermark is None:
            self._finality_watermark = self.clock.slot
            # Later transactions must land in a later slot than the watermark.
            self.clock.next_slot()
        return self._finality_watermark

    def release_finality(self) -> int:
        """Finalize everything landed so far, and what lands from now on."""
        self._finality_watermark = None
        return self.clock.slot

    def confirmation_status(self, record: TxRecord) -> Commitment:
        return "finalized" if record.slot <= self.finalized_slot else "confirmed"

    def is_visible(self, record: TxRecord, commitment: Commitment) -> bool:
        return commitment != "finalized" or record.slot <= self.finalized_slot

    def _sync_sysvar_clock(self, slot: int) -> None:
        # SlotHashes lets the lookup table program accept a recent slot; the Clock sysvar
        # gives programs the chain's time.
        self.svm.set_slot_hashes(self.clock.recent_slot_hashes())
        epoch = self.clock.epoch(slot)
        self.svm.set_clock(
            Clock(
                slot=slot,
                epoch_start_timestamp=self.clock.block_time(epoch * self.clock.slots_per_epoch),
                epoch=epoch,
                leader_schedule_epoch=epoch + 1,
                unix_timestamp=self.clock.block_time(slot),
            )
        )

    def latest_blockhash(self) -> tuple[Hash, int]:
        """The current blockhash and the last block height at which it is valid."""
        slot = self.clock.slot
        return self.clock.blockhash(slot), self.clock.last_valid_block_height(slot)

    # --- accounts ----------------------------------------------------------------------------

    def get_account(self, address: Pubkey) -> Account | None:
        return self.svm.get_account(address)

    def set_account(self, address: Pubkey, account: Account) -> None:
        self.svm.set_account(address, account)
        self._touched.add(address)
        self.version += 1

    def balance(self, address: Pubkey) -> int:
        account = self.svm.get_account(address)
        return 0 if account is None else account.lamports

    def mint_decimals(self, mint: Pubkey) -> int | None:
        """Decimals of the mint at `mint`, or None if there is no mint there."""
        account = self.svm.get_account(mint)
        state = None if account is None else parse_mint(account.owner, bytes(account.data))
        return None if state is None else state.decimals

    def rent_exempt_minimum(self, data_len: int) -> int:
        return self.svm.minimum_balance_for_rent_exemption(data_len)

    # --- transactions ------------------------------------------------------------------------

    @property
    def transaction_count(self) -> int:
        return len(self._records)

    def transaction(self, signature: Signature) -> TxRecord | None:
        return self._records.get(signature)

    def signatures_for_address(
        self,
        address: Pubkey,
        *,
        commitment: Commitment = "finalized",
        limit: int = 1000,
        before: Signature | None = None,
        until: Signature | None = None,
    ) -> list[TxRecord]:
        """Landed transactions naming `address`, newest first, as `getSignaturesForAddress`."""
        newest_first = [
            r for r in reversed(self._by_address.get(address, [])) if self.is_visible(r, commitment)
        ]
        if before is not None:
            positions = [i for i, r in enumerate(newest_first) if r.signature == before]
            newest_first = newest_first[positions[0] + 1 :] if positions else []
        found: list[TxRecord] = []
        for record in newest_first:
            if record.signature == until or len(found) >= limit:
                break
            found.append(record)
        return found

    def process(
        self, tx: VersionedTransaction, *, verify_signatures: bool = True, record: bool = True
    ) -> TxRecord | Execution:
        """Run `tx` in the current slot. Returns its `TxRecord` if it landed (check
        `execution.err`), else the refused `Execution`. Raises `TransactionRejected` for a
        transaction that is malformed or wrongly signed."""
        message = checked_message(tx, verify_signatures)
        loaded = resolve_lookups(message, self.svm.get_account)
        refusal = refusal_of(tx, message, seen=self._seen, clock=self.clock)
        if refusal is not None:
            return rejected_execution(refusal, loaded)
        slot = self.clock.slot
        self._sync_sysvar_clock(slot)
        keys = [*message.account_keys, *loaded.writable, *loaded.readonly]
        pre = take_snapshot(keys, self.svm.get_account)
        result = self.svm.send_transaction(tx)
        meta, err = unpack(result)
        if err is not None and not lands(err):
            return rejected_execution(err, loaded)
        self._seen.add(tx.signatures[0])
        self._touched.update(keys)
        self.version += 1
        post = take_snapshot(keys, self.svm.get_account)
        execution = execution_from(meta, err, loaded, pre, post)
        landed = TxRecord(
            transaction=tx,
            slot=slot,
            block_time=self.clock.block_time(slot),
            sequence=len(self._records),
            execution=execution,
        )
        if record:
            self._remember(landed)
        return landed

    def _remember(self, landed: TxRecord) -> None:
        self._records[landed.signature] = landed
        for key in dict.fromkeys(landed.account_keys):
            self._by_address.setdefault(key, []).append(landed)

    def simulate(
        self,
        tx: VersionedTransaction,
        *,
        verify_signatures: bool = False,
        replace_blockhash: bool = False,
    ) -> tuple[Execution, dict[Pubkey, Account]]:
        """Run `tx` without committing it: its `Execution`, and the accounts as they would be
        after it (only those it writes)."""
        if replace_blockhash:
            tx = with_blockhash(tx, self.latest_blockhash()[0])
        message = checked_message(tx, verify_signatures)
        loaded = resolve_lookups(message, self.svm.get_account)
        refusal = refusal_of(tx, message, seen=self._seen, clock=self.clock)
        if refusal is not None:
            return rejected_execution(refusal, loaded), {}
        self._sync_sysvar_clock(self.clock.slot)
        keys = [*message.account_keys, *loaded.writable, *loaded.readonly]
        pre = take_snapshot(keys, self.svm.get_account)
        result = self.svm.simulate_transaction(tx)
        if isinstance(result, FailedTransactionMetadata):
            return execution_from(result.meta(), result.err(), loaded, pre, pre), {}
        after = dict(result.post_accounts())

        def read_after(key: Pubkey) -> Account | None:
            return after[key] if key in after else self.svm.get_account(key)

        post = take_snapshot(keys, read_after)
        return execution_from(result.meta(), None, loaded, pre, post), after

    def execute(
        self,
        instructions: Sequence[Instruction],
        payer: Keypair,
        signers: Sequence[Keypair] = (),
        *,
        record: bool = True,
    ) -> TxRecord:
        """Sign `instructions` (fee paid by `payer`) with the current blockhash and land them;
        raises `TransactionFailed` unless they succeed. A repeat of an identical transaction
        waits for the next slot, whose new blockhash makes it a different transaction."""
        unique = list(dict.fromkeys([payer, *signers]))
        while True:
            message = MessageV0.try_compile(
                payer.pubkey(), list(instructions), [], self.latest_blockhash()[0]
            )
            tx = VersionedTransaction(message, unique)
            if tx.signatures[0] not in self._seen:
                break
            self.clock.next_slot()
        outcome = self.process(tx, record=record)
        execution = outcome.execution if isinstance(outcome, TxRecord) else outcome
        if execution.err is not None or not isinstance(outcome, TxRecord):
            raise TransactionFailed(execution)
        return outcome

    def airdrop(self, address: Pubkey, lamports: int) -> TxRecord:
        """Send `lamports` from the chain's faucet, as `requestAirdrop` does."""
        faucet = self.faucet.pubkey()
        ix = transfer(TransferParams(from_pubkey=faucet, to_pubkey=address, lamports=lamports))
        return self.execute([ix], self.faucet)
